import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import type { Logger } from '../util/log.ts';
import { modelCacheDir as defaultModelCacheDir } from '../util/paths.ts';
import { convertKerasGraph, cutLayers, type Pooling } from './convert.ts';
import { assertSpatialSizeFree, parseKerasGraph, findLayer, withInputSize, type KerasGraph } from './keras-graph.ts';
import { encodeModel } from '../onnx/write.ts';
import type { Preprocessing } from './preprocess.ts';
import { resolveModel, type ResolvedModel, type ResolveOptions } from './resolve.ts';
import { readWeights } from './tfjs-model.ts';
import { describeOnnx } from '../onnx/read.ts';
import { importOnnx } from './onnx-import.ts';
import { resolveOnnxSetup } from './onnx-config.ts';
import { describeTensor, onnxTensorShapes } from './onnx-shapes.ts';

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
  /** Input layout of a foreign .onnx model (absent for converted TF.js models), so predict feeds it the same way. */
  layout?: 'nchw' | 'nhwc';
  /** What decoded the pixels (images/decode.ts decoderId); absent in caches made before the fast path = sharp. */
  decoder?: string;
  /** Numeric precision of the conv base (backbone/quantize.ts); absent = fp32. */
  precision?: 'fp32' | 'int8';
  /** For int8: the quantizer's version (QUANTIZE_VERSION), so a changed int8 graph gets a new cache; absent = 1. */
  quantizer?: number;
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
  /** Input layout a foreign .onnx model expects (torchvision/timm: nchw). */
  onnxLayout?: 'nchw' | 'nhwc';
  /**
   * Feature extraction: a known model's `featureSize` (its FixRes input size) unless preprocessing.size is
   * given. Predict and fine-tuning pass the size they need; the converter's tests work at the native size.
   */
  featureInputSize?: boolean;
  modelCacheDir?: string;
  /** Passed to resolveModel (mirrors, fetch, ONNX registry) — mostly for tests. */
  resolve?: Partial<Omit<ResolveOptions, 'log' | 'cacheDir'>>;
  log: Logger;
}

export const DEFAULT_PREPROCESSING: Preprocessing = {
  size: [224, 224],
  resize: 'squash',
  kernel: 'linear',
  channelOrder: 'rgb',
  mean: [0.5, 0.5, 0.5],
  std: [0.5, 0.5, 0.5],
};

export interface LoadedKerasModel {
  graph: KerasGraph;
  modelJson: any;
}

export function loadKerasGraph(dir: string): LoadedKerasModel {
  const modelJson = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
  return { graph: parseKerasGraph(modelJson), modelJson };
}

/**
 * The model taking [h, w] images (itself when that is its own size): shapes re-inferred on a copy of
 * model.json, refused when a layer up to `cut` flattens a feature map.
 */
export function atInputSize(model: LoadedKerasModel, size: readonly [number, number], cut: string): LoadedKerasModel {
  const native = model.graph;
  if (native.inputShape[0] === size[0] && native.inputShape[1] === size[1]) return model;
  const modelJson = withInputSize(model.modelJson, size);
  const graph = parseKerasGraph(modelJson);
  assertSpatialSizeFree(native, graph, cut);
  return { graph, modelJson };
}

/** Last activation before the classifier: the layer feeding the first global pooling / flatten. */
export function defaultCutLayer(graph: KerasGraph): string {
  const pool = graph.layers.find((l) =>
    ['GlobalAveragePooling2D', 'GlobalMaxPooling2D', 'Flatten'].includes(l.className),
  );
  if (pool) return pool.inbound[0]!;
  return graph.outputNames[0] ?? graph.layers[graph.layers.length - 1]!.name;
}

/** The layer list of a model with statically inferred output shapes (what `layers` prints). */
export interface LayerListing {
  model: string;
  inputShape: number[];
  defaultLayer: string;
  /** Why the default cut is that layer (ONNX models). */
  defaultWhy?: string;
  /** shape: per image, channels-last. features: width with --pool avg/max (pooled) and with --pool none (flat), where measured. */
  layers: {
    name: string;
    type: string;
    shape: number[];
    inputs: string[];
    features?: { pooled?: number; flat: number };
  }[];
}

/**
 * What convcache does with each model format, in one place: how a model becomes our cached
 * feature-extraction .onnx, how its layers are listed, and whether fine-tuning can train it.
 * A new format is one entry here (plus its resolution in resolve.ts).
 */
