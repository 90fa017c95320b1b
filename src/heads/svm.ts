import { dot, matmulABt, mirrorLower, rowSqNorms } from '../linalg/matmul.ts';
import { matmulABtOrt } from '../linalg/ort-gemm.ts';
import { Rng } from '../linalg/random.ts';
import { wasmBlas1 } from '../linalg/wasm-blas1.ts';
import { BaseHead } from './base.ts';
import { classWeights, decodeF32, encodeF32, resolveParams, type HeadDef, type ParamSpecs } from './common.ts';
import type { FitOptions, HeadParams, Matrix } from './types.ts';

/**
 * Support vector classifier.
 * - kernel 'linear': liblinear's dual coordinate descent (Hsieh et al. 2008) with shrinking,
 *   squared hinge (default, as LinearSVC) or hinge loss, bias as a constant feature, one-vs-rest.
 * - kernel 'rbf': libsvm's SMO with second-order working-set selection (Fan et al. 2005).
 *   The kernel matrix is precomputed with one ONNX Runtime GEMM (K = X·Xᵀ) when n ≤ maxPrecompute, otherwise
 *   rows are computed on demand and kept in an LRU cache. Multi-class: one-vs-one (default, as
 *   libsvm) or one-vs-rest.
 * Class weights scale C per sample. Probabilities: Platt sigmoids (libsvm's Newton fit) on
 * decision values of opts.val when given, else of the training rows; one-vs-one pairs are joined
 * by pairwise coupling (Wu, Lin & Weng 2004), one-vs-rest sigmoids are normalised.
 * predict() uses the decision function (votes / argmax), like scikit-learn.
 */
export const paramSpecs: ParamSpecs = {
  C: { type: 'number', default: 1, min: 1e-12, description: 'penalty of the error term' },
  kernel: { type: 'string', default: 'rbf', choices: ['rbf', 'linear'], description: 'kernel' },
  gamma: { type: 'number', default: 'scale', min: 1e-12, choices: ['scale', 'auto'], description: "RBF width: 'scale' = 1/(d·var(X)), 'auto' = 1/d, or a number" },
  loss: { type: 'string', default: 'squared_hinge', choices: ['squared_hinge', 'hinge'], description: 'linear kernel loss' },
  multiClass: { type: 'string', default: 'ovo', choices: ['ovo', 'ovr'], description: 'RBF multi-class scheme (linear is always ovr)' },
  tol: { type: 'number', default: 'auto', min: 1e-12, choices: ['auto'], description: "stopping tolerance ('auto': 1e-3 rbf, 1e-4 linear)" },
  maxIter: { type: 'int', default: 0, min: 0, description: 'iteration cap (0 = default: 1000 epochs linear, 10⁷ SMO steps rbf)' },
  // 12000 rows = a 576 MB float32 Gram matrix, computed in seconds by ORT's GEMM; beyond it an LRU row cache.
  maxPrecompute: { type: 'int', default: 12000, min: 0, description: 'precompute the full kernel matrix up to this many rows' },
  cacheMB: { type: 'number', default: 500, min: 1, description: 'kernel row cache size when not precomputed' },
  // Off by default, as in scikit-learn: pooled conv features share one scale, and standardising
  // amplifies near-constant dimensions (measured: -0.3 to -0.7 points on cats-vs-dogs).
  standardize: { type: 'boolean', default: false, description: 'standardise features (fitted on train)' },
};

interface LinearState { type: 'linear'; W: string; nModels: number; platt: string }
interface RbfState { type: 'rbf'; gamma: number; nSV: number; SV: string; coef: string; rho: string; pairs: number[]; platt: string; scheme: 'ovo' | 'ovr' }

// ---------------------------------------------------------------------------------- Platt

