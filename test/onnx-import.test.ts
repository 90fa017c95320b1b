import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseKerasGraph } from '../src/backbone/keras-graph.ts';
import { convertKerasGraph } from '../src/backbone/convert.ts';
import { encodeModel } from '../src/onnx/write.ts';
import { readWeights } from '../src/backbone/tfjs-model.ts';
import { describeOnnx } from '../src/onnx/read.ts';
import { findBackbone } from '../src/backbone/registry.ts';
import { extractFeatures, type ExtractOptions } from '../src/pipeline/extract.ts';
import { describeLayers } from '../src/backbone/layers.ts';
import { silentLogger } from '../src/util/log.ts';
import { UserError } from '../src/util/errors.ts';
import { SHARED_MODEL, makeSubset, removeDir, tempDir } from './helpers.ts';
import { DEFAULT_SPLIT } from '../src/dataset/split.ts';

const PRE = findBackbone('mobilenet_v1_0.75_224')!.preprocessing;

/** A "foreign" export: the whole MobileNet classifier as ONNX with a float NCHW input, as torchvision-style exports have. */
async function writeForeignOnnx(path: string): Promise<void> {
  const graph = parseKerasGraph(JSON.parse(readFileSync(join(SHARED_MODEL(), 'model.json'), 'utf8')));
  const conv = convertKerasGraph(graph, await readWeights(SHARED_MODEL()), {
    layer: 'reshape_2',
    pooling: 'none',
    preprocessing: PRE,
    input: 'float-nchw',
  });
  writeFileSync(path, encodeModel(conv.model));
}

test('.onnx models: listed by layers, wrapped with in-graph preprocessing, features equal the TF.js-layers path', async () => {
  const dir = tempDir('onnx');
  try {
    const onnx = join(dir, 'mobilenet.onnx');
    await writeForeignOnnx(onnx);
    const info = describeOnnx(new Uint8Array(readFileSync(onnx)));
    assert.deepEqual(
      info.inputs.map((i) => i.shape),
      [['N', 3, 224, 224]],
    );
    assert.ok(info.nodes.some((n) => n.opType === 'GlobalAveragePool'));
    const listing = await describeLayers(onnx, silentLogger);
    assert.ok(listing.layers.length > 20 && listing.defaultLayer.length > 0);

    const data = makeSubset(join(dir, 'data'), { train: 3, test: 1 });
    const base: ExtractOptions = {
      data,
      out: join(dir, 'ref'),
      model: 'mobilenet_v1_0.75_224',
      // The exported .onnx takes 224 px: the TF.js path at the same size (not its 288-px feature default).
      preprocessing: { size: [224, 224] },
      split: DEFAULT_SPLIT,
      seed: 1,
      batch: 4,
      workers: 2,
      threads: 2,
      maxPixels: 1e8,
      quiet: true,
      log: silentLogger,
    };
    await extractFeatures(base);
    // Same preprocessing as the registry entry, given explicitly as a user would for a foreign model.
    const { manifest } = await extractFeatures({
      ...base,
      out: join(dir, 'onnx-cache'),
      model: onnx,
      preprocessing: {
        size: [224, 224],
        mean: [0.5, 0.5, 0.5],
        std: [0.5, 0.5, 0.5],
        resize: 'squash',
        kernel: 'linear',
      },
    });
    assert.equal(manifest.backbone.modelFormat, 'onnx');
    assert.equal(manifest.backbone.featureDim, 768);
    const a = new Float32Array(readFileSync(join(dir, 'ref', 'train_features.npy')).buffer.slice(128));
    const b = new Float32Array(readFileSync(join(dir, 'onnx-cache', 'train_features.npy')).buffer.slice(128));
    assert.equal(a.length, b.length);
    let d = 0;
    for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
    assert.ok(d < 1e-4, `max |delta| ${d}`);

    await assert.rejects(
      extractFeatures({ ...base, out: join(dir, 'bad'), model: onnx, layer: 'no_such_tensor' }),
      (e: unknown) => e instanceof UserError && /no tensor named 'no_such_tensor'/.test(e.message),
    );
    writeFileSync(join(dir, 'junk.onnx'), 'not a protobuf at all');
    await assert.rejects(
      extractFeatures({ ...base, out: join(dir, 'bad2'), model: join(dir, 'junk.onnx') }),
      (e: unknown) => e instanceof UserError,
    );
  } finally {
    removeDir(dir);
  }
});
