import { bnScaleShift, type WeightMap } from '../backbone/convert.ts';
import {
  findLayer,
  kernelSize,
  spatialPads,
  strides,
  dilation,
  type KerasGraph,
  type KerasLayer,
} from '../backbone/keras-graph.ts';
import { UserError } from '../util/errors.ts';

/**
 * Where to split a pretrained network for fine-tuning, and what the trainable top consists of.
 *
 * The frozen bottom (input → boundary) runs in ONNX Runtime; the top (boundary → cut) is a chain of
 * ops trained by a TopEngine (ORT or TF.js). BatchNormalization stays in inference mode with its moving statistics: each
 * BN that directly follows a (linear) conv is *folded* into it, so the trainable parameters are the
 * folded kernel W·s and bias (b·s + β − μ·s) where s = γ/√(σ² + ε). This is exactly Keras's
 * "BN layers frozen in inference mode, conv kernel + β trainable" (γ's effect is carried by the
 * folded kernel), costs nothing at train time, and unfolds back losslessly for export: kernel =
 * W_f / s, β' = β + (b_f − b·s − β + μ·s), moving mean/variance and γ unchanged. A BN that cannot
 * be folded (after a non-linear conv or another BN) is a frozen per-channel affine.
 */

export type Act = { fn: 'linear' } | { fn: 'relu'; max?: number };

export interface ConvOp {
  kind: 'conv';
  /** Keras layer name of the conv. */
  layer: string;
  type: 'Conv2D' | 'DepthwiseConv2D';
  /** Folded BatchNormalization layer, if any. */
  bn?: string;
  /** Keras layer whose output this op produces (the activation, BN or the conv itself). */
  output: string;
  pads: [number, number, number, number];
  strides: [number, number];
  kernel: [number, number];
  inShape: [number, number, number];
  outShape: [number, number, number];
  act: Act;
  /** Index of this op's kernel in the parameter list (bias is kernelIndex + 1). */
  param: number;
}

export interface AffineOp {
  kind: 'affine';
  layer: string;
  output: string;
  scale: Float32Array;
  shift: Float32Array;
  act: Act;
  shape: [number, number, number];
}

export interface ActOp {
  kind: 'act';
  layer: string;
  output: string;
  act: Act;
  shape: [number, number, number];
}

export type TopOp = ConvOp | AffineOp | ActOp;

export interface TopPlan {
  boundary: string;
  cut: string;
  /** Keras layers after the boundary up to and including the cut. */
  layers: string[];
  ops: TopOp[];
  inShape: [number, number, number];
  outShape: [number, number, number];
  /** Number of conv blocks in the top. */
  blocks: number;
}

export interface ParamTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

function activationOf(layer: KerasLayer): Act | undefined {
  const cfg = layer.config;
  if (layer.className === 'Activation') {
    const a = cfg.activation ?? 'linear';
    if (a === 'linear') return { fn: 'linear' };
    if (a === 'relu') return { fn: 'relu' };
    if (a === 'relu6') return { fn: 'relu', max: 6 };
    return undefined;
  }
  if (layer.className === 'ReLU') {
    if (cfg.negative_slope || (cfg.threshold ?? 0) !== 0) return undefined;
    return cfg.max_value != null ? { fn: 'relu', max: Number(cfg.max_value) } : { fn: 'relu' };
  }
  return undefined;
}

function convActivation(layer: KerasLayer): Act | undefined {
  return activationOf({ ...layer, className: 'Activation' });
}

const ACT_CLASSES = new Set(['Activation', 'ReLU']);

/** Layers that end a block: an activation right after a regular (non-depthwise) conv, with an optional BN between. */
export function blockEnds(graph: KerasGraph, cut: string): string[] {
  const byName = new Map(graph.layers.map((l) => [l.name, l]));
  const out: string[] = [];
  for (const l of graph.layers) {
    let src: KerasLayer | undefined;
    if (ACT_CLASSES.has(l.className)) {
      src = byName.get(l.inbound[0] ?? '');
      if (src?.className === 'BatchNormalization') src = byName.get(src.inbound[0] ?? '');
    } else if (l.className === 'Conv2D' && (l.config.activation ?? 'linear') !== 'linear') src = l;
    if (src?.className === 'Conv2D') out.push(l.name);
    if (l.name === cut) break;
  }
  return out;
}