/** libsvm's sigmoid_train: fit P(+1|f) = 1/(1+exp(A f + B)) by Newton with backtracking. */
export function plattFit(dec: Float64Array, positive: Uint8Array): [number, number] {
  const l = dec.length;
  let prior1 = 0;
  for (let i = 0; i < l; i++) prior1 += positive[i]!;
  const prior0 = l - prior1;
  const hi = (prior1 + 1) / (prior1 + 2), lo = 1 / (prior0 + 2);
  const t = new Float64Array(l);
  for (let i = 0; i < l; i++) t[i] = positive[i] ? hi : lo;
  let A = 0, B = Math.log((prior0 + 1) / (prior1 + 1));
  const objective = (a: number, b: number) => {
    let f = 0;
    for (let i = 0; i < l; i++) {
      const z = dec[i]! * a + b;
      f += z >= 0 ? t[i]! * z + Math.log1p(Math.exp(-z)) : (t[i]! - 1) * z + Math.log1p(Math.exp(z));
    }
    return f;
  };
  let fval = objective(A, B);
  for (let iter = 0; iter < 100; iter++) {
    let h11 = 1e-12, h22 = 1e-12, h21 = 0, g1 = 0, g2 = 0;
    for (let i = 0; i < l; i++) {
      const z = dec[i]! * A + B;
      let p, q;
      if (z >= 0) { const e = Math.exp(-z); p = e / (1 + e); q = 1 / (1 + e); }
      else { const e = Math.exp(z); p = 1 / (1 + e); q = e / (1 + e); }
      const d2 = p * q;
      h11 += dec[i]! * dec[i]! * d2;
      h22 += d2;
      h21 += dec[i]! * d2;
      const d1 = t[i]! - p;
      g1 += dec[i]! * d1;
      g2 += d1;
    }
    if (Math.abs(g1) < 1e-5 && Math.abs(g2) < 1e-5) break;
    const det = h11 * h22 - h21 * h21;
    const dA = -(h22 * g1 - h21 * g2) / det;
    const dB = -(-h21 * g1 + h11 * g2) / det;
    const gd = g1 * dA + g2 * dB;
    let step = 1;
    while (step >= 1e-10) {
      const nA = A + step * dA, nB = B + step * dB;
      const nf = objective(nA, nB);
      if (nf < fval + 1e-4 * step * gd) { A = nA; B = nB; fval = nf; break; }
      step /= 2;
    }
    if (step < 1e-10) break;
  }
  return [A, B];
}

function plattPredict(f: number, A: number, B: number): number {
  const z = f * A + B;
  return z >= 0 ? Math.exp(-z) / (1 + Math.exp(-z)) : 1 / (1 + Math.exp(z));
}

/** libsvm's multiclass_probability: pairwise coupling of r[i][j] = P(i | i or j). */
function couple(k: number, r: Float64Array, out: Float64Array, Q: Float64Array, Qp: Float64Array): void {
  const p = out;
  for (let t = 0; t < k; t++) {
    p[t] = 1 / k;
    let qtt = 0;
    for (let j = 0; j < k; j++) {
      if (j === t) continue;
      qtt += r[j * k + t]! * r[j * k + t]!;
      Q[t * k + j] = -r[j * k + t]! * r[t * k + j]!;
    }
    Q[t * k + t] = qtt;
  }
  const eps = 0.005 / k;
  for (let iter = 0; iter < Math.max(100, k); iter++) {
    let pQp = 0;
    for (let t = 0; t < k; t++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += Q[t * k + j]! * p[j]!;
      Qp[t] = s;
      pQp += p[t]! * s;
    }
    let maxErr = 0;
    for (let t = 0; t < k; t++) maxErr = Math.max(maxErr, Math.abs(Qp[t]! - pQp));
    if (maxErr < eps) break;
    for (let t = 0; t < k; t++) {
      const diff = (-Qp[t]! + pQp) / Q[t * k + t]!;
      p[t]! += diff;
      pQp = (pQp + diff * (diff * Q[t * k + t]! + 2 * Qp[t]!)) / (1 + diff) / (1 + diff);
      for (let j = 0; j < k; j++) {
        Qp[j] = (Qp[j]! + diff * Q[t * k + j]!) / (1 + diff);
        p[j]! /= 1 + diff;
      }
    }
  }
}

// ---------------------------------------------------------------------------------- kernels

interface KernelRows {
  /** Kernel values of global row i against all n rows. */
  row(i: number): Float32Array;
}

/** Kernel rows restricted to a subproblem's rows (identity when the subproblem is every row). */
interface SubKernel {
  row(t: number): Float32Array;
}

function subKernel(kern: KernelRows, sub: Int32Array, n: number): SubKernel {
  const l = sub.length;
  if (l === n) return kern; // sub is 0..n-1 in order
  if (kern instanceof PrecomputedRows) {
    // Gather the l×l block once: SMO then reads contiguous rows.
    const K = new Float32Array(l * l);
    for (let a = 0; a < l; a++) {
      const r = kern.row(sub[a]!);
      for (let b = 0; b < l; b++) K[a * l + b] = r[sub[b]!]!;
    }
    return new PrecomputedRows(K, l);
  }
  const cache = new Map<number, Float32Array>();
  return {
    row(t: number): Float32Array {
      let r = cache.get(t);
      if (!r) {
        const full = kern.row(sub[t]!);
        r = new Float32Array(l);
        for (let b = 0; b < l; b++) r[b] = full[sub[b]!]!;
        if (cache.size > 2048) cache.delete(cache.keys().next().value as number);
        cache.set(t, r);
      }
      return r;
    },
  };
}

