import { UserError } from '../util/errors.ts';

/**
 * The Keras layer graph of a TF.js layers model (model.json "modelTopology"), reduced to what the
 * converter and `convcache layers` need: topologically ordered layers with inbound names and
 * statically inferred output shapes (channels-last, batch dimension omitted).
 */
export interface KerasLayer {
  name: string;
  className: string;
  config: Record<string, any>;
  inbound: string[];
  /** Logical (channels-last) output shape without batch: [H, W, C] or [D]. */
  shape: number[];
}

export interface KerasGraph {
  name: string;
  layers: KerasLayer[];
  inputName: string;
  inputShape: number[];
  outputNames: string[];
}

/** Layer types the converter knows; anything else is refused by name. */
export const SUPPORTED_LAYERS = new Set([
  'InputLayer',
  'Conv2D',
  'DepthwiseConv2D',
  'SeparableConv2D',
  'BatchNormalization',
  'Activation',
  'ReLU',
  'ZeroPadding2D',
  'Add',
  'Concatenate',
  'Multiply',
  'MaxPooling2D',
  'AveragePooling2D',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling2D',
  'Flatten',
  'Reshape',
  'Dropout',
  'Dense',
  'Softmax',
]);

function inboundNames(raw: any): string[] {
  if (!raw || (Array.isArray(raw) && raw.length === 0)) return [];
  // Keras 2: [[["name", 0, 0, {}], ...]]; Keras 3: [{args: [{config: {keras_history: [name,0,0]}}]}]
  if (Array.isArray(raw)) {
    const first = raw[0];
    if (Array.isArray(first)) return first.map((t: any) => String(t[0]));
    if (first && typeof first === 'object' && 'args' in first) {
      const names: string[] = [];
      const walk = (v: any): void => {
        if (Array.isArray(v)) v.forEach(walk);
        else if (v && typeof v === 'object') {
          if (v.config?.keras_history) names.push(String(v.config.keras_history[0]));
          else Object.values(v).forEach(walk);
        }
      };
      walk(first.args);
      return names;
    }
  }
  throw new UserError('model.json: unrecognised inbound_nodes format');
}

export function parseKerasGraph(modelJson: any): KerasGraph {
  const topo = modelJson?.modelTopology;
  if (!topo) throw new UserError('model.json has no modelTopology (is this a TF.js layers model?)');
  const top = topo.model_config ?? topo;
  const className: string = top.class_name;
  const config = top.config;
  let rawLayers: any[];
  let sequential = false;
  if (className === 'Sequential') {
    sequential = true;
    rawLayers = Array.isArray(config) ? config : config.layers;
  } else if (className === 'Model' || className === 'Functional') {
    rawLayers = config.layers;
  } else {
    throw new UserError(`model.json: unsupported model class '${className}'`);
  }
  const layers: KerasLayer[] = [];
  let prev: string | undefined;
  for (const raw of rawLayers) {
    const name: string = raw.config?.name ?? raw.name;
    let inbound = sequential ? (prev ? [prev] : []) : inboundNames(raw.inbound_nodes);
    if (sequential && layers.length === 0 && raw.class_name !== 'InputLayer') {
      // Sequential models may omit the InputLayer and carry batch_input_shape on the first layer.
      const shape = raw.config.batch_input_shape ?? raw.config.batch_shape;
      if (!shape) throw new UserError('model.json: Sequential model without an input shape');
      layers.push({
        name: 'input',
        className: 'InputLayer',
        config: { batch_input_shape: shape },
        inbound: [],
        shape: [],
      });
      inbound = ['input'];
    }
    layers.push({ name, className: raw.class_name, config: raw.config ?? {}, inbound, shape: [] });
    prev = name;
  }
  const inputLayer = layers.find((l) => l.className === 'InputLayer');
  if (!inputLayer) throw new UserError('model.json: no InputLayer found');
  const outputNames = sequential
    ? [layers[layers.length - 1]!.name]
    : (config.output_layers ?? []).map((o: any) => String(o[0]));
  const graph: KerasGraph = {
    name: config.name ?? 'model',
    layers,
    inputName: inputLayer.name,
    inputShape: [],
    outputNames,
  };
  inferShapes(graph);
  graph.inputShape = inputLayer.shape;
  return graph;
}

