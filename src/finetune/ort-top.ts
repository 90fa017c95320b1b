import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { encodeModel, GraphBuilder, type OnnxAttr, type OnnxValueInfo } from '../onnx/write.ts';
import { DataType } from '../onnx/schema.ts';
import type { Act, ConvOp, ParamTensor, TopPlan } from './plan.ts';
import type { AdamState, OptimizerConfig, TopEngine } from './top-engine.ts';

/**
 * The trainable top of a split network (plan.ts) as ONNX Runtime graphs: one `session.run` does a
 * whole optimisation step — forward through the unfrozen conv ops, global average pooling, dropout,
 * dense + softmax cross-entropy, the hand-derived backward pass and the Adam/RMSprop update of every
 * trainable parameter. Same mathematics, parameter layouts (TF/Keras: conv kernels [kh, kw, cin,
 * cout], depthwise [kh, kw, c, 1], head [C, K]) and optimiser formulas as the TF.js TopModel, so
 * checkpoints, export and resume are shared; the tests check both give the same step.
 *
 * Why: on the 2-core target TF.js's wasm backend runs one thread; ORT's MLAS kernels use both cores.
 * `convcache bench finetune-step` (batch 32, 288 px): top 1 / 2 / 4 MobileNet blocks 185 / 380 / 862
 * ms per step in ORT vs 1008 / 1557 / 5073 ms in TF.js. Backward pieces: a 1×1 conv's kernel gradient is one GEMM over (batch·H·W); other
 * kernels' gradients are one product per tap (strided Slice of the padded input × output gradient,
 * reduced); input gradients are ConvTranspose with the same weights (group = C for depthwise).
 */
type Feeds = Record<string, Tensor>;

const int = (name: string, value: number): OnnxAttr => ({ name, kind: 'int', value });
const ints = (name: string, value: readonly number[]): OnnxAttr => ({ name, kind: 'ints', value });
const fl = (name: string, dims: (number | string)[]): OnnxValueInfo => ({
  name,
  dataType: DataType.FLOAT,
  shape: dims,
});

/** ONNX kernel layout from the Keras one: Conv2D [kh,kw,cin,cout] → [cout,cin,kh,kw]; depthwise [kh,kw,c,1] → [c,1,kh,kw]. */
function onnxKernel(g: GraphBuilder, op: ConvOp, W: string): string {
  return g.op('Transpose', [W], [ints('perm', op.type === 'DepthwiseConv2D' ? [2, 3, 0, 1] : [3, 2, 0, 1])]);
}

function activate(g: GraphBuilder, z: string, act: Act): string {
  if (act.fn === 'linear') return z;
  if (act.max === undefined) return g.op('Relu', [z]);
  return g.op('Clip', [z, g.sharedFloat('zero', [], [0]), g.sharedFloat(`max_${act.max}`, [], [act.max])]);
}

/** d(act)/dz as 0/1 from the activation output y (TF.js's step(y)·step(max − y)). */
function activationGate(g: GraphBuilder, y: string, act: Act): string | undefined {
  if (act.fn === 'linear') return undefined;
  let on = g.op('Greater', [y, g.sharedFloat('zero', [], [0])]);
  if (act.max !== undefined) on = g.op('And', [on, g.op('Less', [y, g.sharedFloat(`max_${act.max}`, [], [act.max])])]);
  return g.op('Cast', [on], [int('to', DataType.FLOAT)]);
}

function isPointwise(op: ConvOp): boolean {
  return (
    op.type === 'Conv2D' &&
    op.kernel[0] === 1 &&
    op.kernel[1] === 1 &&
    op.strides[0] === 1 &&
    op.strides[1] === 1 &&
    op.pads.every((p) => p === 0)
  );
}

/** [N, C, H, W] → [C, N·H·W] */
function channelsByRows(g: GraphBuilder, x: string, c: number): string {
  return g.op('Reshape', [
    g.op('Transpose', [x], [ints('perm', [1, 0, 2, 3])]),
    g.sharedInt64(`shape_${c}_m1`, [c, -1]),
  ]);
}

interface Saved {
  input: string;
  y: string;
}

