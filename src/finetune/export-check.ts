import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { convertKerasGraph, type WeightMap } from '../backbone/convert.ts';
import { findLayer, parseKerasGraph, type KerasGraph } from '../backbone/keras-graph.ts';
import { encodeModel } from '../onnx/write.ts';
import { OrtFeatureRunner } from '../backbone/ort-runner.ts';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { readWeights } from '../backbone/tfjs-model.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { decodeInOrder } from './data.ts';
import { exportFinetunedModel } from './export.ts';
import { FrozenBase } from './frozen.ts';
import type { ParamTensor, TopPlan } from './plan.ts';
import type { TopEngine } from './top-engine.ts';
import type { FinetuneOptions } from './options.ts';
import type { SplitData } from './prepare.ts';

/** Fine-tuning's export: the trained model as a TF.js layers model, converted back and checked against the trainer. */

interface ExportContext {
  modelJson: any;
  graph: KerasGraph;
  weights: WeightMap;
  plan: TopPlan;
  params: ParamTensor[];
  dropout: number;
  preprocessing: Preprocessing;
  base: FrozenBase;
  top: TopEngine;
  /** Its first images check the export. */
  check: SplitData;
  opts: FinetuneOptions;
}

/**
 * Write OUT/model (TF.js layers) and OUT/model.onnx (our converter on that folder, uint8 image in,
 * class probabilities out), then check on a few val images that the ONNX model predicts what the
 * trained split network predicts.
 */
export async function exportAndCheck(
  outDir: string,
  e: ExportContext,
): Promise<{ outputLayer: string; checkImages: number; maxAbsDiff: number; ortSeconds: number }> {
  const modelDir = join(outDir, 'model');
  const outputLayer = exportFinetunedModel(modelDir, e);
  const exportedGraph = parseKerasGraph(JSON.parse(readFileSync(join(modelDir, 'model.json'), 'utf8')));
  findLayer(exportedGraph, outputLayer);
  const conv = convertKerasGraph(exportedGraph, await readWeights(modelDir), {
    layer: outputLayer,
    pooling: 'none',
    preprocessing: e.preprocessing,
    metadata: { 'convcache.finetuned': 'true', 'convcache.outputLayer': outputLayer },
  });
  const onnx = encodeModel(conv.model);
  writeFileAtomic(join(outDir, 'model.onnx'), onnx);
  // Check: a few images (val, or train when refitting) through (a) the exported ONNX model, (b) ORT bottom + the trained top + head.
  const imgs = e.check.images.slice(0, 8);
  const [h, w] = e.preprocessing.size;
  const per = h * w * 3;
  const pix = new Uint8Array(imgs.length * per);
  let n = 0;
  for await (const d of decodeInOrder(imgs, e.preprocessing, { workers: e.opts.workers, maxPixels: e.opts.maxPixels }))
    if ('pixels' in d) pix.set(d.pixels, n++ * per);
  if (n === 0) return { outputLayer, checkImages: 0, maxAbsDiff: 0, ortSeconds: 0 };
  const t = performance.now();
  const runner = await OrtFeatureRunner.create(onnx, [h, w, 3], conv.featureDim, { threads: e.opts.threads });
  const pOnnx = await runner.run(pix, n);
  await runner.release();
  const ortSeconds = (performance.now() - t) / 1000;
  const b = await e.base.boundary(pix, n);
  const pTop = await e.top.predict(b, n, !e.base.hasTop);
  let maxAbsDiff = 0;
  for (let i = 0; i < pOnnx.length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(pOnnx[i]! - pTop[i]!));
  if (maxAbsDiff > 1e-3)
    e.opts.log.warn(
      `exported model differs from the trained network by ${maxAbsDiff.toExponential(2)} in probability on ${n} check images`,
    );
  return { outputLayer, checkImages: n, maxAbsDiff: Number(maxAbsDiff.toExponential(3)), ortSeconds };
}
