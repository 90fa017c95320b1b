import { UserError } from '../util/errors.ts';
import {
  findLayer,
  zeroPads,
  kernelSize,
  spatialPads,
  strides,
  dilation,
  type KerasGraph,
  type KerasLayer,
} from './keras-graph.ts';
import { GraphBuilder, type OnnxAttr, type OnnxModel } from '../onnx/write.ts';
import { DataType } from '../onnx/schema.ts';
import { affineFromPreprocessing, type Preprocessing } from './preprocess.ts';

/**
 * Keras's include_top=False pooling vocabulary, plus 'avg-l2' / 'max-l2': the pooled vector
 * L2-normalised — per block when several layers are cut (`layer: 'a,b'`), so a block with large
 * activations does not drown the others.
 */
export type Pooling = 'avg' | 'max' | 'none' | 'avg-l2' | 'max-l2';
export const POOLINGS: readonly Pooling[] = ['avg', 'max', 'none', 'avg-l2', 'max-l2'];

/** The layer names of a cut: 'a' or several, 'a,b' (multi-layer features, concatenated). */
export function cutLayers(layer: string): string[] {
  return layer
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

export interface WeightTensor {
  shape: number[];
  data: Float32Array;
}
export type WeightMap = Map<string, WeightTensor>;

export interface ConvertOptions {
  /**
   * Layer whose output is the feature map (inclusive cut), or several comma-separated layers whose
   * pooled outputs are concatenated in the given order (multi-layer features; needs a pooling).
   */
  layer: string;
  pooling: Pooling;
  preprocessing: Preprocessing;
  /** Input tensor: 'uint8-nhwc' = raw decoded pixels (scaling done in-graph); 'float-nchw' = already-preprocessed floats. */
  input?: 'uint8-nhwc' | 'float-nchw';
  /** Start the graph at the output of this layer instead of the image (for split networks in fine-tuning). */
  from?: string;
  metadata?: Record<string, string>;
}

export interface ConvertResult {
  model: OnnxModel;
  /** Feature shape per image after pooling: [D] (flat) or channels-last [H, W, C] for no pooling before flattening. */
  featureShape: number[];
  featureDim: number;
}

/** A tensor in the ONNX graph: rank-3 logical tensors live as NCHW; everything else channels-last. */
interface Value {
  name: string;
  layout: 'nchw' | 'last';
  shape: number[];
}

function weight(weights: WeightMap, layer: string, param: string, required = true): WeightTensor | undefined {
  const exact = weights.get(`${layer}/${param}`) ?? weights.get(`${layer}/${param}:0`);
  if (exact) return exact;
  // Some exporters prefix the model name or suffix ":0"; accept a unique suffix match.
  const suffix = `/${layer}/${param}`;
  for (const [k, v] of weights) if (k.endsWith(suffix) || k.endsWith(`${suffix}:0`)) return v;
  if (required) throw new UserError(`weights for '${layer}/${param}' are missing from the model's weight files`);
  return undefined;
}

/** Keras conv kernel [kh, kw, in, out] -> ONNX [out, in, kh, kw]. */
export function kerasConvKernelToOnnx(k: WeightTensor): Float32Array {
  const [kh, kw, cin, cout] = k.shape as [number, number, number, number];
  const out = new Float32Array(k.data.length);
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let i = 0; i < cin; i++)
        for (let o = 0; o < cout; o++) {
          out[((o * cin + i) * kh + y) * kw + x] = k.data[((y * kw + x) * cin + i) * cout + o]!;
        }
  return out;
}

/** Keras depthwise kernel [kh, kw, in, mult] -> ONNX grouped conv [in*mult, 1, kh, kw]. */
export function kerasDepthwiseKernelToOnnx(k: WeightTensor): Float32Array {
  const [kh, kw, cin, mult] = k.shape as [number, number, number, number];
  const out = new Float32Array(k.data.length);
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let i = 0; i < cin; i++)
        for (let m = 0; m < mult; m++) {
          out[((i * mult + m) * kh + y) * kw + x] = k.data[((y * kw + x) * cin + i) * mult + m]!;
        }
  return out;
}