/** Forward through the plan's ops on NCHW `x`; records each op's input and output. */
function topForward(g: GraphBuilder, plan: TopPlan, x: string, params: string[], saved: Saved[]): string {
  let cur = x;
  for (const op of plan.ops) {
    const input = cur;
    if (op.kind === 'conv') {
      const [t, l, b, r] = op.pads;
      const group = op.type === 'DepthwiseConv2D' ? op.inShape[2] : 1;
      const z = g.op(
        'Conv',
        [cur, onnxKernel(g, op, params[op.param]!), params[op.param + 1]!],
        [ints('kernel_shape', op.kernel), ints('strides', op.strides), ints('pads', [t, l, b, r]), int('group', group)],
      );
      cur = activate(g, z, op.act);
    } else if (op.kind === 'affine') {
      const c = op.shape[2];
      const z = g.op('Add', [
        g.op('Mul', [cur, g.sharedFloat(`${op.layer}_scale`, [1, c, 1, 1], op.scale)]),
        g.sharedFloat(`${op.layer}_shift`, [1, c, 1, 1], op.shift),
      ]);
      cur = activate(g, z, op.act);
    } else cur = activate(g, cur, op.act);
    saved.push({ input, y: cur });
  }
  return cur;
}

/** Gradients of one conv op given dz (gradient at its pre-activation output). */
function convBackward(
  g: GraphBuilder,
  op: ConvOp,
  s: Saved,
  dz: string,
  W: string,
  needInput: boolean,
): { dW: string; db: string; dx?: string } {
  const [h, w, cin] = op.inShape;
  const [ho, wo, cout] = op.outShape;
  const [kh, kw] = op.kernel;
  const [sh, sw] = op.strides;
  const [t, l, b, r] = op.pads;
  const db = g.op('ReduceSum', [dz, g.sharedInt64('axes_023', [0, 2, 3])], [int('keepdims', 0)]);
  let dW: string;
  if (isPointwise(op)) {
    // [cin, N·H·W] · [cout, N·H·W]ᵀ = [cin, cout] = the Keras kernel layout.
    dW = g.op('Reshape', [
      g.op('Gemm', [channelsByRows(g, s.input, cin), channelsByRows(g, dz, cout)], [int('transB', 1)]),
      g.sharedInt64(`shape_1_1_${cin}_${cout}`, [1, 1, cin, cout]),
    ]);
  } else {
    const xp =
      t || l || b || r
        ? g.op('Pad', [s.input, g.sharedInt64(`pads_${t}_${l}_${b}_${r}`, [0, 0, t, l, 0, 0, b, r])])
        : s.input;
    const dzRows = op.type === 'DepthwiseConv2D' ? undefined : channelsByRows(g, dz, cout);
    const taps: string[] = [];
    for (let ky = 0; ky < kh; ky++)
      for (let kx = 0; kx < kw; kx++) {
        const tap = g.op('Slice', [
          xp,
          g.sharedInt64(`st_${ky}_${kx}`, [ky, kx]),
          g.sharedInt64(`en_${ky + sh * (ho - 1) + 1}_${kx + sw * (wo - 1) + 1}`, [
            ky + sh * (ho - 1) + 1,
            kx + sw * (wo - 1) + 1,
          ]),
          g.sharedInt64('axes_23', [2, 3]),
          g.sharedInt64(`steps_${sh}_${sw}`, [sh, sw]),
        ]);
        if (op.type === 'DepthwiseConv2D') {
          // Σ_{n,i,j} x[n, c, ky+s·i, kx+s·j]·dz[n, c, i, j] → [1, c]
          taps.push(
            g.op('ReduceSum', [g.op('Mul', [tap, dz]), g.sharedInt64('axes_023', [0, 2, 3])], [int('keepdims', 0)]),
          );
        } else {
          taps.push(g.op('Gemm', [channelsByRows(g, tap, cin), dzRows!], [int('transB', 1)]));
        }
      }
    // Taps in (ky, kx) order stack into the Keras layout [kh, kw, cin, cout] (depthwise: cout = 1).
    const stacked = g.op(
      'Concat',
      taps.map((x) => g.op('Unsqueeze', [x, g.sharedInt64('axes_0', [0])])),
      [int('axis', 0)],
    );
    dW = g.op('Reshape', [
      stacked,
      g.sharedInt64(`shape_${kh}_${kw}_${cin}_${op.type === 'DepthwiseConv2D' ? 1 : cout}`, [
        kh,
        kw,
        cin,
        op.type === 'DepthwiseConv2D' ? 1 : cout,
      ]),
    ]);
  }
  let dx: string | undefined;
  if (needInput) {
    if (isPointwise(op)) {
      dx = g.op('Conv', [dz, g.op('Transpose', [W], [ints('perm', [2, 3, 0, 1])])], [ints('kernel_shape', [1, 1])]); // [cin, cout, 1, 1]
    } else {
      const group = op.type === 'DepthwiseConv2D' ? cin : 1;
      const outPad = [h - (sh * (ho - 1) + kh - t - b), w - (sw * (wo - 1) + kw - l - r)];
      dx = g.op(
        'ConvTranspose',
        [dz, onnxKernel(g, op, W)],
        [
          ints('kernel_shape', op.kernel),
          ints('strides', op.strides),
          ints('pads', [t, l, b, r]),
          int('group', group),
          ints('output_padding', outPad),
        ],
      );
    }
  }
  return { dW, db, dx };
}

