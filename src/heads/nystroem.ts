import { rowSqNorms } from '../linalg/matmul.ts';
import { matmulABtOrt } from '../linalg/ort-gemm.ts';
import { Rng } from '../linalg/random.ts';
import { decodeF32, encodeF32 } from './common.ts';
import type { Matrix } from './types.ts';

/**
 * Nyström feature map for the RBF kernel (Williams & Seeger 2001; scikit-learn's Nystroem):
 * m landmark rows L drawn uniformly (seeded), φ(x) = k(x, L) · L⁻ᵀ with K_LL = L·Lᵀ (Cholesky, with a
 * small ridge). Then φ(x)·φ(z) = k(x,L) K_LL⁻¹ k(L,z), the rank-m approximation of k(x, z), and a
 * *linear* SVM on φ approximates the kernel SVM at O(n·m) memory and time instead of O(n²).
 * (scikit-learn whitens with K_LL^-1/2 from an SVD; the Cholesky factor differs from it by a
 * rotation, which an L2-regularised linear model does not see.)
 */
export interface NystroemJSON {
  gamma: number;
  m: number;
  d: number;
  landmarks: string;
  proj: string;
}

/** Ridge added to K_LL's diagonal (its diagonal is 1): keeps the factor stable for near-duplicate landmarks. */
const RIDGE = 1e-5;

export class NystroemMap {
  private readonly lSq: Float64Array;

  private constructor(
    readonly gamma: number,
    readonly landmarks: Float32Array,
    readonly m: number,
    readonly d: number,
    readonly proj: Float32Array,
  ) {
    this.lSq = rowSqNorms(landmarks, m, d);
  }

  /** Pick up to `components` distinct training rows as landmarks and factor their kernel matrix. */
  static async fit(X: Matrix, gamma: number, components: number, seed: number): Promise<NystroemMap> {
    const { rows: n, cols: d, data } = X;
    const rng = new Rng(seed);
    const perm = Int32Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      const t = perm[i]!;
      perm[i] = perm[j]!;
      perm[j] = t;
    }
    // Distinct rows only: a repeated landmark adds nothing and makes K_LL singular.
    const seen = new Set<string>();
    const pick: number[] = [];
    for (let t = 0; t < n && pick.length < components; t++) {
      const i = perm[t]!;
      const key = Buffer.from(data.buffer, data.byteOffset + i * d * 4, d * 4).toString('base64');
      if (seen.has(key)) continue;
      seen.add(key);
      pick.push(i);
    }
    pick.sort((a, b) => a - b);
    const m = pick.length;
    const L = new Float32Array(m * d);
    pick.forEach((i, k) => L.set(data.subarray(i * d, (i + 1) * d), k * d));
    const probe = new NystroemMap(gamma, L, m, d, new Float32Array(0));
    const K = await probe.kernel({ data: L, rows: m, cols: d });
    const Linv = invLowerCholesky(K, m);
    return new NystroemMap(gamma, L, m, d, Linv);
  }

  /** k(x, L) for every row of X: rows × m. */
  private async kernel(X: Matrix): Promise<Float32Array> {
    const { rows, cols: d, data } = X;
    const S = await matmulABtOrt(data, rows, this.landmarks, this.m, d);
    const g = this.gamma;
    for (let r = 0; r < rows; r++) {
      let xx = 0;
      for (let j = 0; j < d; j++) xx += data[r * d + j]! * data[r * d + j]!;
      const o = r * this.m;
      for (let s = 0; s < this.m; s++) S[o + s] = Math.exp(-g * Math.max(0, xx + this.lSq[s]! - 2 * S[o + s]!));
    }
    return S;
  }

  /** φ(X): rows × m, computed in row blocks so the temporary kernel block stays small. */
  async transform(X: Matrix): Promise<Matrix> {
    const out = new Float32Array(X.rows * this.m);
    const block = 4096;
    for (let r0 = 0; r0 < X.rows; r0 += block) {
      const rows = Math.min(block, X.rows - r0);
      const Kb = await this.kernel({ data: X.data.subarray(r0 * X.cols, (r0 + rows) * X.cols), rows, cols: X.cols });
      // φ = K_xL · L⁻ᵀ = K_xL · (L⁻¹)ᵀ: one GEMM with B = L⁻¹ (m × m) taken transposed.
      out.set(await matmulABtOrt(Kb, rows, this.proj, this.m, this.m), r0 * this.m);
    }
    return { data: out, rows: X.rows, cols: this.m };
  }

  toJSON(): NystroemJSON {
    return {
      gamma: this.gamma,
      m: this.m,
      d: this.d,
      landmarks: encodeF32(this.landmarks),
      proj: encodeF32(this.proj),
    };
  }

  static fromJSON(j: NystroemJSON): NystroemMap {
    return new NystroemMap(j.gamma, decodeF32(j.landmarks), j.m, j.d, decodeF32(j.proj));
  }
}

/** L⁻¹ where K + ridge·I = L·Lᵀ (K symmetric positive semi-definite, m × m, row-major). */
export function invLowerCholesky(K: Float32Array, m: number): Float32Array {
  const Lf = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j <= i; j++) {
      let s = K[i * m + j]! + (i === j ? RIDGE : 0);
      for (let k = 0; k < j; k++) s -= Lf[i * m + k]! * Lf[j * m + k]!;
      if (i === j) Lf[i * m + i] = Math.sqrt(Math.max(s, RIDGE));
      else Lf[i * m + j] = s / Lf[j * m + j]!;
    }
  }
  // Invert the lower-triangular factor column by column (forward substitution on unit vectors).
  const inv = new Float64Array(m * m);
  for (let c = 0; c < m; c++) {
    for (let i = c; i < m; i++) {
      let s = i === c ? 1 : 0;
      for (let k = c; k < i; k++) s -= Lf[i * m + k]! * inv[k * m + c]!;
      inv[i * m + c] = s / Lf[i * m + i]!;
    }
  }
  return Float32Array.from(inv);
}