/** Batch-norm as per-channel scale and shift (inference mode, moving statistics). */
export function bnScaleShift(weights: WeightMap, layer: KerasLayer): { scale: Float32Array; shift: Float32Array } {
  const mean = weight(weights, layer.name, 'moving_mean')!.data;
  const variance = weight(weights, layer.name, 'moving_variance')!.data;
  const gamma = layer.config.scale === false ? undefined : weight(weights, layer.name, 'gamma')!.data;
  const beta = layer.config.center === false ? undefined : weight(weights, layer.name, 'beta')!.data;
  const eps = layer.config.epsilon ?? 1e-3;
  const n = mean.length;
  const scale = new Float32Array(n);
  const shift = new Float32Array(n);
  for (let c = 0; c < n; c++) {
    // float64 math, then one rounding: keeps the folded weights as close to TF.js's arithmetic as possible
    const s = (gamma ? gamma[c]! : 1) / Math.sqrt(variance[c]! + eps);
    scale[c] = s;
    shift[c] = (beta ? beta[c]! : 0) - mean[c]! * s;
  }
  return { scale, shift };
}

const ACTIVATIONS = new Set([
  'linear',
  'relu',
  'relu6',
  'sigmoid',
  'tanh',
  'softmax',
  'elu',
  'selu',
  'swish',
  'silu',
  'hard_sigmoid',
  'softplus',
]);