export interface TopGraphOptions {
  /** true: input = boundary activations, the conv top trains; false: input = pooled features, the head alone trains. */
  trainTop: boolean;
  optimizer: OptimizerConfig['kind'];
  beta1: number;
  beta2: number;
  rho: number;
  epsilon: number;
}

/**
 * The training-step graph. Inputs: x (NHWC boundary activations flattened [N, H·W·C], or pooled
 * [N, C]), mask [N, C] (dropout, scaled), onehot [N, K], invN [] (1/N), lr [] (the step's
 * learning rate: Adam's bias-corrected lr_t), every parameter and its optimiser moments. Outputs:
 * logits and the updated parameters/moments (`<name>_out`).
 */
export function buildTrainStepModel(
  plan: TopPlan,
  shapes: readonly number[][],
  K: number,
  o: TopGraphOptions,
): Uint8Array {
  const g = new GraphBuilder();
  const nTop = shapes.length - 2;
  const params = shapes.map((_, i) => `p${i}`);
  const trainable = o.trainTop ? params.map((_, i) => i) : [nTop, nTop + 1];
  const [bh, bw, bc] = plan.inShape;
  const [fh, fw, fc] = plan.outShape;
  const saved: Saved[] = [];
  let pooled: string;
  if (o.trainTop) {
    const x4 = g.op(
      'Transpose',
      [g.op('Reshape', ['x', g.sharedInt64('shape_in', [-1, bh, bw, bc])])],
      [ints('perm', [0, 3, 1, 2])],
    );
    pooled = g.op('ReduceMean', [topForward(g, plan, x4, params, saved)], [ints('axes', [2, 3]), int('keepdims', 0)]);
  } else pooled = 'x';
  const hdn = g.op('Mul', [pooled, 'mask']);
  const Wh = params[nTop]!,
    bhd = params[nTop + 1]!;
  g.op('Gemm', [hdn, Wh, bhd], [], 'logits');
  // Backward: dlogits = (softmax − onehot)/N.
  const dlogits = g.op('Mul', [g.op('Sub', [g.op('Softmax', ['logits'], [int('axis', 1)]), 'onehot']), 'invN']);
  const grads = new Map<number, string>();
  grads.set(nTop, g.op('Gemm', [hdn, dlogits], [int('transA', 1)]));
  grads.set(nTop + 1, g.op('ReduceSum', [dlogits, g.sharedInt64('axes_0', [0])], [int('keepdims', 0)]));
  if (o.trainTop) {
    const dpooled = g.op('Mul', [g.op('Gemm', [dlogits, Wh], [int('transB', 1)]), 'mask']);
    // Spread over H×W: [N, C, 1, 1] · (1/HW everywhere) [1, 1, H, W].
    let d = g.op('Mul', [
      g.op('Unsqueeze', [dpooled, g.sharedInt64('axes_23', [2, 3])]),
      g.sharedFloat('spread', [1, 1, fh, fw], new Float32Array(fh * fw).fill(1 / (fh * fw))),
    ]);
    if (plan.ops.length && plan.ops[plan.ops.length - 1]!.act.fn === 'linear') {
      d = g.op('Expand', [d, g.op('Shape', [saved[saved.length - 1]!.y])]);
    }
    void fc;
    const firstConv = plan.ops.findIndex((op) => op.kind === 'conv');
    for (let i = plan.ops.length - 1; firstConv >= 0 && i >= firstConv; i--) {
      const op = plan.ops[i]!;
      const s = saved[i]!;
      const gate = activationGate(g, s.y, op.act);
      const dz = gate ? g.op('Mul', [d, gate]) : d;
      if (op.kind === 'conv') {
        const r = convBackward(g, op, s, dz, params[op.param]!, i > firstConv);
        grads.set(op.param, r.dW);
        grads.set(op.param + 1, r.db);
        if (r.dx) d = r.dx;
      } else if (op.kind === 'affine')
        d = g.op('Mul', [dz, g.sharedFloat(`${op.layer}_scale`, [1, op.shape[2], 1, 1], op.scale)]);
      else d = dz;
    }
  }
  // Optimiser updates (formulas of TopModel.applyOptimizer).
  const one = (v: number, name: string): string => g.sharedFloat(name, [], [v]);
  const eps = one(o.epsilon, 'eps');
  const outputs: OnnxValueInfo[] = [fl('logits', ['N', K])];
  for (const i of trainable) {
    const p = params[i]!;
    const gr = grads.get(i);
    if (!gr) throw new Error(`internal: no gradient for parameter ${i}`);
    const g2 = g.op('Mul', [gr, gr]);
    if (o.optimizer === 'adam') {
      const m = g.op(
        'Add',
        [g.op('Mul', [`m${i}`, one(o.beta1, 'b1')]), g.op('Mul', [gr, one(1 - o.beta1, 'ob1')])],
        [],
        `m${i}_out`,
      );
      const v = g.op(
        'Add',
        [g.op('Mul', [`v${i}`, one(o.beta2, 'b2')]), g.op('Mul', [g2, one(1 - o.beta2, 'ob2')])],
        [],
        `v${i}_out`,
      );
      g.op('Sub', [p, g.op('Mul', [g.op('Div', [m, g.op('Add', [g.op('Sqrt', [v]), eps])]), 'lr'])], [], `p${i}_out`);
      outputs.push(fl(`p${i}_out`, shapes[i]!), fl(`m${i}_out`, shapes[i]!), fl(`v${i}_out`, shapes[i]!));
    } else {
      const v = g.op(
        'Add',
        [g.op('Mul', [`v${i}`, one(o.rho, 'rho')]), g.op('Mul', [g2, one(1 - o.rho, 'orho')])],
        [],
        `v${i}_out`,
      );
      g.op('Sub', [p, g.op('Mul', [g.op('Div', [gr, g.op('Add', [g.op('Sqrt', [v]), eps])]), 'lr'])], [], `p${i}_out`);
      outputs.push(fl(`p${i}_out`, shapes[i]!), fl(`v${i}_out`, shapes[i]!));
    }
  }
  const inputs: OnnxValueInfo[] = [
    fl('x', ['N', o.trainTop ? bh * bw * bc : fc]),
    fl('mask', ['N', fc]),
    fl('onehot', ['N', K]),
    fl('invN', []),
    fl('lr', []),
    ...params.map((p, i) => fl(p, shapes[i]!)),
    ...trainable.flatMap((i) =>
      o.optimizer === 'adam' ? [fl(`m${i}`, shapes[i]!), fl(`v${i}`, shapes[i]!)] : [fl(`v${i}`, shapes[i]!)],
    ),
  ];
  // Parameters that do not train are still inputs (the head graph ignores the conv ones: drop them).
  const used = new Set(g.nodes.flatMap((n) => n.inputs));
  return encodeModel({
    producer: 'convcache',
    opset: 13,
    graph: {
      name: 'top_train_step',
      nodes: g.nodes,
      initializers: g.inits,
      inputs: inputs.filter((v) => used.has(v.name)),
      outputs,
    },
  });
}

