import { dot } from '../linalg/matmul.ts';
import { Rng } from '../linalg/random.ts';
import { wasmBlas1 } from '../linalg/wasm-blas1.ts';
import type { Matrix } from './types.ts';

/** liblinear's dual coordinate descent for one binary linear SVM. */

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
export function linearDcd(
  X: Matrix,
  y: Int8Array,
  Cs: Float64Array,
  squared: boolean,
  eps: number,
  maxIter: number,
  rng: Rng,
): Float64Array {
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
    const rb = dp * 4,
      wp = wOff * 4;
    const wb = dcdLoop(
      l,
      y,
      alpha,
      QD,
      diag,
      ub,
      eps,
      maxIter,
      rng,
      (i) => k.dot(i * rb, wp, rb),
      (i, a) => k.axpy(a, i * rb, wp, rb),
    );
    const w = new Float64Array(d + 1);
    const fw = new Float32Array(k.memory.buffer);
    for (let j = 0; j < d; j++) w[j] = fw[wOff + j]!;
    w[d] = wb;
    return w;
  }
  const w = new Float64Array(d + 1);
  w[d] = dcdLoop(
    l,
    y,
    alpha,
    QD,
    diag,
    ub,
    eps,
    maxIter,
    rng,
    (i) => dotF64(data, i * d, w, d),
    (i, a) => axpyF64(a, data, i * d, w, d),
  );
  return w;
}

function dotF64(x: Float32Array, xo: number, w: Float64Array, d: number): number {
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0,
    k = 0;
  for (; k + 3 < d; k += 4) {
    s0 += w[k]! * x[xo + k]!;
    s1 += w[k + 1]! * x[xo + k + 1]!;
    s2 += w[k + 2]! * x[xo + k + 2]!;
    s3 += w[k + 3]! * x[xo + k + 3]!;
  }
  for (; k < d; k++) s0 += w[k]! * x[xo + k]!;
  return s0 + s1 + s2 + s3;
}

function axpyF64(a: number, x: Float32Array, xo: number, w: Float64Array, d: number): void {
  let k = 0;
  for (; k + 3 < d; k += 4) {
    w[k]! += a * x[xo + k]!;
    w[k + 1]! += a * x[xo + k + 1]!;
    w[k + 2]! += a * x[xo + k + 2]!;
    w[k + 3]! += a * x[xo + k + 3]!;
  }
  for (; k < d; k++) w[k]! += a * x[xo + k]!;
}

/** The dual CD iterations; wDot(i) = w·x_i (without bias), axpy(i, a): w += a·x_i. Returns the bias weight. */
function dcdLoop(
  l: number,
  y: Int8Array,
  alpha: Float64Array,
  QD: Float64Array,
  diag: Float64Array,
  ub: Float64Array,
  eps: number,
  maxIter: number,
  rng: Rng,
  wDot: (i: number) => number,
  axpy: (i: number, a: number) => void,
): number {
  let bias = 0;
  const index = new Int32Array(l);
  for (let i = 0; i < l; i++) index[i] = i;
  let active = l;
  let PGmaxOld = Infinity,
    PGminOld = -Infinity;
  for (let iter = 0; iter < maxIter; iter++) {
    let PGmaxNew = -Infinity,
      PGminNew = Infinity;
    for (let i = 0; i < active; i++) {
      const j = i + rng.int(active - i);
      const t = index[i]!;
      index[i] = index[j]!;
      index[j] = t;
    }
    for (let s = 0; s < active; s++) {
      const i = index[s]!;
      const yi = y[i]!;
      const G = yi * (wDot(i) + bias) - 1 + alpha[i]! * diag[i]!;
      let PG = 0;
      if (alpha[i] === 0) {
        if (G > PGmaxOld) {
          active--;
          index[s] = index[active]!;
          index[active] = i;
          s--;
          continue;
        } else if (G < 0) PG = G;
      } else if (alpha[i] === ub[i]) {
        if (G < PGminOld) {
          active--;
          index[s] = index[active]!;
          index[active] = i;
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