/**
 * A copy of a Keras model.json whose input takes [h, w] images. Convolutional bases accept any size
 * (MobileNet at 288 sees cats and dogs at the scale ImageNet training crops showed them); shapes
 * are re-inferred when the copy is parsed. Cuts whose layers depend on the spatial size (Flatten,
 * Reshape) are refused by `assertSpatialSizeFree`.
 */
export function withInputSize(modelJson: any, size: readonly [number, number]): any {
  const copy = JSON.parse(JSON.stringify(modelJson));
  const topo = copy.modelTopology ?? copy;
  const config = topo.model_config?.config ?? topo.config ?? topo;
  const layers: any[] = Array.isArray(config) ? config : (config.layers ?? []);
  let changed = false;
  for (const l of layers) {
    for (const key of ['batch_input_shape', 'batch_shape']) {
      const shape = l.config?.[key];
      if (Array.isArray(shape) && shape.length === 4) {
        shape[1] = size[0];
        shape[2] = size[1];
        changed = true;
      }
    }
    if (changed) break;
  }
  if (!changed) throw new UserError('model.json: no 4-D input shape to resize');
  return copy;
}

/**
 * Refuse a changed input size when a layer up to `cut` flattens a feature map: a Flatten/Reshape
 * whose output differs between the native and the resized graph (what follows depends on H×W).
 */
export function assertSpatialSizeFree(native: KerasGraph, resized: KerasGraph, cut: string): void {
  const nativeShape = new Map(native.layers.map((l) => [l.name, l.shape.join('x')]));
  const byName = new Map(resized.layers.map((l) => [l.name, l]));
  const stack = [cut];
  const seen = new Set<string>();
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    const l = byName.get(n);
    if (!l) continue;
    if ((l.className === 'Flatten' || l.className === 'Reshape') && nativeShape.get(l.name) !== l.shape.join('x')) {
      throw new UserError(
        `cannot change the input size: layer '${l.name}' (${l.className}) below the cut flattens a feature map; cut lower or keep the model's ${native.inputShape.slice(0, 2).join('x')}`,
      );
    }
    stack.push(...l.inbound);
  }
}

function pair(v: any, fallback: number): [number, number] {
  if (v === undefined || v === null) return [fallback, fallback];
  if (typeof v === 'number') return [v, v];
  return [Number(v[0]), Number(v[1])];
}

export function kernelSize(cfg: any): [number, number] {
  return pair(cfg.kernel_size ?? cfg.pool_size, 1);
}
export function strides(cfg: any): [number, number] {
  return pair(cfg.strides ?? cfg.pool_size, 1);
}
export function dilation(cfg: any): [number, number] {
  return pair(cfg.dilation_rate, 1);
}

/** Explicit [top, left, bottom, right] padding; for 'same', TensorFlow puts the extra pixel at the end. */
export function spatialPads(cfg: any, inH: number, inW: number): [number, number, number, number] {
  if ((cfg.padding ?? 'valid') !== 'same') return [0, 0, 0, 0];
  const [kh, kw] = kernelSize(cfg);
  const [sh, sw] = strides(cfg);
  const [dh, dw] = dilation(cfg);
  const total = (inp: number, k: number, s: number, d: number): number =>
    Math.max((Math.ceil(inp / s) - 1) * s + (k - 1) * d + 1 - inp, 0);
  const th = total(inH, kh, sh, dh);
  const tw = total(inW, kw, sw, dw);
  return [Math.floor(th / 2), Math.floor(tw / 2), th - Math.floor(th / 2), tw - Math.floor(tw / 2)];
}

function convOut(inp: number, k: number, s: number, d: number, padBefore: number, padAfter: number): number {
  return Math.floor((inp + padBefore + padAfter - ((k - 1) * d + 1)) / s) + 1;
}