/** Inference graph: x (boundary activations NHWC [N, H·W·C], or pooled [N, C]) → class probabilities. */
export function buildPredictModel(
  plan: TopPlan,
  shapes: readonly number[][],
  K: number,
  fromPooled: boolean,
): Uint8Array {
  const g = new GraphBuilder();
  const nTop = shapes.length - 2;
  const params = shapes.map((_, i) => `p${i}`);
  const [bh, bw, bc] = plan.inShape;
  const fc = plan.outShape[2];
  let pooled = 'x';
  if (!fromPooled) {
    const x4 = g.op(
      'Transpose',
      [g.op('Reshape', ['x', g.sharedInt64('shape_in', [-1, bh, bw, bc])])],
      [ints('perm', [0, 3, 1, 2])],
    );
    pooled = g.op('ReduceMean', [topForward(g, plan, x4, params, [])], [ints('axes', [2, 3]), int('keepdims', 0)]);
  }
  g.op('Softmax', [g.op('Gemm', [pooled, params[nTop]!, params[nTop + 1]!])], [int('axis', 1)], 'probs');
  const used = new Set(g.nodes.flatMap((n) => n.inputs));
  const inputs = [fl('x', ['N', fromPooled ? fc : bh * bw * bc]), ...params.map((p, i) => fl(p, shapes[i]!))].filter(
    (v) => used.has(v.name),
  );
  return encodeModel({
    producer: 'convcache',
    opset: 13,
    graph: { name: 'top_predict', nodes: g.nodes, initializers: g.inits, inputs, outputs: [fl('probs', ['N', K])] },
  });
}

