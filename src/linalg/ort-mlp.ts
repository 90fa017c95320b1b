import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { encodeModel, GraphBuilder } from '../onnx/write.ts';
import { DataType } from '../onnx/schema.ts';

/**
 * One Adam training step of a one-hidden-layer MLP (x → relu(x·W1ᵀ + b1) ⊙ dropout → softmax(·W2ᵀ + b2))
 * as a single ONNX Runtime graph: row gather, forward, backward (weighted cross-entropy) and the
 * Adam update of all four parameters run natively in one session.run.
 *
 * Why a graph and not JS loops around two GEMM calls: on the target machine a scalar JS pass over
 * the 77k first-layer weights costs ~1.5 ms (Adam alone was ~0.45 s of a 30-epoch fit), while
 * ORT's vectorised elementwise kernels do the same in a few tens of µs; with everything in one
 * run the per-step cost is the two ~30 MFLOP GEMMs plus ~50 small native ops.
 *
 * Layouts (row-major float32): W1 hidden×d, W2 K×hidden (both "out × in", so every product is a
 * Gemm with transA/transB and nothing is transposed per step). ORT's CPU kernels are
 * deterministic at one thread, so equal inputs give bit-identical outputs.
 */
export interface MlpParams {
  W1: Float32Array;
  b1: Float32Array;
  W2: Float32Array;
  b2: Float32Array;
}
const NAMES = ['W1', 'b1', 'W2', 'b2'] as const;

export interface MlpStepInput {
  /** All training rows, n×d (passed without copying; the step gathers its batch). */
  X: Float32Array;
  n: number;
  d: number;
  hidden: number;
  K: number;
  /** Batch row indices into X. */
  idx: Int32Array;
  /** Dropout scales bs×hidden (1/keep or 0). */
  mask: Float32Array;
  /** Per-row loss weights / bs (bs) and their one-hot spread (bs×K). */
  rowW: Float32Array;
  target: Float32Array;
  /** Adam scalars for this step: lr/(1−β₁ᵗ) and 1/(1−β₂ᵗ). */
  lrc: number;
  c2: number;
}

const sessions = new Map<string, Promise<InferenceSession>>();

function buildModel(beta1: number, beta2: number, eps: number, l2: number): Uint8Array {
  const g = new GraphBuilder();
  const op = g.op.bind(g);
  const int = (name: string, value: number) => ({ name, kind: 'int' as const, value });
  const scalar = (name: string, v: number) => g.sharedFloat(name, [], [v]);
  const B1 = scalar('beta1', beta1),
    OB1 = scalar('one_minus_beta1', 1 - beta1);
  const B2 = scalar('beta2', beta2),
    OB2 = scalar('one_minus_beta2', 1 - beta2);
  const EPS = scalar('eps', eps);
  const L2 = l2 > 0 ? scalar('l2', l2) : '';
  const axes0 = g.sharedInt64('axes0', [0]);
  // Forward.
  const x = op('Gather', ['X', 'idx'], [int('axis', 0)]);
  const z1 = op('Gemm', [x, 'W1', 'b1'], [int('transB', 1)]);
  const r = op('Relu', [z1]);
  const a = op('Mul', [r, 'mask']);
  const z2 = op('Gemm', [a, 'W2', 'b2'], [int('transB', 1)]);
  const p = op('Softmax', [z2], [int('axis', 1)]);
  // Backward: δ2 = w_i (p − onehot)/bs, δ1 = (δ2·W2) ⊙ mask ⊙ [z1 > 0].
  const d2 = op('Sub', [op('Mul', [p, 'rowW']), 'target']);
  let gW2 = op('Gemm', [d2, a], [int('transA', 1)]);
  const gb2 = op('ReduceSum', [d2, axes0], [int('keepdims', 0)]);
  const gate = op('Mul', ['mask', op('Sign', [r])]);
  const d1 = op('Mul', [op('MatMul', [d2, 'W2']), gate]);
  let gW1 = op('Gemm', [d1, x], [int('transA', 1)]);
  const gb1 = op('ReduceSum', [d1, axes0], [int('keepdims', 0)]);
  if (L2) {
    gW1 = op('Add', [gW1, op('Mul', ['W1', L2])]);
    gW2 = op('Add', [gW2, op('Mul', ['W2', L2])]);
  }
  // Adam: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², w ← w − lrc·m / (√(c2·v) + ε).
  const grads: Record<string, string> = { W1: gW1, b1: gb1, W2: gW2, b2: gb2 };
  for (const name of NAMES) {
    const g = grads[name]!;
    const m = op('Add', [op('Mul', [`m_${name}`, B1]), op('Mul', [g, OB1])], [], `m_${name}_out`);
    const v = op('Add', [op('Mul', [`v_${name}`, B2]), op('Mul', [op('Mul', [g, g]), OB2])], [], `v_${name}_out`);
    const den = op('Add', [op('Sqrt', [op('Mul', [v, 'c2'])]), EPS]);
    op('Sub', [name, op('Div', [op('Mul', [m, 'lrc']), den])], [], `${name}_out`);
  }
  const f = (name: string, shape: (number | string)[]) => ({ name, dataType: DataType.FLOAT, shape });
  const pShapes: Record<string, string[]> = { W1: ['H', 'D'], b1: ['H'], W2: ['K', 'H'], b2: ['K'] };
  const inputs = [
    f('X', ['N', 'D']),
    { name: 'idx', dataType: DataType.INT32, shape: ['B'] },
    f('mask', ['B', 'H']),
    f('rowW', ['B', 1]),
    f('target', ['B', 'K']),
    f('lrc', [1]),
    f('c2', [1]),
    ...NAMES.flatMap((nm) => [f(nm, pShapes[nm]!), f(`m_${nm}`, pShapes[nm]!), f(`v_${nm}`, pShapes[nm]!)]),
  ];
  const outputs = NAMES.flatMap((nm) => [
    f(`${nm}_out`, pShapes[nm]!),
    f(`m_${nm}_out`, pShapes[nm]!),
    f(`v_${nm}_out`, pShapes[nm]!),
  ]);
  return encodeModel({
    producer: 'convcache',
    opset: 13,
    graph: { name: 'mlp_adam_step', nodes: g.nodes, initializers: g.inits, inputs, outputs },
  });
}