export interface BoundaryChoice {
  unfreeze?: number;
  unfreezeFrom?: string;
}

/**
 * The frozen/trainable boundary (the last frozen layer). `unfreeze` = number of top blocks to train
 * (MobileNet v1: block k = conv_dw_k … conv_pw_k_relu); `unfreezeFrom` = first trainable layer.
 * unfreeze 0 puts the boundary at the cut (only the head trains).
 */
export function resolveBoundary(graph: KerasGraph, cut: string, choice: BoundaryChoice): string {
  findLayer(graph, cut);
  if (choice.unfreezeFrom !== undefined) {
    const first = findLayer(graph, choice.unfreezeFrom);
    const idx = graph.layers.indexOf(first);
    if (idx > graph.layers.findIndex((l) => l.name === cut))
      throw new UserError(`--unfreeze-from ${first.name} is above the conv base's last layer '${cut}'`);
    if (first.inbound.length !== 1)
      throw new UserError(`--unfreeze-from ${first.name}: the first trainable layer must have exactly one input`);
    return first.inbound[0]!;
  }
  const n = choice.unfreeze ?? 0;
  if (n === 0) return cut;
  const ends = blockEnds(graph, cut);
  if (ends[ends.length - 1] !== cut)
    throw new UserError(
      `cannot count blocks: the cut layer '${cut}' does not end a conv block; use --unfreeze-from LAYER`,
    );
  if (n >= ends.length)
    throw new UserError(`--unfreeze ${n}: the model has only ${ends.length - 1} blocks above its first conv`);
  return ends[ends.length - 1 - n]!;
}