let ortModule: typeof import('onnxruntime-node') | undefined;

/**
 * The trainable top on ONNX Runtime, with TopModel's state API (values / setValues / optimiser
 * state) so the recipe, checkpoints and export treat both engines alike.
 */
export class OrtTop implements TopEngine {
  readonly name = 'ort' as const;
  private params: Float32Array[];
  private readonly shapes: number[][];
  private m: Float32Array[] = [];
  private v: Float32Array[] = [];
  step = 0;
  private sessions = new Map<string, Promise<InferenceSession>>();

  constructor(
    readonly plan: TopPlan,
    values: readonly ParamTensor[],
    readonly nClasses: number,
    private readonly threads: number,
  ) {
    this.params = values.map((p) => Float32Array.from(p.data));
    this.shapes = values.map((p) => [...p.shape]);
  }

  get headIndex(): number {
    return this.params.length - 2;
  }

  values(names: readonly string[]): ParamTensor[] {
    return this.params.map((d, i) => ({ name: names[i]!, shape: [...this.shapes[i]!], data: Float32Array.from(d) }));
  }

  setValues(values: readonly ParamTensor[]): void {
    this.params = values.map((p) => Float32Array.from(p.data));
  }

  resetOptimizer(): void {
    this.m = [];
    this.v = [];
    this.step = 0;
  }

  getOptimizerState(): AdamState {
    return { step: this.step, m: this.m.map((a) => Float32Array.from(a)), v: this.v.map((a) => Float32Array.from(a)) };
  }

  setOptimizerState(s: AdamState, _from: number): void {
    this.m = s.m.map((a) => Float32Array.from(a));
    this.v = s.v.map((a) => Float32Array.from(a));
    this.step = s.step;
  }

  private session(key: string, build: () => Uint8Array): Promise<InferenceSession> {
    let s = this.sessions.get(key);
    if (!s) {
      s = (async () => {
        const ort = (ortModule ??= await import('onnxruntime-node'));
        return ort.InferenceSession.create(build(), {
          intraOpNumThreads: this.threads,
          interOpNumThreads: 1,
          graphOptimizationLevel: 'all',
          extra: { session: { intra_op: { allow_spinning: '0' } } },
        });
      })();
      this.sessions.set(key, s);
    }
    return s;
  }

  private paramFeeds(ort: typeof import('onnxruntime-node'), inputNames: readonly string[], feeds: Feeds): void {
    for (let i = 0; i < this.params.length; i++) {
      if (inputNames.includes(`p${i}`)) feeds[`p${i}`] = new ort.Tensor('float32', this.params[i]!, this.shapes[i]!);
    }
  }