export interface ModelSource {
  prepare(resolved: ResolvedModel, opts: PrepareOptions, modelCacheDir: string): Promise<PreparedBackbone>;
  describeLayers(resolved: ResolvedModel): LayerListing | Promise<LayerListing>;
  /** Why fine-tuning cannot train this format; undefined when it can. */
  notFinetunable?: string;
}

/**
 * Resolve the model, convert or wrap it (cut at the layer, pooling appended) and cache the .onnx
 * under <model cache>/onnx/ (~/.cache/convcache/models), keyed by everything that affects the graph.
 */
export async function prepareBackbone(opts: PrepareOptions): Promise<PreparedBackbone> {
  const modelCacheDir = opts.modelCacheDir ?? defaultModelCacheDir();
  const resolved = await resolveModel(opts.model, { ...opts.resolve, cacheDir: modelCacheDir, log: opts.log });
  if (
    resolved.format === 'onnx' &&
    ((opts.layer && cutLayers(opts.layer).length > 1) || opts.pooling?.endsWith('-l2'))
  ) {
    throw new UserError(
      'multi-layer features (--layer a,b) and --pool avg-l2/max-l2 need a TF.js layers model (our converter); not available for .onnx models',
    );
  }
  return modelSource(resolved).prepare(resolved, opts, modelCacheDir);
}

/** TF.js layers → ONNX with our converter. */
async function prepareTfjsBackbone(
  resolved: ResolvedModel,
  opts: PrepareOptions,
  modelCacheDir: string,
): Promise<PreparedBackbone> {
  const loaded = loadKerasGraph(resolved.location);
  const native = loaded.graph;
  const base = resolved.entry?.preprocessing ?? {
    ...DEFAULT_PREPROCESSING,
    size: [native.inputShape[0]!, native.inputShape[1]!] as [number, number],
  };
  const featureSize = opts.featureInputSize ? resolved.entry?.featureSize : undefined;
  const sized: Preprocessing = featureSize ? { ...base, size: [featureSize, featureSize] } : base;
  const preprocessing: Preprocessing = { ...sized, ...opts.preprocessing };
  const layer = opts.layer ?? resolved.entry?.defaultLayer ?? defaultCutLayer(native);
  const cutNames = cutLayers(layer);
  // Multi-layer cuts: every layer is checked at this input size; the deepest (last) one names the map shape.
  let graph = native;
  for (const name of cutNames) ({ graph } = atInputSize(loaded, preprocessing.size, name));
  const cut = findLayer(graph, cutNames[cutNames.length - 1]!);
  const pooling: Pooling =
    cut.shape.length === 3 || cutNames.length > 1 ? (opts.pooling ?? resolved.entry?.defaultPooling ?? 'avg') : 'none';
  const key = createHash('sha256')
    .update(JSON.stringify({ v: CONVERTER_VERSION, w: resolved.weightsHash, layer, pooling, preprocessing }))
    .digest('hex')
    .slice(0, 12);
  const onnxPath = join(modelCacheDir, 'onnx', `${resolved.id}-${layer.replace(/,/g, '+')}-${pooling}-${key}.onnx`);
  const sidecar = `${onnxPath}.json`;
  let featureDim: number;
  if (existsSync(onnxPath) && existsSync(sidecar)) {
    featureDim = JSON.parse(readFileSync(sidecar, 'utf8')).featureDim;
  } else {
    const weights = await readWeights(resolved.location);
    const result = convertKerasGraph(graph, weights, {
      layer,
      pooling,
      preprocessing,
      metadata: {
        'convcache.model': resolved.id,
        'convcache.weightsHash': resolved.weightsHash,
        'convcache.layer': layer,
        'convcache.pooling': pooling,
      },
    });
    featureDim = result.featureDim;
    writeFileAtomic(onnxPath, encodeModel(result.model));
    writeFileAtomic(sidecar, JSON.stringify({ featureDim }) + '\n'); // written last: marks a complete pair
  }
  return {
    resolved,
    onnxPath,
    config: {
      modelId: resolved.id,
      modelFormat: resolved.format,
      modelSource: resolved.source,
      weightsHash: resolved.weightsHash,
      layer,
      pooling,
      preprocessing,
      featureDim,
      featureMapShape: cutNames.length > 1 ? [featureDim] : cut.shape,
    },
  };
}