/** ZeroPadding2D's padding as [top, left, bottom, right] (int, [h, w] or [[t, b], [l, r]]). */
export function zeroPads(cfg: any): [number, number, number, number] {
  const p = cfg.padding;
  if (typeof p === 'number') return [p, p, p, p];
  if (Array.isArray(p) && typeof p[0] === 'number') return [p[0], p[1], p[0], p[1]];
  return [p[0][0], p[1][0], p[0][1], p[1][1]];
}

function inferShapes(graph: KerasGraph): void {
  const byName = new Map<string, KerasLayer>();
  for (const layer of graph.layers) {
    if (!SUPPORTED_LAYERS.has(layer.className)) {
      throw new UserError(
        `layer '${layer.name}' has type ${layer.className}, which the converter does not support (supported: ${[...SUPPORTED_LAYERS].join(', ')})`,
      );
    }
    const ins = layer.inbound.map((n) => {
      const l = byName.get(n);
      if (!l) throw new UserError(`model.json: layer '${layer.name}' refers to unknown input '${n}'`);
      return l.shape;
    });
    layer.shape = outputShape(layer, ins);
    byName.set(layer.name, layer);
  }
}

function outputShape(layer: KerasLayer, ins: number[][]): number[] {
  const cfg = layer.config;
  const x = ins[0] ?? [];
  switch (layer.className) {
    case 'InputLayer': {
      const s: (number | null)[] = cfg.batch_input_shape ?? cfg.batch_shape;
      const dims = s.slice(1);
      if (dims.some((d) => d === null))
        throw new UserError(`input layer '${layer.name}' has an unknown size; give the model a fixed input size`);
      return dims as number[];
    }
    case 'Conv2D':
    case 'DepthwiseConv2D':
    case 'SeparableConv2D':
    case 'MaxPooling2D':
    case 'AveragePooling2D': {
      const [h, w, c] = x as [number, number, number];
      const [kh, kw] = kernelSize(cfg);
      const [sh, sw] = strides(cfg);
      const [dh, dw] = layer.className.endsWith('Pooling2D') ? [1, 1] : dilation(cfg);
      const [pt, pl, pb, pr] = spatialPads(cfg, h, w);
      const oh = convOut(h, kh, sh, dh, pt, pb);
      const ow = convOut(w, kw, sw, dw, pl, pr);
      const oc =
        layer.className === 'DepthwiseConv2D'
          ? c * (cfg.depth_multiplier ?? 1)
          : layer.className.endsWith('Pooling2D')
            ? c
            : Number(cfg.filters);
      return [oh, ow, oc];
    }
    case 'ZeroPadding2D': {
      const [t, l, b, r] = zeroPads(cfg);
      return [x[0]! + t + b, x[1]! + l + r, x[2]!];
    }
    case 'GlobalAveragePooling2D':
    case 'GlobalMaxPooling2D':
      return cfg.keepdims ? [1, 1, x[2]!] : [x[2]!];
    case 'Flatten':
      return [x.reduce((a, b) => a * b, 1)];
    case 'Reshape': {
      const target: number[] = cfg.target_shape;
      const total = x.reduce((a, b) => a * b, 1);
      const known = target.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
      return target.map((d) => (d === -1 ? total / known : d));
    }
    case 'Dense':
      return [...x.slice(0, -1), Number(cfg.units)];
    case 'Concatenate': {
      const axis = cfg.axis ?? -1;
      const ax = axis < 0 ? x.length + axis : axis - 1;
      const out = [...x];
      out[ax] = ins.reduce((a, s) => a + s[ax]!, 0);
      return out;
    }
    default:
      return [...x]; // elementwise: BN, activations, Add, Multiply, Dropout, Softmax
  }
}

/** Resolve a layer name, with a helpful error listing near matches. */
export function findLayer(graph: KerasGraph, name: string): KerasLayer {
  const layer = graph.layers.find((l) => l.name === name);
  if (!layer) {
    const near = graph.layers
      .filter((l) => l.name.includes(name) || name.includes(l.name))
      .map((l) => l.name)
      .slice(0, 5);
    throw new UserError(
      `no layer named '${name}' in the model${near.length ? ` (did you mean: ${near.join(', ')}?)` : ''}; list layers with 'convcache layers'`,
    );
  }
  return layer;
}