async function rbfKernelMatrix(X: Float32Array, n: number, d: number, gamma: number): Promise<Float32Array> {
  // The Gram matrix is most of an RBF fit: ONNX Runtime's GEMM does it ~5x faster than our wasm kernel.
  const K = await matmulABtOrt(X, n, X, n, d);
  const sq = new Float64Array(n);
  for (let i = 0; i < n; i++) sq[i] = K[i * n + i]!;
  // exp on the lower triangle only, then mirror.
  for (let i = 0; i < n; i++) {
    const o = i * n, si = sq[i]!;
    for (let j = 0; j <= i; j++) K[o + j] = Math.exp(-gamma * Math.max(0, si + sq[j]! - 2 * K[o + j]!));
  }
  mirrorLower(K, n);
  return K;
}

class PrecomputedRows implements KernelRows {
  constructor(private readonly K: Float32Array, private readonly n: number) {}
  row(i: number): Float32Array {
    return this.K.subarray(i * this.n, (i + 1) * this.n);
  }
}

/** On-demand RBF rows with an LRU cache (Map iteration order = recency). */
class CachedRows implements KernelRows {
  private readonly cache = new Map<number, Float32Array>();
  private readonly capacity: number;
  private readonly sq: Float64Array;
  constructor(private readonly X: Float32Array, private readonly n: number, private readonly d: number, private readonly gamma: number, cacheMB: number) {
    this.capacity = Math.max(2, Math.floor((cacheMB * 1024 * 1024) / (4 * n)));
    this.sq = rowSqNorms(X, n, d);
  }
  row(i: number): Float32Array {
    const hit = this.cache.get(i);
    if (hit) {
      this.cache.delete(i);
      this.cache.set(i, hit);
      return hit;
    }
    let r: Float32Array;
    if (this.cache.size >= this.capacity) {
      const oldest = this.cache.keys().next().value as number;
      r = this.cache.get(oldest)!;
      this.cache.delete(oldest);
    } else {
      r = new Float32Array(this.n);
    }
    const { X, d, n, sq, gamma } = this;
    for (let j = 0; j < n; j++) r[j] = Math.exp(-gamma * Math.max(0, sq[i]! + sq[j]! - 2 * dot(X, i * d, X, j * d, d)));
    this.cache.set(i, r);
    return r;
  }
}

// ---------------------------------------------------------------------------------- SMO

interface SmoResult { alpha: Float64Array; rho: number; /** y_t·(G_t+1) − rho = decision value of each training row */ dec: Float64Array; iterations: number }

/**
 * libsvm Solver for the C-SVC dual: min ½αᵀQα − eᵀα, 0 ≤ α_t ≤ C_t, yᵀα = 0, on the rows `sub`
 * (global indices into the kernel), labels y ∈ {+1, −1}.
 */