async function prepareOnnxBackbone(
  resolved: ResolvedModel,
  opts: PrepareOptions,
  modelCacheDir: string,
): Promise<PreparedBackbone> {
  const bytes = new Uint8Array(readFileSync(resolved.location));
  // Precedence: flags > what travels with the model (sidecar / metadata_props / timm or HF config) > registry > defaults.
  const { preprocessing, layout, layer, pooling } = resolveOnnxSetup(bytes, resolved, opts);
  const key = createHash('sha256')
    .update(JSON.stringify({ v: CONVERTER_VERSION, w: resolved.weightsHash, layer, pooling, preprocessing, layout }))
    .digest('hex')
    .slice(0, 12);
  const onnxPath = join(
    modelCacheDir,
    'onnx',
    `${resolved.id}-${layer.replace(/[^A-Za-z0-9._-]+/g, '_')}-${pooling}-${key}.onnx`,
  );
  const sidecar = `${onnxPath}.json`;
  let featureDim: number;
  if (existsSync(onnxPath) && existsSync(sidecar)) {
    featureDim = JSON.parse(readFileSync(sidecar, 'utf8')).featureDim;
  } else {
    const wrapped = importOnnx(bytes, { featureTensor: layer, pooling, preprocessing, layout });
    // The feature width is only known by running the graph once.
    const ort = await import('onnxruntime-node');
    const [h, w] = preprocessing.size;
    let session;
    try {
      session = await ort.InferenceSession.create(wrapped);
    } catch (e) {
      throw new UserError(
        `ONNX Runtime cannot load ${resolved.location} wrapped for feature extraction: ${String(e instanceof Error ? e.message : e).split('\n')[0]}`,
      );
    }
    const out = await session.run({
      [session.inputNames[0]!]: new ort.Tensor('uint8', new Uint8Array(h * w * 3), [1, h, w, 3]),
    });
    featureDim = out.features!.data.length;
    await session.release();
    writeFileAtomic(onnxPath, wrapped);
    writeFileAtomic(sidecar, JSON.stringify({ featureDim }) + '\n');
  }
  return {
    resolved,
    onnxPath,
    config: {
      modelId: resolved.id,
      modelFormat: 'onnx',
      modelSource: resolved.source,
      weightsHash: resolved.weightsHash,
      layer,
      pooling,
      preprocessing,
      featureDim,
      featureMapShape: [featureDim],
      layout,
    },
  };
}

function describeKerasLayers(resolved: ResolvedModel): LayerListing {
  const { graph } = loadKerasGraph(resolved.location);
  return {
    model: resolved.id,
    inputShape: graph.inputShape,
    defaultLayer: resolved.entry?.defaultLayer ?? defaultCutLayer(graph),
    layers: graph.layers.map((l) => ({ name: l.name, type: l.className, shape: l.shape, inputs: l.inbound })),
  };
}

/** Every float tensor with its shape measured by ORT on one zero image, and the default cut with the reason for it. */
async function describeOnnxLayers(resolved: ResolvedModel): Promise<LayerListing> {
  const bytes = new Uint8Array(readFileSync(resolved.location));
  const info = describeOnnx(bytes);
  const setup = resolveOnnxSetup(bytes, resolved, {});
  const [h, w] = setup.preprocessing.size;
  const shapes = await onnxTensorShapes(bytes, setup.layout === 'nchw' ? [1, 3, h, w] : [1, h, w, 3]);
  return {
    model: resolved.id,
    inputShape: [h, w, 3],
    defaultLayer: setup.layer,
    defaultWhy: setup.layerWhy,
    // For .onnx models --layer takes a tensor name: each node's first output.
    layers: info.nodes.map((n) => {
      const name = n.outputs[0] ?? n.name;
      const dims = shapes.get(name);
      const d = dims ? describeTensor(dims, setup.layout) : undefined;
      return {
        name,
        type: n.opType,
        shape: d?.shape ?? [],
        inputs: n.inputs,
        ...(d ? { features: { pooled: d.pooled, flat: d.flat } } : {}),
      };
    }),
  };
}

/** The model-source registry: one entry per format ResolvedModel can have. */
const MODEL_SOURCES: Readonly<Record<ResolvedModel['format'], ModelSource>> = {
  'tfjs-layers': { prepare: prepareTfjsBackbone, describeLayers: describeKerasLayers },
  onnx: {
    prepare: prepareOnnxBackbone,
    describeLayers: describeOnnxLayers,
    notFinetunable:
      'fine-tuning needs a TF.js layers model (its layers and weights are what is trained and exported); .onnx models can only be used frozen',
  },
};

export function modelSource(resolved: ResolvedModel): ModelSource {
  return MODEL_SOURCES[resolved.format];
}