export function convertKerasGraph(graph: KerasGraph, weights: WeightMap, opts: ConvertOptions): ConvertResult {
  const cuts = cutLayers(opts.layer).map((n) => findLayer(graph, n));
  if (cuts.length === 0) throw new UserError('no layer to cut at');
  if (new Set(cuts.map((c) => c.name)).size !== cuts.length)
    throw new UserError(`layer given twice in '${opts.layer}'`);
  const cut = cuts[cuts.length - 1]!;
  const cutNames = new Set(cuts.map((c) => c.name));
  const g = new GraphBuilder();
  const byName = new Map(graph.layers.map((l) => [l.name, l]));
  const consumers = new Map<string, string[]>();
  for (const l of graph.layers) for (const i of l.inbound) consumers.set(i, [...(consumers.get(i) ?? []), l.name]);

  // Only layers the cut depends on are converted.
  const needed = new Set<string>();
  const stack = cuts.map((c) => c.name);
  const from = opts.from ? findLayer(graph, opts.from) : undefined;
  while (stack.length) {
    const n = stack.pop()!;
    if (needed.has(n)) continue;
    needed.add(n);
    if (from && n === from.name) continue;
    for (const i of byName.get(n)!.inbound) stack.push(i);
  }

  const values = new Map<string, Value>();
  const inputMode = opts.input ?? 'uint8-nhwc';
  const inputName = 'image';
  const start = from ?? byName.get(graph.inputName)!;
  const [ih, iw] = opts.preprocessing.size;
  if (!from && (graph.inputShape[0] !== ih || graph.inputShape[1] !== iw)) {
    throw new UserError(`preprocessing size ${ih}x${iw} does not match the model input ${graph.inputShape.join('x')}`);
  }
  let graphInputShape: (number | string)[];
  let graphInputType: DataType;
  if (from) {
    // Split network: the input is the boundary activation, NCHW float.
    const s = from.shape;
    graphInputShape = s.length === 3 ? ['N', s[2]!, s[0]!, s[1]!] : ['N', ...s];
    graphInputType = DataType.FLOAT;
    values.set(from.name, { name: inputName, layout: s.length === 3 ? 'nchw' : 'last', shape: s });
  } else if (inputMode === 'uint8-nhwc') {
    graphInputShape = ['N', ih, iw, 3];
    graphInputType = DataType.UINT8;
    // Transpose while still uint8 (4x less memory traffic), then scale in-graph.
    let x = g.node('Transpose', [inputName], 'to_nchw', [{ name: 'perm', kind: 'ints', value: [0, 3, 1, 2] }]);
    x = g.node('Cast', [x], 'to_float', [{ name: 'to', kind: 'int', value: DataType.FLOAT }]);
    if (opts.preprocessing.channelOrder === 'bgr') {
      x = g.node('Gather', [x, g.constInt64('bgr', [2, 1, 0])], 'bgr', [{ name: 'axis', kind: 'int', value: 1 }]);
    }
    const { scale, offset } = affineFromPreprocessing(opts.preprocessing);
    x = g.node('Mul', [x, g.constFloat('scale', [1, 3, 1, 1], scale)], 'scaled');
    x = g.node('Add', [x, g.constFloat('offset', [1, 3, 1, 1], offset)], 'normalised');
    values.set(start.name, { name: x, layout: 'nchw', shape: start.shape });
  } else {
    graphInputShape = ['N', 3, ih, iw];
    graphInputType = DataType.FLOAT;
    values.set(start.name, { name: inputName, layout: 'nchw', shape: start.shape });
  }

  const toLast = (v: Value): string =>
    v.layout === 'nchw'
      ? g.node('Transpose', [v.name], 'to_nhwc', [{ name: 'perm', kind: 'ints', value: [0, 2, 3, 1] }])
      : v.name;
  const fromLast = (name: string, shape: number[]): Value =>
    shape.length === 3
      ? {
          name: g.node('Transpose', [name], 'to_nchw', [{ name: 'perm', kind: 'ints', value: [0, 3, 1, 2] }]),
          layout: 'nchw',
          shape,
        }
      : { name, layout: 'last', shape };
  const channelAxis = (v: Value): number => (v.layout === 'nchw' ? 1 : v.shape.length);
  const perChannelDims = (v: Value, c: number): number[] => (v.layout === 'nchw' ? [1, c, 1, 1] : [c]);

  const activation = (v: Value, act: string | undefined, maxValue?: number | null): Value => {
    const a = act ?? 'linear';
    if (!ACTIVATIONS.has(a)) throw new UserError(`activation '${a}' is not supported by the converter`);
    const n = v.name;
    let out: string;
    switch (a) {
      case 'linear':
        return v;
      case 'relu':
        if (maxValue !== undefined && maxValue !== null) {
          out = g.node('Clip', [n, g.constFloat('min', [], [0]), g.constFloat('max', [], [maxValue])], 'relu_clip');
        } else out = g.node('Relu', [n], 'relu');
        break;
      case 'relu6':
        out = g.node('Clip', [n, g.constFloat('min', [], [0]), g.constFloat('max', [], [6])], 'relu6');
        break;
      case 'sigmoid':
        out = g.node('Sigmoid', [n], 'sigmoid');
        break;
      case 'tanh':
        out = g.node('Tanh', [n], 'tanh');
        break;
      case 'softmax':
        out = g.node('Softmax', [n], 'softmax', [{ name: 'axis', kind: 'int', value: channelAxis(v) }]);
        break;
      case 'elu':
        out = g.node('Elu', [n], 'elu');
        break;
      case 'selu':
        out = g.node('Selu', [n], 'selu');
        break;
      case 'softplus':
        out = g.node('Softplus', [n], 'softplus');
        break;
      case 'hard_sigmoid':
        out = g.node('HardSigmoid', [n], 'hard_sigmoid', [{ name: 'alpha', kind: 'float', value: 0.2 }]);
        break;
      default:
        out = g.node('Mul', [n, g.node('Sigmoid', [n], 'sig')], 'swish');
    }
    return { ...v, name: out };
  };

  const order = graph.layers.filter((l) => needed.has(l.name) && !values.has(l.name));
  const folded = new Set<string>();
  // Pads handed from a ZeroPadding2D to the conv that consumes it.
  const pendingPads = new Map<string, [number, number, number, number]>();
  for (const layer of order) {
    if (folded.has(layer.name)) continue;
    const ins = layer.inbound.map((n) => {
      const v = values.get(n);
      if (!v) throw new Error(`converter: input '${n}' of '${layer.name}' not yet converted`);
      return v;
    });
    const x = ins[0]!;
    const cfg = layer.config;
    let out: Value;
    const only = (n: string): KerasLayer | undefined => {
      const c = consumers.get(n) ?? [];
      return c.length === 1 && needed.has(c[0]!) && !cutNames.has(layer.name) ? byName.get(c[0]!) : undefined;
    };
    switch (layer.className) {
      case 'InputLayer':
        out = x;
        break;
      case 'Dropout':
        out = x;
        break;
      case 'ZeroPadding2D': {
        const next = only(layer.name);
        const pads = zeroPads(cfg);
        if (
          next &&
          ['Conv2D', 'DepthwiseConv2D', 'SeparableConv2D'].includes(next.className) &&
          (next.config.padding ?? 'valid') === 'valid'
        ) {
          // Fold explicit padding into the conv's pads: a separate Pad op costs ORT 15-20 %.
          pendingPads.set(next.name, pads);
          out = { ...x, shape: layer.shape };
          values.set(layer.name, out);
          continue;
        }
        const [t, l, b, r] = pads;
        const padName = g.node('Pad', [x.name, g.constInt64('pads', [0, 0, t, l, 0, 0, b, r])], 'pad');
        out = { name: padName, layout: 'nchw', shape: layer.shape };
        break;
      }
      case 'Conv2D':
      case 'DepthwiseConv2D':
      case 'SeparableConv2D': {
        out = convLayer(g, weights, layer, x, pendingPads.get(layer.name) ?? inputPads(layer, x));
        // Fold a following BatchNormalization into the conv's weights and bias.
        const next = only(layer.name);
        if (next && next.className === 'BatchNormalization') {
          const { scale, shift } = bnScaleShift(weights, next);
          foldBnIntoLastConv(g, scale, shift);
          folded.add(next.name);
          values.set(layer.name, out); // the conv alone no longer exists; only the BN output is valid
          out = { ...out, shape: next.shape };
          values.set(next.name, activation(out, next.config.activation));
          continue;
        }
        out = activation(out, cfg.activation);
        break;
      }
      case 'BatchNormalization': {
        const { scale, shift } = bnScaleShift(weights, layer);
        const c = scale.length;
        const m = g.node('Mul', [x.name, g.constFloat('bn_scale', perChannelDims(x, c), scale)], 'bn_mul');
        out = { ...x, name: g.node('Add', [m, g.constFloat('bn_shift', perChannelDims(x, c), shift)], 'bn_add') };
        break;
      }
      case 'Activation':
        out = activation(x, cfg.activation);
        break;
      case 'Softmax':
        out = activation(x, 'softmax');
        break;
      case 'ReLU': {
        if (cfg.negative_slope) {
          out = {
            ...x,
            name: g.node('LeakyRelu', [x.name], 'leaky', [{ name: 'alpha', kind: 'float', value: cfg.negative_slope }]),
          };
          if (cfg.max_value != null)
            out = { ...out, name: g.node('Min', [out.name, g.constFloat('max', [], [cfg.max_value])], 'relu_max') };
        } else out = activation(x, 'relu', cfg.max_value);
        break;
      }
      case 'Add':
      case 'Multiply': {
        const op = layer.className === 'Add' ? 'Add' : 'Mul';
        let acc = ins[0]!.name;
        for (const v of ins.slice(1)) acc = g.node(op, [acc, v.name], op.toLowerCase());
        out = { ...x, name: acc, shape: layer.shape };
        break;
      }
      case 'Concatenate': {
        const axis = cfg.axis ?? -1;
        const logical = axis < 0 ? x.shape.length + axis : axis - 1;
        const onnxAxis = x.layout === 'nchw' ? [2, 3, 1][logical]! : logical + 1;
        out = {
          ...x,
          name: g.node(
            'Concat',
            ins.map((v) => v.name),
            'concat',
            [{ name: 'axis', kind: 'int', value: onnxAxis }],
          ),
          shape: layer.shape,
        };
        break;
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const [t, l, b, r] = spatialPads(cfg, x.shape[0]!, x.shape[1]!);
        const attrs: OnnxAttr[] = [
          { name: 'kernel_shape', kind: 'ints', value: kernelSize(cfg) },
          { name: 'strides', kind: 'ints', value: strides(cfg) },
          { name: 'pads', kind: 'ints', value: [t, l, b, r] },
        ];
        // TF's 'same' average pooling divides by the number of real (unpadded) pixels.
        if (layer.className === 'AveragePooling2D') attrs.push({ name: 'count_include_pad', kind: 'int', value: 0 });
        out = {
          name: g.node(layer.className === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool', [x.name], 'pool', attrs),
          layout: 'nchw',
          shape: layer.shape,
        };
        break;
      }
      case 'GlobalAveragePooling2D':
      case 'GlobalMaxPooling2D': {
        const p = g.node(
          layer.className === 'GlobalAveragePooling2D' ? 'GlobalAveragePool' : 'GlobalMaxPool',
          [x.name],
          'gpool',
        );
        out = cfg.keepdims
          ? { name: p, layout: 'nchw', shape: layer.shape }
          : {
              name: g.node('Flatten', [p], 'gpool_flat', [{ name: 'axis', kind: 'int', value: 1 }]),
              layout: 'last',
              shape: layer.shape,
            };
        break;
      }
      case 'Flatten':
        out = {
          name: g.node('Flatten', [toLast(x)], 'flatten', [{ name: 'axis', kind: 'int', value: 1 }]),
          layout: 'last',
          shape: layer.shape,
        };
        break;
      case 'Reshape': {
        const r = g.node('Reshape', [toLast(x), g.constInt64('shape', [0, ...layer.shape])], 'reshape');
        out = fromLast(r, layer.shape);
        break;
      }
      case 'Dense': {
        const k = weight(weights, layer.name, 'kernel')!;
        const last = toLast(x);
        let y = g.node('MatMul', [last, g.constFloat(`${layer.name}_kernel`, k.shape, k.data)], 'dense');
        const b = cfg.use_bias === false ? undefined : weight(weights, layer.name, 'bias');
        if (b) y = g.node('Add', [y, g.constFloat(`${layer.name}_bias`, b.shape, b.data)], 'dense_bias');
        out = activation({ name: y, layout: 'last', shape: layer.shape }, cfg.activation);
        if (layer.shape.length === 3) out = fromLast(out.name, layer.shape);
        break;
      }
      default:
        throw new UserError(`layer '${layer.name}' (${layer.className}) is not supported by the converter`);
    }
    values.set(layer.name, { ...out, shape: layer.shape });
  }

  // Pooling on top of the cut, Keras's include_top=False + pooling=… vocabulary.
  const cutValue = values.get(cut.name)!;
  let feat = cutValue;
  let pooling = opts.pooling;
  const l2 = pooling === 'avg-l2' || pooling === 'max-l2';
  const poolOp = pooling === 'avg' || pooling === 'avg-l2' ? 'GlobalAveragePool' : 'GlobalMaxPool';
  /** Global pooling (then L2 normalisation for the -l2 modes) of one rank-3 cut: [N, C]. */
  const pooled = (v: Value): Value => {
    const p = g.node(poolOp, [v.name], 'pool');
    let name = g.node('Flatten', [p], 'pool_flat', [{ name: 'axis', kind: 'int', value: 1 }]);
    if (l2)
      name = g.node('LpNormalization', [name], 'pool_l2', [
        { name: 'axis', kind: 'int', value: 1 },
        { name: 'p', kind: 'int', value: 2 },
      ]);
    return { name, layout: 'last', shape: [v.shape[2]!] };
  };
  if (cuts.length > 1) {
    if (pooling === 'none')
      throw new UserError(`multi-layer features (${opts.layer}) need a pooling: avg, max, avg-l2 or max-l2`);
    const blocks = cuts.map((c) => {
      const v = values.get(c.name)!;
      if (v.shape.length !== 3)
        throw new UserError(`multi-layer features: '${c.name}' is not a feature map (shape [${v.shape.join(', ')}])`);
      return pooled(v);
    });
    const D = blocks.reduce((a, b) => a + b.shape[0]!, 0);
    feat = {
      name: g.node(
        'Concat',
        blocks.map((b) => b.name),
        'blocks',
        [{ name: 'axis', kind: 'int', value: 1 }],
      ),
      layout: 'last',
      shape: [D],
    };
  } else if (cutValue.shape.length === 3) {
    if (pooling !== 'none') {
      feat = pooled(cutValue);
    } else {
      feat = {
        name: g.node('Flatten', [toLast(cutValue)], 'flat', [{ name: 'axis', kind: 'int', value: 1 }]),
        layout: 'last',
        shape: [cutValue.shape.reduce((a, b) => a * b, 1)],
      };
    }
  } else {
    pooling = 'none';
    if (cutValue.shape.length !== 1)
      feat = {
        name: g.node('Flatten', [cutValue.name], 'flat', [{ name: 'axis', kind: 'int', value: 1 }]),
        layout: 'last',
        shape: [cutValue.shape.reduce((a, b) => a * b, 1)],
      };
  }
  const featureDim = feat.shape[0]!;
  // Name the graph output 'features' via Identity so callers need not know internal names.
  g.nodes.push({ opType: 'Identity', inputs: [feat.name], outputs: ['features'], name: 'features' });

  return {
    model: {
      producer: 'convcache',
      opset: 13,
      metadata: opts.metadata,
      graph: {
        name: `${graph.name}_to_${cuts.map((c) => c.name).join('+')}`,
        nodes: g.nodes,
        initializers: g.inits,
        inputs: [{ name: inputName, dataType: graphInputType, shape: graphInputShape }],
        outputs: [{ name: 'features', dataType: DataType.FLOAT, shape: ['N', featureDim] }],
      },
    },
    featureShape: cuts.length === 1 && cutValue.shape.length === 3 && pooling === 'none' ? cutValue.shape : feat.shape,
    featureDim,
  };

  function inputPads(layer: KerasLayer, x: Value): [number, number, number, number] {
    return spatialPads(layer.config, x.shape[0]!, x.shape[1]!);
  }
}

/** Emits Conv node(s); the last emitted Conv has weight + bias initialisers that BN folding may rewrite. */
function convLayer(
  g: GraphBuilder,
  weights: WeightMap,
  layer: KerasLayer,
  x: Value,
  pads: [number, number, number, number],
): Value {
  const cfg = layer.config;
  const [t, l, b, r] = pads;
  const base: OnnxAttr[] = [
    { name: 'kernel_shape', kind: 'ints', value: kernelSize(cfg) },
    { name: 'strides', kind: 'ints', value: strides(cfg) },
    { name: 'dilations', kind: 'ints', value: dilation(cfg) },
    { name: 'pads', kind: 'ints', value: [t, l, b, r] },
  ];
  const cin = x.shape[2]!;
  const useBias = cfg.use_bias !== false;
  const [kh, kw] = kernelSize(cfg);
  if (layer.className === 'Conv2D') {
    const k = weight(weights, layer.name, 'kernel')!;
    const cout = k.shape[3]!;
    const bias = useBias ? weight(weights, layer.name, 'bias')!.data : new Float32Array(cout);
    const w = g.constFloat(`${layer.name}_W`, [cout, cin, kh, kw], kerasConvKernelToOnnx(k));
    const bn = g.constFloat(`${layer.name}_B`, [cout], new Float32Array(bias));
    return {
      name: g.node('Conv', [x.name, w, bn], layer.name, [...base, { name: 'group', kind: 'int', value: 1 }]),
      layout: 'nchw',
      shape: layer.shape,
    };
  }
  const dk = weight(weights, layer.name, 'depthwise_kernel')!;
  const mult = dk.shape[3]!;
  if (layer.className === 'DepthwiseConv2D') {
    const bias = useBias ? weight(weights, layer.name, 'bias')!.data : new Float32Array(cin * mult);
    const w = g.constFloat(`${layer.name}_W`, [cin * mult, 1, kh, kw], kerasDepthwiseKernelToOnnx(dk));
    const bn = g.constFloat(`${layer.name}_B`, [cin * mult], new Float32Array(bias));
    return {
      name: g.node('Conv', [x.name, w, bn], layer.name, [...base, { name: 'group', kind: 'int', value: cin }]),
      layout: 'nchw',
      shape: layer.shape,
    };
  }
  // SeparableConv2D = depthwise (no bias) then pointwise 1x1 with bias.
  const dw = g.constFloat(`${layer.name}_dW`, [cin * mult, 1, kh, kw], kerasDepthwiseKernelToOnnx(dk));
  const mid = g.node('Conv', [x.name, dw], `${layer.name}_dw`, [...base, { name: 'group', kind: 'int', value: cin }]);
  const pk = weight(weights, layer.name, 'pointwise_kernel')!;
  const cout = pk.shape[3]!;
  const bias = useBias ? weight(weights, layer.name, 'bias')!.data : new Float32Array(cout);
  const pw = g.constFloat(`${layer.name}_pW`, [cout, cin * mult, 1, 1], kerasConvKernelToOnnx(pk));
  const pb = g.constFloat(`${layer.name}_pB`, [cout], new Float32Array(bias));
  return {
    name: g.node('Conv', [mid, pw, pb], `${layer.name}_pw`, [{ name: 'kernel_shape', kind: 'ints', value: [1, 1] }]),
    layout: 'nchw',
    shape: layer.shape,
  };
}

/** Scale the last Conv's output channels by `scale` and add `shift` (BatchNorm folding). */
function foldBnIntoLastConv(g: GraphBuilder, scale: Float32Array, shift: Float32Array): void {
  const conv = g.nodes[g.nodes.length - 1]!;
  if (conv.opType !== 'Conv') throw new Error('converter: BN folding expects a Conv as the last node');
  const wInit = g.inits.find((t) => t.name === conv.inputs[1])!;
  const bInit = g.inits.find((t) => t.name === conv.inputs[2])!;
  const w = new Float32Array(wInit.raw.slice().buffer);
  const b = new Float32Array(bInit.raw.slice().buffer);
  const cout = wInit.dims[0]!;
  const per = w.length / cout;
  for (let o = 0; o < cout; o++) {
    for (let i = 0; i < per; i++) w[o * per + i] = w[o * per + i]! * scale[o]!;
    b[o] = b[o]! * scale[o]! + shift[o]!;
  }
  wInit.raw = new Uint8Array(w.buffer);
  bInit.raw = new Uint8Array(b.buffer);
}
