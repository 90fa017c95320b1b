import { matTvec, matvec, ResidentMatrix } from '../linalg/matmul.ts';
import { Rng } from '../linalg/random.ts';
import { RunningMoments } from './standardize.ts';
import { classWeightsFromCounts, type ParamSpecs } from './common.ts';
import type { FitOptions, HeadParams, Matrix, RowBatches } from './types.ts';

export type { RowBatch, RowBatches } from './types.ts';

/**
 * Linear models trained by mini-batches (logistic regression, the squared-hinge linear SVM) for
 * training sets past their heads' `minibatchAbove` rows. The rows come from a `RowBatches` source
 * — an in-memory matrix (`matrixBatches`) or a feature cache read batch by batch from disk
 * (`src/store/batches.ts`) — so the solver's own memory is one batch plus O(classes × d), whatever
 * the number of rows (L-BFGS kept n × classes scores and residuals; the dual solver n dual variables).
 *
 * Same objective as the exact solvers, divided by n:
 *   (1/n) Σ_i w_i · loss(x_i) + (α/2) ‖W‖²,  α = 1/(C·n)
 * (logistic: scikit-learn's Σ loss + ‖W‖²/(2C); squared hinge: liblinear's ½‖w‖² + C Σ loss, whose
 * bias penalty is dropped here: at n > 20 000 rows its weight 1/(C·n) moves nothing measurable).
 *
 * Conditioning: pooled ReLU features are non-negative with means far from zero and scales that
 * differ by orders of magnitude, which makes plain SGD crawl. The solver therefore works on
 * standardised inputs u = (x − μ)/s, with μ and s from one streaming pass, and maps the result
 * back (w = v/s, b = c − Σ v·μ/s). The penalty is kept on the original weights (α/2 Σ (v_j/s_j)²),
 * so the optimum is the exact head's, only the path to it is better conditioned. Adam (Kingma & Ba
 * 2015) with a cosine learning-rate decay to zero, seeded shuffles; the last iterate is returned.
 */

/** An in-memory matrix as a RowBatches source: shuffled passes gather rows into one reused buffer. */
export function matrixBatches(X: Matrix, y: Int32Array): RowBatches {
  const { rows: n, cols: d, data } = X;
  return {
    rows: n,
    cols: d,
    *pass(batchRows, shuffle) {
      if (!shuffle) {
        for (let s = 0; s < n; s += batchRows) {
          const e = Math.min(n, s + batchRows);
          yield { X: { data: data.subarray(s * d, e * d), rows: e - s, cols: d }, y: y.subarray(s, e) };
        }
        return;
      }
      const order = Int32Array.from({ length: n }, (_, i) => i);
      const rng = new Rng(shuffle.seed);
      for (let i = n - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        const t = order[i]!;
        order[i] = order[j]!;
        order[j] = t;
      }
      const bx = new Float32Array(batchRows * d);
      const by = new Int32Array(batchRows);
      for (let s = 0; s < n; s += batchRows) {
        const e = Math.min(n, s + batchRows);
        for (let t = s; t < e; t++) {
          const i = order[t]!;
          bx.set(data.subarray(i * d, (i + 1) * d), (t - s) * d);
          by[t - s] = y[i]!;
        }
        yield { X: { data: bx.subarray(0, (e - s) * d), rows: e - s, cols: d }, y: by.subarray(0, e - s) };
      }
    },
  };
}

/** Per-class counts and per-feature mean / standard deviation in one streaming pass. */
export async function batchStatistics(
  src: RowBatches,
  nClasses: number,
): Promise<{ counts: Float64Array; mean: Float64Array; scale: Float64Array }> {
  const moments = new RunningMoments(src.cols);
  const counts = new Float64Array(nClasses);
  for await (const b of src.pass(8192)) {
    moments.add(b.X);
    for (let i = 0; i < b.y.length; i++) counts[b.y[i]!]!++;
  }
  const { mean, scale } = moments.result();
  return { counts, mean, scale };
}

/** Fewest Adam steps a fit takes, however few rows (see fitLinearMinibatch). */
export const MIN_STEPS = 3000;

export type MinibatchLoss = 'logistic' | 'squared_hinge';