/** Plan the trainable chain boundary → cut. Refuses anything but a simple chain of supported layers. */
export function planTop(graph: KerasGraph, boundary: string, cut: string): TopPlan {
  const byName = new Map(graph.layers.map((l) => [l.name, l]));
  const b = findLayer(graph, boundary);
  const c = findLayer(graph, cut);
  if (b.shape.length !== 3)
    throw new UserError(
      `boundary layer '${boundary}' must output a feature map [H, W, C], got [${b.shape.join(', ')}]`,
    );
  // Walk back from the cut to the boundary through single inputs.
  const chain: KerasLayer[] = [];
  let cur: KerasLayer | undefined = c;
  while (cur && cur.name !== boundary) {
    chain.push(cur);
    if (cur.inbound.length !== 1)
      throw new UserError(
        `layer '${cur.name}' has ${cur.inbound.length} inputs; the trainable top must be a simple chain (choose a boundary above '${cur.name}')`,
      );
    cur = byName.get(cur.inbound[0]!);
  }
  if (!cur) throw new UserError(`'${boundary}' is not below '${cut}' in the model`);
  chain.reverse();
  const consumers = new Map<string, number>();
  for (const l of graph.layers) for (const i of l.inbound) consumers.set(i, (consumers.get(i) ?? 0) + 1);
  for (const l of chain.slice(0, -1)) {
    if ((consumers.get(l.name) ?? 0) !== 1)
      throw new UserError(
        `layer '${l.name}' feeds ${consumers.get(l.name)} layers; the trainable top must be a simple chain`,
      );
  }
  const ops: TopOp[] = [];
  let pendingPads: [number, number, number, number] | undefined;
  let shape = b.shape as [number, number, number];
  let param = 0;
  let blocks = 0;
  for (const l of chain) {
    const cfg = l.config;
    const last = ops[ops.length - 1];
    switch (l.className) {
      case 'ZeroPadding2D': {
        const p = cfg.padding;
        pendingPads =
          typeof p === 'number'
            ? [p, p, p, p]
            : Array.isArray(p) && typeof p[0] === 'number'
              ? [p[0], p[1], p[0], p[1]]
              : [p[0][0], p[1][0], p[0][1], p[1][1]];
        shape = l.shape as [number, number, number];
        continue;
      }
      case 'Conv2D':
      case 'DepthwiseConv2D': {
        const [dh, dw] = dilation(cfg);
        if (dh !== 1 || dw !== 1)
          throw new UserError(`layer '${l.name}': dilated convolutions are not supported in the trainable top`);
        if (l.className === 'DepthwiseConv2D' && (cfg.depth_multiplier ?? 1) !== 1)
          throw new UserError(`layer '${l.name}': depth_multiplier ≠ 1 is not supported in the trainable top`);
        const act = convActivation(l);
        if (!act)
          throw new UserError(
            `layer '${l.name}': activation '${cfg.activation}' is not supported in the trainable top`,
          );
        let pads = spatialPads(cfg, shape[0], shape[1]);
        const inShape: [number, number, number] = pendingPads
          ? [shape[0] - pendingPads[0] - pendingPads[2], shape[1] - pendingPads[1] - pendingPads[3], shape[2]]
          : shape;
        if (pendingPads) {
          if ((cfg.padding ?? 'valid') !== 'valid')
            throw new UserError(`layer '${l.name}': ZeroPadding2D before a 'same' conv is not supported`);
          pads = pendingPads;
          pendingPads = undefined;
        }
        ops.push({
          kind: 'conv',
          layer: l.name,
          type: l.className,
          output: l.name,
          pads,
          strides: strides(cfg),
          kernel: kernelSize(cfg),
          inShape,
          outShape: l.shape as [number, number, number],
          act,
          param,
        });
        param += 2;
        break;
      }
      case 'BatchNormalization': {
        if (last?.kind === 'conv' && !last.bn && last.act.fn === 'linear' && last.output === l.inbound[0]) {
          last.bn = l.name;
          last.output = l.name;
        } else {
          ops.push({
            kind: 'affine',
            layer: l.name,
            output: l.name,
            scale: new Float32Array(0),
            shift: new Float32Array(0),
            act: { fn: 'linear' },
            shape: l.shape as [number, number, number],
          });
        }
        break;
      }
      case 'Activation':
      case 'ReLU': {
        const act = activationOf(l);
        if (!act)
          throw new UserError(
            `layer '${l.name}' (${l.className} ${cfg.activation ?? ''}) is not supported in the trainable top (linear, relu, relu6)`,
          );
        if (last && last.kind !== 'act' && last.act.fn === 'linear' && last.output === l.inbound[0]) {
          last.act = act;
          last.output = l.name;
        } else
          ops.push({ kind: 'act', layer: l.name, output: l.name, act, shape: l.shape as [number, number, number] });
        break;
      }
      case 'Dropout':
        continue; // identity at inference; the head has its own dropout
      default:
        throw new UserError(
          `layer '${l.name}' (${l.className}) is not supported in the trainable top (Conv2D, DepthwiseConv2D, BatchNormalization, ReLU/relu6, ZeroPadding2D, Dropout); choose a higher boundary`,
        );
    }
    if (pendingPads) throw new UserError(`ZeroPadding2D must be followed directly by a conv`);
    shape = l.shape as [number, number, number];
  }
  if (pendingPads) throw new UserError('the trainable top ends in a ZeroPadding2D');
  const ends = new Set(blockEnds(graph, cut));
  for (const l of chain) if (ends.has(l.name)) blocks++;
  if (c.shape.length !== 3) throw new UserError(`the cut layer '${cut}' must output a feature map [H, W, C]`);
  return {
    boundary,
    cut,
    layers: chain.map((l) => l.name),
    ops,
    inShape: b.shape as [number, number, number],
    outShape: c.shape as [number, number, number],
    blocks,
  };
}

function getWeight(weights: WeightMap, name: string): { shape: number[]; data: Float32Array } | undefined {
  return weights.get(name) ?? weights.get(`${name}:0`);
}

function requireWeight(weights: WeightMap, name: string): { shape: number[]; data: Float32Array } {
  const w = getWeight(weights, name);
  if (!w) throw new UserError(`weights for '${name}' are missing from the model's weight files`);
  return w;
}

/** Fill the frozen affine ops' constants from the pretrained weights (mutates the plan). */
export function bindAffine(plan: TopPlan, graph: KerasGraph, weights: WeightMap): void {
  for (const op of plan.ops) {
    if (op.kind !== 'affine') continue;
    const { scale, shift } = bnScaleShift(weights, findLayer(graph, op.layer));
    op.scale = scale;
    op.shift = shift;
  }
}