function smo(kern: SubKernel, y: Int8Array, Cs: Float64Array, eps: number, maxIter: number): SmoResult {
  const l = y.length;
  const alpha = new Float64Array(l);
  const G = new Float64Array(l).fill(-1);
  const QD = new Float64Array(l);
  for (let t = 0; t < l; t++) QD[t] = kern.row(t)[t]!;
  const TAU = 1e-12;
  let iter = 0;
  for (; iter < maxIter; iter++) {
    // Working set selection 2 (second-order).
    let Gmax = -Infinity, Gmax2 = -Infinity, gi = -1, gj = -1, objMin = Infinity;
    for (let t = 0; t < l; t++) {
      if (y[t] === 1) {
        if (alpha[t]! < Cs[t]! && -G[t]! >= Gmax) { Gmax = -G[t]!; gi = t; }
      } else if (alpha[t]! > 0 && G[t]! >= Gmax) { Gmax = G[t]!; gi = t; }
    }
    if (gi < 0) break;
    const Ki = kern.row(gi);
    const QDi = QD[gi]!;
    for (let t = 0; t < l; t++) {
      if (y[t] === 1) {
        if (alpha[t]! > 0) {
          const gd = Gmax + G[t]!;
          if (G[t]! >= Gmax2) Gmax2 = G[t]!;
          if (gd > 0) {
            const qc = QDi + QD[t]! - 2 * Ki[t]!;
            const od = -(gd * gd) / (qc > 0 ? qc : TAU);
            if (od <= objMin) { gj = t; objMin = od; }
          }
        }
      } else if (alpha[t]! < Cs[t]!) {
        const gd = Gmax - G[t]!;
        if (-G[t]! >= Gmax2) Gmax2 = -G[t]!;
        if (gd > 0) {
          const qc = QDi + QD[t]! - 2 * Ki[t]!;
          const od = -(gd * gd) / (qc > 0 ? qc : TAU);
          if (od <= objMin) { gj = t; objMin = od; }
        }
      }
    }
    if (Gmax + Gmax2 < eps || gj < 0) break;
    const i = gi, j = gj;
    const Kj = kern.row(j);
    const Ci = Cs[i]!, Cj = Cs[j]!;
    const oldAi = alpha[i]!, oldAj = alpha[j]!;
    const yi = y[i]!, yj = y[j]!;
    const Qij = yi * yj * Ki[j]!;
    let ai = oldAi, aj = oldAj;
    if (yi !== yj) {
      let qc = QD[i]! + QD[j]! + 2 * Qij;
      if (qc <= 0) qc = TAU;
      const delta = (-G[i]! - G[j]!) / qc;
      const diff = ai - aj;
      ai += delta;
      aj += delta;
      if (diff > 0) { if (aj < 0) { aj = 0; ai = diff; } }
      else if (ai < 0) { ai = 0; aj = -diff; }
      if (diff > Ci - Cj) { if (ai > Ci) { ai = Ci; aj = Ci - diff; } }
      else if (aj > Cj) { aj = Cj; ai = Cj + diff; }
    } else {
      let qc = QD[i]! + QD[j]! - 2 * Qij;
      if (qc <= 0) qc = TAU;
      const delta = (G[i]! - G[j]!) / qc;
      const sum = ai + aj;
      ai -= delta;
      aj += delta;
      if (sum > Ci) { if (ai > Ci) { ai = Ci; aj = sum - Ci; } }
      else if (aj < 0) { aj = 0; ai = sum; }
      if (sum > Cj) { if (aj > Cj) { aj = Cj; ai = sum - Cj; } }
      else if (ai < 0) { ai = 0; aj = sum; }
    }
    alpha[i] = ai;
    alpha[j] = aj;
    // G_t += Q_ti Δα_i + Q_tj Δα_j, with Q_ts = y_t y_s K_ts.
    const ci = yi * (ai - oldAi), cj = yj * (aj - oldAj);
    for (let t = 0; t < l; t++) G[t]! += y[t]! * (ci * Ki[t]! + cj * Kj[t]!);
  }
  // rho (libsvm calculate_rho).
  let ub = Infinity, lb = -Infinity, nFree = 0, sumFree = 0;
  for (let t = 0; t < l; t++) {
    const yG = y[t]! * G[t]!;
    if (alpha[t]! >= Cs[t]!) { if (y[t] === -1) ub = Math.min(ub, yG); else lb = Math.max(lb, yG); }
    else if (alpha[t]! <= 0) { if (y[t] === 1) ub = Math.min(ub, yG); else lb = Math.max(lb, yG); }
    else { nFree++; sumFree += yG; }
  }
  const rho = nFree > 0 ? sumFree / nFree : (ub + lb) / 2;
  const dec = new Float64Array(l);
  for (let t = 0; t < l; t++) dec[t] = y[t]! * (G[t]! + 1) - rho;
  return { alpha, rho, dec, iterations: iter };
}

// ---------------------------------------------------------------------------------- linear

/**
 * liblinear solve_l2r_l1l2_svc (Hsieh et al. 2008, as LinearSVC: random permutation per outer
 * iteration, shrinking, stop when max−min projected gradient ≤ eps, eps = tol = 1e-4) on rows with
 * labels ±1; returns w (d+1, last = bias, the constant feature 1 as liblinear's bias term).
 *
 * Per coordinate step the work is one d-long dot product and at most one axpy. In scalar JS
 * (float64 w, 4-way unrolled) that was 0.23-0.32 s per 2000×768 fit vs 0.115 s for LinearSVC on
 * the benchmark machine; with the rows and w (float32) in a WebAssembly SIMD kernel's memory it is
 * several times faster (CONVCACHE_NO_WASM=1 or no SIMD: the scalar loop below).
 */