export interface MinibatchOptions {
  /** 'logistic': binary (one score) or multinomial (K scores); 'squared_hinge': one-vs-rest (K scores, one for 2 classes). */
  loss: MinibatchLoss;
  nClasses: number;
  C: number;
  /** Weight per class multiplying each row's loss: 'none', 'balanced' (from the streamed class counts) or given. */
  classWeight: FitOptions['classWeight'] | ArrayLike<number>;
  epochs: number;
  batchRows: number;
  /** Adam's initial step (on standardised inputs). */
  lr: number;
  seed: number;
}

export interface MinibatchResult {
  /** nScores × d weights on the original features, and nScores biases. */
  W: Float64Array;
  b: Float64Array;
  nScores: number;
  epochs: number;
  /** Mean loss of the last epoch (objective without the penalty), for diagnostics. */
  lastLoss: number;
}

/** Train a linear model by mini-batch Adam over `src` (see the module comment). */
export async function fitLinearMinibatch(src: RowBatches, o: MinibatchOptions): Promise<MinibatchResult> {
  const d = src.cols;
  const n = src.rows;
  const K = o.nClasses;
  const R = K === 2 ? 1 : K;
  const { mean, scale, counts } = await batchStatistics(src, K);
  const cw =
    typeof o.classWeight === 'object' ? o.classWeight : classWeightsFromCounts(counts, o.classWeight ?? 'none');
  const inv = new Float64Array(d);
  for (let j = 0; j < d; j++) inv[j] = 1 / scale[j]!;
  const alpha = 1 / (o.C * n);
  // Penalty on the original weights, expressed in standardised coordinates: α·v_j / s_j².
  const pen = new Float64Array(d);
  for (let j = 0; j < d; j++) pen[j] = alpha * inv[j]! * inv[j]!;
  const P = R * (d + 1); // [V row 0 … V row R−1, c]
  const theta = new Float64Array(P);
  const m1 = new Float64Array(P);
  const m2 = new Float64Array(P);
  const grad = new Float64Array(P);
  const B = o.batchRows;
  const U = new Float32Array(B * d);
  const Z = new Float64Array(B * R);
  const beta1 = 0.9,
    beta2 = 0.999,
    eps = 1e-8;
  const stepsPerEpoch = Math.ceil(n / B);
  // Small sets (a forced solver=minibatch, tests) would get too few Adam steps from `epochs` alone
  // (2000 rows × 10 epochs = 80 steps: measured 4 points below L-BFGS); give them MIN_STEPS.
  const epochs = Math.max(o.epochs, Math.ceil(MIN_STEPS / stepsPerEpoch));
  const total = stepsPerEpoch * epochs;
  let step = 0;
  let lastLoss = NaN;
  for (let epoch = 0; epoch < epochs; epoch++) {
    let lossSum = 0;
    let seen = 0;
    for await (const batch of src.pass(B, { seed: o.seed * 1000003 + epoch })) {
      const m = batch.X.rows;
      const x = batch.X.data;
      // Standardise the batch (float32, like the cache; the products use the SIMD kernels when
      // available: a batch is copied once into their memory, then 2·R matrix-vector products).
      for (let i = 0; i < m; i++) {
        const o2 = i * d;
        for (let j = 0; j < d; j++) U[o2 + j] = (x[o2 + j]! - mean[j]!) * inv[j]!;
      }
      const res = ResidentMatrix.create(U, m, d);
      // Scores.
      for (let r = 0; r < R; r++) {
        if (res) res.matvec(theta, r * d, Z, R, r, theta[R * d + r]!);
        else matvec(U, m, d, theta, r * d, Z, R, r, theta[R * d + r]!);
      }
      // Loss and dLoss/dscore (weighted, / m), written back into Z.
      for (let i = 0; i < m; i++) {
        const yi = batch.y[i]!;
        const w = cw[yi]! / m;
        const zo = i * R;
        if (o.loss === 'logistic' && R === 1) {
          const z = Z[zo]!;
          const t = yi === 1 ? 1 : -1;
          const mg = t * z;
          lossSum += w * m * (mg > 0 ? Math.log1p(Math.exp(-mg)) : -mg + Math.log1p(Math.exp(mg)));
          Z[zo] = w * (1 / (1 + Math.exp(-z)) - (t === 1 ? 1 : 0));
        } else if (o.loss === 'logistic') {
          let mx = -Infinity;
          for (let r = 0; r < R; r++) if (Z[zo + r]! > mx) mx = Z[zo + r]!;
          let s = 0;
          for (let r = 0; r < R; r++) s += Math.exp(Z[zo + r]! - mx);
          const lse = mx + Math.log(s);
          lossSum += w * m * (lse - Z[zo + yi]!);
          for (let r = 0; r < R; r++) Z[zo + r] = w * (Math.exp(Z[zo + r]! - lse) - (r === yi ? 1 : 0));
        } else {
          for (let r = 0; r < R; r++) {
            const t = (R === 1 ? yi === 1 : yi === r) ? 1 : -1;
            const mg = 1 - t * Z[zo + r]!;
            if (mg > 0) {
              lossSum += w * m * mg * mg;
              Z[zo + r] = -2 * w * mg * t;
            } else Z[zo + r] = 0;
          }
        }
      }
      seen += m;
      // Gradient: Σ_i Z_ir u_i + penalty; bias: Σ_i Z_ir.
      for (let r = 0; r < R; r++) {
        const vr = r * d;
        if (res) res.matTvec(Z, R, r, grad, vr);
        else matTvec(U, m, d, Z, R, r, grad, vr);
        for (let j = 0; j < d; j++) grad[vr + j]! += pen[j]! * theta[vr + j]!;
        let gb = 0;
        for (let i = 0; i < m; i++) gb += Z[i * R + r]!;
        grad[R * d + r] = gb;
      }
      // Adam step with a cosine-decayed rate.
      step++;
      const lr = o.lr * 0.5 * (1 + Math.cos((Math.PI * Math.min(step - 1, total)) / total));
      const c1 = 1 - Math.pow(beta1, step),
        c2 = 1 - Math.pow(beta2, step);
      for (let p = 0; p < P; p++) {
        const g = grad[p]!;
        const a = (m1[p] = beta1 * m1[p]! + (1 - beta1) * g);
        const v = (m2[p] = beta2 * m2[p]! + (1 - beta2) * g * g);
        theta[p]! -= (lr * (a / c1)) / (Math.sqrt(v / c2) + eps);
      }
    }
    lastLoss = lossSum / Math.max(1, seen);
  }
  // Back to the original features: w = v / s, b = c − Σ_j v_j μ_j / s_j.
  const W = new Float64Array(R * d);
  const b = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    let bias = theta[R * d + r]!;
    for (let j = 0; j < d; j++) {
      const w = theta[r * d + j]! * inv[j]!;
      W[r * d + j] = w;
      bias -= w * mean[j]!;
    }
    b[r] = bias;
  }
  return { W, b, nScores: R, epochs, lastLoss };
}

