import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import type { Logger } from '../util/log.ts';
import { defaultDataDir } from '../util/paths.ts';
import { convertKerasGraph, type Pooling } from './convert.ts';
import { parseKerasGraph, findLayer, type KerasGraph } from './keras-graph.ts';
import { encodeModel } from './onnx-proto.ts';
import type { Preprocessing } from './preprocess.ts';
import { resolveModel, type ResolvedModel } from './resolve.ts';
import { readWeights } from './tfjs-model.ts';

/** Bumped when the converter's output for the same inputs changes, so stale .onnx files are not reused. */
export const CONVERTER_VERSION = 1;

/** Everything that determines the features: recorded in the manifest so predict reuses it exactly. */
export interface BackboneConfig {
  modelId: string;
  modelFormat: 'tfjs-layers' | 'onnx';
  modelSource: string;
  weightsHash: string;
  layer: string;
  pooling: Pooling;
  preprocessing: Preprocessing;
  featureDim: number;
  /** Shape of one image's feature map at the cut, channels-last [H, W, C] (or [D] if already flat). */
  featureMapShape: number[];
}

export interface PreparedBackbone {
  config: BackboneConfig;
  onnxPath: string;
  resolved: ResolvedModel;
}

export interface PrepareOptions {
  model: string;
  layer?: string;
  pooling?: Pooling;
  /** Overrides for models without a registry entry (or to experiment). */
  preprocessing?: Partial<Preprocessing>;
  modelCacheDir?: string;
  log: Logger;
}

export const DEFAULT_PREPROCESSING: Preprocessing = {
  size: [224, 224], resize: 'squash', kernel: 'linear', channelOrder: 'rgb', mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5],
};

export function loadKerasGraph(dir: string): { graph: KerasGraph; modelJson: any } {
  const modelJson = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
  return { graph: parseKerasGraph(modelJson), modelJson };
}

/** Last activation before the classifier: the layer feeding the first global pooling / flatten. */
export function defaultCutLayer(graph: KerasGraph): string {
  const pool = graph.layers.find((l) => ['GlobalAveragePooling2D', 'GlobalMaxPooling2D', 'Flatten'].includes(l.className));
  if (pool) return pool.inbound[0]!;
  return graph.outputNames[0] ?? graph.layers[graph.layers.length - 1]!.name;
}

/**
 * Resolve the model, convert it (TF.js layers → ONNX, cut at the layer, pooling appended) and
 * cache the .onnx under data/models/onnx/, keyed by everything that affects the graph.
 */
export async function prepareBackbone(opts: PrepareOptions): Promise<PreparedBackbone> {
  const modelCacheDir = opts.modelCacheDir ?? join(defaultDataDir(), 'models');
  const resolved = await resolveModel(opts.model, { cacheDir: modelCacheDir, log: opts.log });
  if (resolved.format === 'onnx') {
    throw new UserError(`.onnx models are listed by 'npm run layers' but cannot yet be used for extraction; use a TF.js layers model (model.json)`);
  }
  const { graph } = loadKerasGraph(resolved.location);
  const layer = opts.layer ?? resolved.entry?.defaultLayer ?? defaultCutLayer(graph);
  const cut = findLayer(graph, layer);
  const pooling: Pooling = cut.shape.length === 3 ? (opts.pooling ?? resolved.entry?.defaultPooling ?? 'avg') : 'none';
  const base = resolved.entry?.preprocessing ?? { ...DEFAULT_PREPROCESSING, size: [graph.inputShape[0]!, graph.inputShape[1]!] as [number, number] };
  const preprocessing: Preprocessing = { ...base, ...opts.preprocessing };
  const key = createHash('sha256').update(JSON.stringify({ v: CONVERTER_VERSION, w: resolved.weightsHash, layer, pooling, preprocessing })).digest('hex').slice(0, 12);
  const onnxPath = join(modelCacheDir, 'onnx', `${resolved.id}-${layer}-${pooling}-${key}.onnx`);
  const sidecar = `${onnxPath}.json`;
  let featureDim: number;
  if (existsSync(onnxPath) && existsSync(sidecar)) {
    featureDim = JSON.parse(readFileSync(sidecar, 'utf8')).featureDim;
  } else {
    const weights = await readWeights(resolved.location);
    const result = convertKerasGraph(graph, weights, {
      layer, pooling, preprocessing,
      metadata: { 'convcache.model': resolved.id, 'convcache.weightsHash': resolved.weightsHash, 'convcache.layer': layer, 'convcache.pooling': pooling },
    });
    featureDim = result.featureDim;
    writeFileAtomic(onnxPath, encodeModel(result.model));
    writeFileAtomic(sidecar, JSON.stringify({ featureDim }) + '\n'); // written last: marks a complete pair
  }
  return {
    resolved,
    onnxPath,
    config: {
      modelId: resolved.id, modelFormat: resolved.format, modelSource: resolved.source, weightsHash: resolved.weightsHash,
      layer, pooling, preprocessing, featureDim, featureMapShape: cut.shape,
    },
  };
}