  /**
   * One optimisation step on a batch: x = boundary activations NHWC [bs·H·W·C] (trainTop) or pooled
   * features [bs·C]; `mask` the dropout scales [bs·C] or undefined. Returns mean loss and number correct.
   */
  async trainStep(
    x: Float32Array,
    bs: number,
    labels: Int32Array,
    mask: Float32Array | undefined,
    opt: OptimizerConfig,
    trainTop: boolean,
    targets?: Float32Array,
  ): Promise<{ loss: number; correct: number }> {
    const ort = (ortModule ??= await import('onnxruntime-node'));
    const o: TopGraphOptions = {
      trainTop,
      optimizer: opt.kind,
      beta1: opt.beta1 ?? 0.9,
      beta2: opt.beta2 ?? 0.999,
      rho: opt.rho ?? 0.9,
      epsilon: opt.epsilon ?? 1e-7,
    };
    const s = await this.session(`train:${JSON.stringify(o)}`, () =>
      buildTrainStepModel(this.plan, this.shapes, this.nClasses, o),
    );
    const K = this.nClasses;
    const C = this.plan.outShape[2];
    const inDim = trainTop ? this.plan.inShape.reduce((a, b) => a * b, 1) : C;
    const from = trainTop ? 0 : this.headIndex;
    const trainable = this.params.length - from;
    if (this.m.length !== trainable && opt.kind === 'adam')
      this.m = this.shapes.slice(from).map((sh) => new Float32Array(sh.reduce((a, b) => a * b, 1)));
    if (this.v.length !== trainable)
      this.v = this.shapes.slice(from).map((sh) => new Float32Array(sh.reduce((a, b) => a * b, 1)));
    const t = this.step + 1;
    const lr = opt.kind === 'adam' ? (opt.lr * Math.sqrt(1 - o.beta2 ** t)) / (1 - o.beta1 ** t) : opt.lr;
    // The graph's `onehot` input is the target distribution: one-hot labels, or soft targets.
    const onehot = targets ? Float32Array.from(targets.subarray(0, bs * K)) : new Float32Array(bs * K);
    if (!targets) for (let r = 0; r < bs; r++) onehot[r * K + labels[r]!] = 1;
    const feeds: Feeds = {
      x: new ort.Tensor('float32', x.subarray(0, bs * inDim), [bs, inDim]),
      mask: new ort.Tensor('float32', mask ? mask.subarray(0, bs * C) : new Float32Array(bs * C).fill(1), [bs, C]),
      onehot: new ort.Tensor('float32', onehot, [bs, K]),
      invN: new ort.Tensor('float32', Float32Array.of(1 / bs), []),
      lr: new ort.Tensor('float32', Float32Array.of(lr), []),
    };
    this.paramFeeds(ort, s.inputNames, feeds);
    for (let j = 0; j < trainable; j++) {
      const i = from + j;
      if (opt.kind === 'adam') feeds[`m${i}`] = new ort.Tensor('float32', this.m[j]!, this.shapes[i]!);
      feeds[`v${i}`] = new ort.Tensor('float32', this.v[j]!, this.shapes[i]!);
    }
    const out = await s.run(feeds);
    for (let j = 0; j < trainable; j++) {
      const i = from + j;
      this.params[i] = out[`p${i}_out`]!.data as Float32Array;
      if (opt.kind === 'adam') this.m[j] = out[`m${i}_out`]!.data as Float32Array;
      this.v[j] = out[`v${i}_out`]!.data as Float32Array;
    }
    this.step++;
    const logits = out.logits!.data as Float32Array;
    let loss = 0,
      correct = 0;
    for (let r = 0; r < bs; r++) {
      const row = logits.subarray(r * K, (r + 1) * K);
      let mx = -Infinity,
        arg = 0;
      for (let c = 0; c < K; c++)
        if (row[c]! > mx) {
          mx = row[c]!;
          arg = c;
        }
      let se = 0;
      for (let c = 0; c < K; c++) se += Math.exp(row[c]! - mx);
      // Cross-entropy against the target distribution: Σ_c t_c·(logsumexp − z_c).
      const lse = Math.log(se) + mx;
      for (let c = 0; c < K; c++) loss += onehot[r * K + c]! * (lse - row[c]!);
      if (arg === labels[r]) correct++;
    }
    return { loss: loss / bs, correct };
  }

  /** Class probabilities [n·K]: from boundary activations (NHWC, flattened) or, with `pooled`, from pooled features. */
  async predict(x: Float32Array, n: number, pooled: boolean): Promise<Float32Array> {
    const ort = (ortModule ??= await import('onnxruntime-node'));
    const s = await this.session(`predict:${pooled}`, () =>
      buildPredictModel(this.plan, this.shapes, this.nClasses, pooled),
    );
    const inDim = pooled ? this.plan.outShape[2] : this.plan.inShape.reduce((a, b) => a * b, 1);
    const feeds: Feeds = { x: new ort.Tensor('float32', x.subarray(0, n * inDim), [n, inDim]) };
    this.paramFeeds(ort, s.inputNames, feeds);
    const out = await s.run(feeds);
    return out.probs!.data as Float32Array;
  }

  async dispose(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}
