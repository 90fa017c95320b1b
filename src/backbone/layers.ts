import { join } from 'node:path';
import type { Logger } from '../util/log.ts';
import { defaultDataDir } from '../util/paths.ts';
import { readFileSync } from 'node:fs';
import { describeOnnx } from '../onnx/read.ts';
import { defaultCutLayer, loadKerasGraph } from './backbone.ts';
import { resolveModel } from './resolve.ts';

export interface LayerListing {
  model: string;
  inputShape: number[];
  defaultLayer: string;
  layers: { name: string; type: string; shape: number[]; inputs: string[] }[];
}

/** The layer list with statically inferred output shapes (what `npm run layers` prints). */
export async function describeLayers(model: string, log: Logger): Promise<LayerListing> {
  const resolved = await resolveModel(model, { cacheDir: join(defaultDataDir(), 'models'), log });
  if (resolved.format === 'onnx') {
    const info = describeOnnx(new Uint8Array(readFileSync(resolved.location)));
    const gap = info.nodes.find((n) => ['GlobalAveragePool', 'GlobalMaxPool'].includes(n.opType));
    return {
      model: resolved.id,
      inputShape: info.inputs[0]?.shape.map((d) => (typeof d === 'number' ? d : -1)) ?? [],
      defaultLayer: gap?.inputs[0] ?? '',
      // For .onnx models --layer takes a tensor name: each node's first output.
      layers: info.nodes.map((n) => ({ name: n.outputs[0] ?? n.name, type: n.opType, shape: [], inputs: n.inputs })),
    };
  }
  const { graph } = loadKerasGraph(resolved.location);
  return {
    model: resolved.id,
    inputShape: graph.inputShape,
    defaultLayer: resolved.entry?.defaultLayer ?? defaultCutLayer(graph),
    layers: graph.layers.map((l) => ({ name: l.name, type: l.className, shape: l.shape, inputs: l.inbound })),
  };
}