function session(beta1: number, beta2: number, eps: number, l2: number): Promise<InferenceSession> {
  const key = `${beta1}:${beta2}:${eps}:${l2}`;
  let s = sessions.get(key);
  if (!s) {
    s = (async () => {
      const ort = await import('onnxruntime-node');
      return ort.InferenceSession.create(buildModel(beta1, beta2, eps, l2), {
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        extra: { session: { intra_op: { allow_spinning: '0' } } },
      });
    })();
    sessions.set(key, s);
  }
  return s;
}

/** Adam state for the four parameters. */
export interface MlpAdamState {
  params: MlpParams;
  m: MlpParams;
  v: MlpParams;
}

let ortModule: typeof import('onnxruntime-node') | undefined;

/** One step: returns the updated parameters and moments (fresh arrays; the inputs are not modified). */
export async function mlpAdamStep(
  st: MlpAdamState,
  inp: MlpStepInput,
  hyper: { beta1: number; beta2: number; eps: number; l2: number },
): Promise<MlpAdamState> {
  const ort = (ortModule ??= await import('onnxruntime-node'));
  const s = await session(hyper.beta1, hyper.beta2, hyper.eps, hyper.l2);
  const { d, hidden: H, K } = inp;
  const bs = inp.idx.length;
  const shapes: Record<string, number[]> = { W1: [H, d], b1: [H], W2: [K, H], b2: [K] };
  const T = (a: Float32Array, shape: number[]) => new ort.Tensor('float32', a, shape);
  const feeds: Record<string, Tensor> = {
    X: T(inp.X.subarray(0, inp.n * d), [inp.n, d]),
    idx: new ort.Tensor('int32', inp.idx, [bs]),
    mask: T(inp.mask.subarray(0, bs * H), [bs, H]),
    rowW: T(inp.rowW.subarray(0, bs), [bs, 1]),
    target: T(inp.target.subarray(0, bs * K), [bs, K]),
    lrc: T(Float32Array.of(inp.lrc), [1]),
    c2: T(Float32Array.of(inp.c2), [1]),
  };
  for (const nm of NAMES) {
    feeds[nm] = T(st.params[nm], shapes[nm]!);
    feeds[`m_${nm}`] = T(st.m[nm], shapes[nm]!);
    feeds[`v_${nm}`] = T(st.v[nm], shapes[nm]!);
  }
  const out = await s.run(feeds);
  const pick = (prefix: string): MlpParams => ({
    W1: out[`${prefix}W1_out`]!.data as Float32Array,
    b1: out[`${prefix}b1_out`]!.data as Float32Array,
    W2: out[`${prefix}W2_out`]!.data as Float32Array,
    b2: out[`${prefix}b2_out`]!.data as Float32Array,
  });
  return { params: pick(''), m: pick('m_'), v: pick('v_') };
}