function linearDcd(X: Matrix, y: Int8Array, Cs: Float64Array, squared: boolean, eps: number, maxIter: number, rng: Rng): Float64Array {
  const { rows: l, cols: d, data } = X;
  const alpha = new Float64Array(l);
  const QD = new Float64Array(l);
  const diag = new Float64Array(l);
  const ub = new Float64Array(l);
  for (let i = 0; i < l; i++) {
    diag[i] = squared ? 0.5 / Cs[i]! : 0;
    ub[i] = squared ? Infinity : Cs[i]!;
    QD[i] = diag[i]! + dot(data, i * d, data, i * d, d) + 1;
  }
  const k = wasmBlas1();
  if (k) {
    const dp = Math.ceil(d / 8) * 8;
    const wOff = l * dp;
    const f = k.reserve((wOff + dp) * 4);
    if (dp === d) f.set(data.subarray(0, l * d));
    else {
      f.fill(0, 0, wOff);
      for (let i = 0; i < l; i++) f.set(data.subarray(i * d, (i + 1) * d), i * dp);
    }
    f.fill(0, wOff, wOff + dp);
    const rb = dp * 4, wp = wOff * 4;
    const wb = dcdLoop(l, y, alpha, QD, diag, ub, eps, maxIter, rng,
      (i) => k.dot(i * rb, wp, rb),
      (i, a) => k.axpy(a, i * rb, wp, rb));
    const w = new Float64Array(d + 1);
    const fw = new Float32Array(k.memory.buffer);
    for (let j = 0; j < d; j++) w[j] = fw[wOff + j]!;
    w[d] = wb;
    return w;
  }
  const w = new Float64Array(d + 1);
  w[d] = dcdLoop(l, y, alpha, QD, diag, ub, eps, maxIter, rng,
    (i) => dotF64(data, i * d, w, d),
    (i, a) => axpyF64(a, data, i * d, w, d));
  return w;
}

function dotF64(x: Float32Array, xo: number, w: Float64Array, d: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, k = 0;
  for (; k + 3 < d; k += 4) {
    s0 += w[k]! * x[xo + k]!; s1 += w[k + 1]! * x[xo + k + 1]!;
    s2 += w[k + 2]! * x[xo + k + 2]!; s3 += w[k + 3]! * x[xo + k + 3]!;
  }
  for (; k < d; k++) s0 += w[k]! * x[xo + k]!;
  return s0 + s1 + s2 + s3;
}

function axpyF64(a: number, x: Float32Array, xo: number, w: Float64Array, d: number): void {
  let k = 0;
  for (; k + 3 < d; k += 4) {
    w[k]! += a * x[xo + k]!; w[k + 1]! += a * x[xo + k + 1]!;
    w[k + 2]! += a * x[xo + k + 2]!; w[k + 3]! += a * x[xo + k + 3]!;
  }
  for (; k < d; k++) w[k]! += a * x[xo + k]!;
}

/** The dual CD iterations; wDot(i) = w·x_i (without bias), axpy(i, a): w += a·x_i. Returns the bias weight. */
function dcdLoop(
  l: number, y: Int8Array, alpha: Float64Array, QD: Float64Array, diag: Float64Array, ub: Float64Array,
  eps: number, maxIter: number, rng: Rng, wDot: (i: number) => number, axpy: (i: number, a: number) => void,
): number {
  let bias = 0;
  const index = new Int32Array(l);
  for (let i = 0; i < l; i++) index[i] = i;
  let active = l;
  let PGmaxOld = Infinity, PGminOld = -Infinity;
  for (let iter = 0; iter < maxIter; iter++) {
    let PGmaxNew = -Infinity, PGminNew = Infinity;
    for (let i = 0; i < active; i++) {
      const j = i + rng.int(active - i);
      const t = index[i]!; index[i] = index[j]!; index[j] = t;
    }
    for (let s = 0; s < active; s++) {
      const i = index[s]!;
      const yi = y[i]!;
      const G = yi * (wDot(i) + bias) - 1 + alpha[i]! * diag[i]!;
      let PG = 0;
      if (alpha[i] === 0) {
        if (G > PGmaxOld) {
          active--;
          index[s] = index[active]!; index[active] = i;
          s--;
          continue;
        } else if (G < 0) PG = G;
      } else if (alpha[i] === ub[i]) {
        if (G < PGminOld) {
          active--;
          index[s] = index[active]!; index[active] = i;
          s--;
          continue;
        } else if (G > 0) PG = G;
      } else PG = G;
      if (PG > PGmaxNew) PGmaxNew = PG;
      if (PG < PGminNew) PGminNew = PG;
      if (Math.abs(PG) > 1e-12) {
        const old = alpha[i]!;
        const a = Math.min(Math.max(old - G / QD[i]!, 0), ub[i]!);
        alpha[i] = a;
        const dlt = (a - old) * yi;
        axpy(i, dlt);
        bias += dlt;
      }
    }
    if (PGmaxNew - PGminNew <= eps) {
      if (active === l) break;
      active = l;
      PGmaxOld = Infinity;
      PGminOld = -Infinity;
      continue;
    }
    PGmaxOld = PGmaxNew <= 0 ? Infinity : PGmaxNew;
    PGminOld = PGminNew >= 0 ? -Infinity : PGminNew;
  }
  return bias;
}

// ---------------------------------------------------------------------------------- head

export class SvmHead extends BaseHead {
  readonly kind = 'svm';
  state_?: LinearState | RbfState;
  // Decoded state used by prediction.
  private W_?: Float32Array;
  private SV_?: Float32Array;
  private coef_?: Float32Array;
  private rho_?: Float32Array;
  private platt_?: Float32Array;
  private gamma_ = 0;