/** The mini-batch solver's parameters, shared by the heads that use it (logreg, svm). */
export const MINIBATCH_PARAMS: ParamSpecs = {
  epochs: { type: 'int', default: 10, min: 1, description: 'mini-batch solver: passes over the training rows' },
  batchSize: { type: 'int', default: 256, min: 1, description: 'mini-batch solver: rows per step' },
  lr: { type: 'number', default: 0.01, min: 1e-12, description: 'mini-batch solver: initial Adam step' },
};

/** MinibatchOptions from a head's resolved params. */
export function minibatchOptions(
  params: HeadParams,
  loss: MinibatchLoss,
  nClasses: number,
  classWeight: MinibatchOptions['classWeight'],
  opts: Pick<FitOptions, 'seed'>,
): MinibatchOptions {
  return {
    loss,
    nClasses,
    C: params.C as number,
    classWeight,
    epochs: params.epochs as number,
    batchRows: params.batchSize as number,
    lr: params.lr as number,
    seed: opts.seed ?? 0,
  };
}

/** The report's note for a mini-batch fit: which solver ran and why. */
export function minibatchNote(params: HeadParams, solver: string, rows: number): string {
  const why =
    solver === 'stream'
      ? `${rows} training rows streamed from disk in shuffled blocks, never loaded`
      : solver === 'auto'
        ? `${rows} training rows > minibatchAbove=${params.minibatchAbove as number}; memory one batch, not O(rows)`
        : 'solver=minibatch';
  return `trained by mini-batches (Adam, ${params.epochs as number} epochs of ${params.batchSize as number} rows, standardisation statistics from one streaming pass): ${why}`;
}
