import { join } from 'node:path';
import type { Logger } from '../util/log.ts';
import { defaultDataDir } from '../util/paths.ts';
import { UserError } from '../util/errors.ts';
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
  if (resolved.format !== 'tfjs-layers') throw new UserError('listing .onnx models is not supported yet; use a TF.js layers model');
  const { graph } = loadKerasGraph(resolved.location);
  return {
    model: resolved.id,
    inputShape: graph.inputShape,
    defaultLayer: resolved.entry?.defaultLayer ?? defaultCutLayer(graph),
    layers: graph.layers.map((l) => ({ name: l.name, type: l.className, shape: l.shape, inputs: l.inbound })),
  };
}