  protected async fitImpl(X: Matrix, y: Int32Array, opts: FitOptions): Promise<void> {
    const K = opts.nClasses;
    const cw = classWeights(y, K, opts.classWeight);
    const C = this.params.C as number;
    const Cs = new Float64Array(X.rows);
    for (let i = 0; i < X.rows; i++) Cs[i] = C * cw[y[i]!]!;
    const tolP = this.params.tol;
    const maxIterP = this.params.maxIter as number;
    if (this.params.kernel === 'linear') {
      const eps = tolP === 'auto' ? 1e-4 : (tolP as number);
      const maxIter = maxIterP > 0 ? maxIterP : 1000;
      const rng = new Rng(opts.seed ?? 0);
      const nModels = K === 2 ? 1 : K;
      const d = X.cols;
      const W = new Float32Array(nModels * (d + 1));
      const ys = new Int8Array(X.rows);
      for (let m = 0; m < nModels; m++) {
        const pos = K === 2 ? 1 : m;
        for (let i = 0; i < X.rows; i++) ys[i] = y[i] === pos ? 1 : -1;
        W.set(linearDcd(X, ys, Cs, this.params.loss === 'squared_hinge', eps, maxIter, rng), m * (d + 1));
      }
      this.W_ = W;
      this.state_ = { type: 'linear', W: '', nModels, platt: '' };
      this.platt_ = new Float32Array(2 * nModels);
      const { Xp, yp } = this.plattData(X, y, opts);
      this.fitPlatt(this.decision(Xp), yp, nModels, (m) => (K === 2 ? [1, 0] : [m, -1]));
      return;
    }
    // RBF
    const { rows: n, cols: d, data } = X;
    const gp = this.params.gamma;
    let gamma: number;
    if (gp === 'scale') {
      let s = 0, s2 = 0;
      for (let i = 0; i < data.length; i++) { s += data[i]!; s2 += data[i]! * data[i]!; }
      const mean = s / data.length;
      const v = s2 / data.length - mean * mean;
      gamma = v > 0 ? 1 / (d * v) : 1;
    } else if (gp === 'auto') gamma = 1 / d;
    else gamma = gp as number;
    const eps = tolP === 'auto' ? 1e-3 : (tolP as number);
    const maxIter = maxIterP > 0 ? maxIterP : 10_000_000;
    const kern: KernelRows = n <= (this.params.maxPrecompute as number)
      ? new PrecomputedRows(await rbfKernelMatrix(data, n, d, gamma), n)
      : new CachedRows(data, n, d, gamma, this.params.cacheMB as number);
    const scheme = K === 2 ? 'ovo' : (this.params.multiClass as 'ovo' | 'ovr');
    const pairs: number[] = [];
    if (scheme === 'ovo') for (let a = 0; a < K; a++) for (let b = a + 1; b < K; b++) pairs.push(a, b);
    else for (let a = 0; a < K; a++) pairs.push(a, -1);
    const nModels = pairs.length / 2;
    const models: { sub: Int32Array; coef: Float64Array; rho: number; dec: Float64Array; ys: Int8Array }[] = [];
    for (let m = 0; m < nModels; m++) {
      const a = pairs[2 * m]!, b = pairs[2 * m + 1]!;
      const rows: number[] = [];
      for (let i = 0; i < n; i++) if (b < 0 || y[i] === a || y[i] === b) rows.push(i);
      const sub = Int32Array.from(rows);
      const ys = new Int8Array(sub.length);
      const cs = new Float64Array(sub.length);
      for (let t = 0; t < sub.length; t++) { ys[t] = y[sub[t]!] === a ? 1 : -1; cs[t] = Cs[sub[t]!]!; }
      const r = smo(subKernel(kern, sub, n), ys, cs, eps, maxIter);
      if (r.iterations >= maxIter) opts.log?.warn(`svm: SMO hit maxIter=${maxIter} for model ${m}`);
      const coef = new Float64Array(sub.length);
      for (let t = 0; t < sub.length; t++) coef[t] = r.alpha[t]! * ys[t]!;
      models.push({ sub, coef, rho: r.rho, dec: r.dec, ys });
    }
    // Support vectors = union of rows with non-zero coefficient in any model.
    const svIndex = new Int32Array(n).fill(-1);
    let nSV = 0;
    for (const mdl of models) for (let t = 0; t < mdl.sub.length; t++) if (mdl.coef[t] !== 0 && svIndex[mdl.sub[t]!] === -1) svIndex[mdl.sub[t]!] = nSV++;
    const SV = new Float32Array(nSV * d);
    for (let i = 0; i < n; i++) if (svIndex[i]! >= 0) SV.set(data.subarray(i * d, (i + 1) * d), svIndex[i]! * d);
    const coefAll = new Float32Array(nModels * nSV);
    const rho = new Float32Array(nModels);
    models.forEach((mdl, m) => {
      for (let t = 0; t < mdl.sub.length; t++) if (mdl.coef[t] !== 0) coefAll[m * nSV + svIndex[mdl.sub[t]!]!] = mdl.coef[t]!;
      rho[m] = mdl.rho;
    });
    this.SV_ = SV;
    this.coef_ = coefAll;
    this.rho_ = rho;
    this.gamma_ = gamma;
    this.state_ = { type: 'rbf', gamma, nSV, SV: '', coef: '', rho: '', pairs, platt: '', scheme };
    this.platt_ = new Float32Array(2 * nModels);
    const { Xp, yp } = this.plattData(X, y, opts);
    if (Xp !== X) {
      this.fitPlatt(this.decision(Xp), yp, nModels, (m) => [pairs[2 * m]!, pairs[2 * m + 1]!]);
    } else {
      // Training rows: SMO already has each model's decision values on its own rows.
      models.forEach((mdl, m) => {
        const [A, B] = plattFit(mdl.dec, Uint8Array.from(mdl.ys, (v) => (v === 1 ? 1 : 0)));
        this.platt_![2 * m] = A;
        this.platt_![2 * m + 1] = B;
      });
    }
  }