/** Initial trainable parameters of the top (BN folded into its conv): [kernel, bias] per conv op. */
export function initialTopParams(plan: TopPlan, graph: KerasGraph, weights: WeightMap): ParamTensor[] {
  bindAffine(plan, graph, weights);
  const out: ParamTensor[] = [];
  for (const op of plan.ops) {
    if (op.kind !== 'conv') continue;
    const layer = findLayer(graph, op.layer);
    const kName = op.type === 'Conv2D' ? 'kernel' : 'depthwise_kernel';
    const k = requireWeight(weights, `${op.layer}/${kName}`);
    const cout = k.shape[k.shape.length - 1]! * (op.type === 'DepthwiseConv2D' ? k.shape[2]! : 1);
    const bias =
      layer.config.use_bias === false
        ? new Float32Array(cout)
        : Float32Array.from(requireWeight(weights, `${op.layer}/bias`).data);
    const kernel = Float32Array.from(k.data);
    if (op.bn) {
      const { scale, shift } = bnScaleShift(weights, findLayer(graph, op.bn));
      // Output channel is the last axis for Conv2D [kh,kw,in,out]; for depthwise [kh,kw,in,1] it is the input channel.
      for (let i = 0; i < kernel.length; i++) kernel[i] = kernel[i]! * scale[i % cout]!;
      for (let o = 0; o < cout; o++) bias[o] = bias[o]! * scale[o]! + shift[o]!;
    }
    out.push({ name: `${op.layer}/kernel_folded`, shape: [...k.shape], data: kernel });
    out.push({ name: `${op.layer}/bias_folded`, shape: [cout], data: bias });
  }
  return out;
}

/**
 * Inverse of initialTopParams: the original Keras weights (conv kernel [+ bias], BN β) that make the
 * unfolded network compute what the folded top computes. BN moving statistics and γ are unchanged.
 */
export function unfoldTopParams(
  plan: TopPlan,
  graph: KerasGraph,
  weights: WeightMap,
  params: readonly ParamTensor[],
): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const op of plan.ops) {
    if (op.kind !== 'conv') continue;
    const layer = findLayer(graph, op.layer);
    const kName = op.type === 'Conv2D' ? 'kernel' : 'depthwise_kernel';
    const kf = params[op.param]!;
    const bf = params[op.param + 1]!;
    const cout = bf.data.length;
    const useBias = layer.config.use_bias !== false;
    if (!op.bn) {
      out.set(`${op.layer}/${kName}`, { shape: [...kf.shape], data: Float32Array.from(kf.data) });
      if (useBias) out.set(`${op.layer}/bias`, { shape: [cout], data: Float32Array.from(bf.data) });
      else if (bf.data.some((v) => v !== 0))
        throw new Error(`unfold: '${op.layer}' has no bias but its trained bias is non-zero`);
      continue;
    }
    const bnLayer = findLayer(graph, op.bn);
    const { scale, shift } = bnScaleShift(weights, bnLayer);
    const kernel = new Float32Array(kf.data.length);
    for (let i = 0; i < kernel.length; i++) {
      const s = scale[i % cout]!;
      if (s === 0) throw new Error(`unfold: BN '${op.bn}' has a zero scale`);
      kernel[i] = kf.data[i]! / s;
    }
    // Conv bias (if any) stays; β absorbs the change of the folded bias.
    const convBias = useBias ? requireWeight(weights, `${op.layer}/bias`).data : undefined;
    const beta0 = bnLayer.config.center === false ? undefined : requireWeight(weights, `${op.bn}/beta`).data;
    if (!beta0) throw new UserError(`BN '${op.bn}' has no beta (center=False): its folded bias cannot be exported`);
    const beta = new Float32Array(cout);
    for (let o = 0; o < cout; o++) {
      const b0 = (convBias ? convBias[o]! * scale[o]! : 0) + shift[o]!;
      beta[o] = beta0[o]! + (bf.data[o]! - b0);
    }
    out.set(`${op.layer}/${kName}`, { shape: [...kf.shape], data: kernel });
    out.set(`${op.bn}/beta`, { shape: [cout], data: beta });
  }
  return out;
}