  /** Rows for the Platt fit: the validation split when it has every class, else the training rows. */
  private plattData(X: Matrix, y: Int32Array, opts: FitOptions): { Xp: Matrix; yp: Int32Array } {
    if (opts.val) {
      const seen = new Set(opts.val.y);
      if (seen.size === opts.nClasses) return { Xp: opts.val.X, yp: opts.val.y };
    }
    return { Xp: X, yp: y };
  }

  /** Fit one sigmoid per model on rows of its two sides (b = -1: the rest). */
  private fitPlatt(dec: Float64Array, y: Int32Array, nModels: number, sides: (m: number) => [number, number]): void {
    for (let m = 0; m < nModels; m++) {
      const [a, b] = sides(m);
      const f: number[] = [];
      const pos: number[] = [];
      for (let i = 0; i < y.length; i++) {
        if (b >= 0 && y[i] !== a && y[i] !== b) continue;
        f.push(dec[i * nModels + m]!);
        pos.push(y[i] === a ? 1 : 0);
      }
      const [A, B] = f.length > 0 ? plattFit(Float64Array.from(f), Uint8Array.from(pos)) : [-1, 0];
      this.platt_![2 * m] = A;
      this.platt_![2 * m + 1] = B;
    }
  }

  /** Decision values, rows × nModels (positive = first side of each model). */
  decision(X: Matrix): Float64Array {
    const { rows: n, cols: d, data } = X;
    if (this.state_!.type === 'linear') {
      const nm = this.state_!.nModels;
      const W = this.W_!;
      const out = new Float64Array(n * nm);
      for (let i = 0; i < n; i++) for (let m = 0; m < nm; m++) out[i * nm + m] = dot(data, i * d, W, m * (d + 1), d) + W[m * (d + 1) + d]!;
      return out;
    }
    const st = this.state_ as RbfState;
    const nSV = st.nSV;
    const nm = this.rho_!.length;
    const out = new Float64Array(n * nm);
    if (nSV === 0) {
      for (let i = 0; i < n; i++) for (let m = 0; m < nm; m++) out[i * nm + m] = -this.rho_![m]!;
      return out;
    }
    const block = 1024;
    const Kb = new Float32Array(Math.min(block, n) * nSV);
    const svSq = rowSqNorms(this.SV_!, nSV, d);
    const g = this.gamma_;
    for (let i0 = 0; i0 < n; i0 += block) {
      const rows = Math.min(block, n - i0);
      matmulABt(data.subarray(i0 * d, (i0 + rows) * d), rows, this.SV_!, nSV, d, Kb);
      for (let r = 0; r < rows; r++) {
        const xx = dot(data, (i0 + r) * d, data, (i0 + r) * d, d);
        const ko = r * nSV;
        for (let s = 0; s < nSV; s++) Kb[ko + s] = Math.exp(-g * Math.max(0, xx + svSq[s]! - 2 * Kb[ko + s]!));
        for (let m = 0; m < nm; m++) {
          const co = m * nSV;
          let acc = 0;
          for (let s = 0; s < nSV; s++) acc += this.coef_![co + s]! * Kb[ko + s]!;
          out[(i0 + r) * nm + m] = acc - this.rho_![m]!;
        }
      }
    }
    return out;
  }

  private get isOvo(): boolean {
    return this.state_!.type === 'rbf' && (this.state_ as RbfState).scheme === 'ovo';
  }

  protected override async predictImpl(X: Matrix): Promise<Int32Array> {
    const K = this.nClasses_!;
    const dec = this.decision(X);
    const nm = dec.length / X.rows;
    const out = new Int32Array(X.rows);
    if (K === 2) {
      // Binary: linear's model has class 1 positive; rbf's pair (0,1) has class 0 positive.
      const posIs0 = this.state_!.type === 'rbf';
      for (let i = 0; i < X.rows; i++) out[i] = (dec[i]! > 0) === posIs0 ? 0 : 1;
      return out;
    }
    if (this.isOvo) {
      const pairs = (this.state_ as RbfState).pairs;
      const votes = new Int32Array(K);
      for (let i = 0; i < X.rows; i++) {
        votes.fill(0);
        for (let m = 0; m < nm; m++) votes[dec[i * nm + m]! > 0 ? pairs[2 * m]! : pairs[2 * m + 1]!]!++;
        let best = 0;
        for (let c = 1; c < K; c++) if (votes[c]! > votes[best]!) best = c;
        out[i] = best;
      }
      return out;
    }
    for (let i = 0; i < X.rows; i++) {
      let best = 0;
      for (let m = 1; m < nm; m++) if (dec[i * nm + m]! > dec[i * nm + best]!) best = m;
      out[i] = best;
    }
    return out;
  }

  protected async probaImpl(X: Matrix): Promise<Matrix> {
    const K = this.nClasses_!;
    const dec = this.decision(X);
    const n = X.rows;
    const nm = dec.length / n;
    const P = new Float32Array(n * K);
    const pl = this.platt_!;
    if (K === 2) {
      const posIs0 = this.state_!.type === 'rbf';
      for (let i = 0; i < n; i++) {
        const p = plattPredict(dec[i]!, pl[0]!, pl[1]!);
        P[2 * i] = posIs0 ? p : 1 - p;
        P[2 * i + 1] = 1 - P[2 * i]!;
      }
      return { data: P, rows: n, cols: K };
    }
    if (this.isOvo) {
      const pairs = (this.state_ as RbfState).pairs;
      const r = new Float64Array(K * K);
      const p = new Float64Array(K), Q = new Float64Array(K * K), Qp = new Float64Array(K);
      for (let i = 0; i < n; i++) {
        for (let m = 0; m < nm; m++) {
          const a = pairs[2 * m]!, b = pairs[2 * m + 1]!;
          const v = Math.min(Math.max(plattPredict(dec[i * nm + m]!, pl[2 * m]!, pl[2 * m + 1]!), 1e-7), 1 - 1e-7);
          r[a * K + b] = v;
          r[b * K + a] = 1 - v;
        }
        couple(K, r, p, Q, Qp);
        this.writeNormalised(P, i, K, p);
      }
      return { data: P, rows: n, cols: K };
    }
    const p = new Float64Array(K);
    for (let i = 0; i < n; i++) {
      for (let m = 0; m < K; m++) p[m] = plattPredict(dec[i * nm + m]!, pl[2 * m]!, pl[2 * m + 1]!);
      this.writeNormalised(P, i, K, p);
    }
    return { data: P, rows: n, cols: K };
  }

  private writeNormalised(P: Float32Array, i: number, K: number, p: Float64Array): void {
    let s = 0;
    for (let c = 0; c < K; c++) s += Math.max(p[c]!, 0);
    for (let c = 0; c < K; c++) P[i * K + c] = s > 0 ? Math.max(p[c]!, 0) / s : 1 / K;
  }

  protected getState(): LinearState | RbfState {
    const st = this.state_!;
    if (st.type === 'linear') return { ...st, W: encodeF32(this.W_!), platt: encodeF32(this.platt_!) };
    return { ...st, SV: encodeF32(this.SV_!), coef: encodeF32(this.coef_!), rho: encodeF32(this.rho_!), platt: encodeF32(this.platt_!) };
  }

  protected setState(s: unknown): void {
    const st = s as LinearState | RbfState;
    this.state_ = st;
    this.platt_ = decodeF32(st.platt);
    if (st.type === 'linear') {
      this.W_ = decodeF32(st.W);
    } else {
      this.SV_ = decodeF32(st.SV);
      this.coef_ = decodeF32(st.coef);
      this.rho_ = decodeF32(st.rho);
      this.gamma_ = st.gamma;
    }
  }
}

export const svmHead: HeadDef = {
  kind: 'svm',
  paramSpecs,
  create: (params: HeadParams) => new SvmHead(params),
  load: (file, path) => new SvmHead(resolveParams('svm', paramSpecs, file.params)).restore(file, path),
};
