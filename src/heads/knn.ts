import { rowSqNorms } from '../linalg/matmul.ts';
import { matmulABtOrt } from '../linalg/ort-gemm.ts';
import { BaseHead, defineHead } from './base.ts';
import { classWeights, decodeF32, decodeI32, encodeF32, encodeI32, type HeadDef, type ParamSpecs } from './common.ts';
import type { FitOptions, Matrix } from './types.ts';

/**
 * Brute-force k-nearest neighbours. All query-to-train similarities come from one blocked
 * matrix product (A·Bᵀ, WebAssembly SIMD when available): cosine = dot of unit rows, squared
 * euclidean = |q|² + |x|² − 2 q·x. Votes are weighted by distance (optional) and class weight
 * ('balanced'); predictProba is the normalised vote.
 */
export const paramSpecs: ParamSpecs = {
  k: { type: 'int', default: 5, min: 1, description: 'number of neighbours' },
  metric: { type: 'string', default: 'euclidean', choices: ['euclidean', 'cosine'], description: 'distance' },
  weights: { type: 'string', default: 'uniform', choices: ['uniform', 'distance'], description: 'vote weighting' },
  // Off by default, as in scikit-learn: pooled conv features share one scale, and standardising
  // amplifies near-constant dimensions (measured: -0.3 to -0.7 points on cats-vs-dogs).
  standardize: { type: 'boolean', default: false, description: 'standardise features (fitted on train)' },
};

interface State { n: number; X: string; y: string; classWeight: string }

/** Rows scaled to unit length (zero rows stay zero). */
function normalizeRows(X: Float32Array, n: number, d: number): Float32Array {
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += X[i * d + j]! * X[i * d + j]!;
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let j = 0; j < d; j++) out[i * d + j] = X[i * d + j]! * inv;
  }
  return out;
}

const QUERY_BLOCK = 1024;

export class KnnHead extends BaseHead {
  readonly kind = 'knn';
  X_?: Float32Array;
  y_?: Int32Array;
  n_ = 0;
  classWeight_?: Float32Array;
  private sq_?: Float64Array;

  protected async fitImpl(X: Matrix, y: Int32Array, opts: FitOptions): Promise<void> {
    this.n_ = X.rows;
    this.X_ = this.params.metric === 'cosine' ? normalizeRows(X.data, X.rows, X.cols) : Float32Array.from(X.data);
    this.y_ = Int32Array.from(y);
    this.classWeight_ = Float32Array.from(classWeights(y, opts.nClasses, opts.classWeight));
    this.sq_ = undefined;
  }

  protected async probaImpl(Xq: Matrix): Promise<Matrix> {
    const d = Xq.cols;
    const n = this.n_;
    const K = this.nClasses_!;
    const k = Math.min(this.params.k as number, n);
    const cosine = this.params.metric === 'cosine';
    const byDistance = this.params.weights === 'distance';
    const Q = cosine ? normalizeRows(Xq.data, Xq.rows, d) : Xq.data;
    this.sq_ ??= rowSqNorms(this.X_!, n, d);
    const sq = this.sq_;
    const out = new Float32Array(Xq.rows * K);

    const bestD = new Float64Array(k);
    const bestI = new Int32Array(k);
    const votes = new Float64Array(K);
    for (let q0 = 0; q0 < Xq.rows; q0 += QUERY_BLOCK) {
      const rows = Math.min(QUERY_BLOCK, Xq.rows - q0);
      // Similarities as one GEMM per block, on ONNX Runtime's MLAS kernels (see linalg/ort-gemm.ts).
      const S = await matmulABtOrt(Q.subarray(q0 * d, (q0 + rows) * d), rows, this.X_!, n, d);
      for (let r = 0; r < rows; r++) {
        const so = r * n;
        let qq = 0;
        if (!cosine) for (let j = 0; j < d; j++) qq += Q[(q0 + r) * d + j]! * Q[(q0 + r) * d + j]!;
        // Keep the k smallest distances by insertion (k is small); ties keep the lower index.
        let filled = 0;
        for (let j = 0; j < n; j++) {
          const dist = cosine ? 1 - S[so + j]! : Math.max(0, qq + sq[j]! - 2 * S[so + j]!);
          if (filled === k && dist >= bestD[k - 1]!) continue;
          let p = filled < k ? filled++ : k - 1;
          while (p > 0 && bestD[p - 1]! > dist) {
            bestD[p] = bestD[p - 1]!;
            bestI[p] = bestI[p - 1]!;
            p--;
          }
          bestD[p] = dist;
          bestI[p] = j;
        }
        votes.fill(0);
        let exact = false;
        if (byDistance) for (let t = 0; t < k; t++) if (bestD[t]! <= 1e-12) exact = true;
        for (let t = 0; t < k; t++) {
          const c = this.y_![bestI[t]!]!;
          let w = this.classWeight_![c]!;
          if (byDistance) {
            const dd = cosine ? bestD[t]! : Math.sqrt(bestD[t]!);
            w = exact ? (bestD[t]! <= 1e-12 ? w : 0) : w / dd;
          }
          votes[c]! += w;
        }
        let tot = 0;
        for (let c = 0; c < K; c++) tot += votes[c]!;
        const o = (q0 + r) * K;
        for (let c = 0; c < K; c++) out[o + c] = tot > 0 ? votes[c]! / tot : 1 / K;
      }
    }
    return { data: out, rows: Xq.rows, cols: K };
  }

  protected getState(): State {
    return { n: this.n_, X: encodeF32(this.X_!), y: encodeI32(this.y_!), classWeight: encodeF32(this.classWeight_!) };
  }

  protected setState(s: unknown): void {
    const st = s as State;
    this.n_ = st.n;
    this.X_ = decodeF32(st.X);
    this.y_ = decodeI32(st.y);
    this.classWeight_ = decodeF32(st.classWeight);
  }
}

export const knnHead: HeadDef = defineHead('knn', paramSpecs, (params) => new KnnHead(params), {
  rows: { knn: { params: {}, tieRank: 5 } },
  tuneGrid: { k: [1, 3, 5, 7, 11, 15, 21] },
  quickParams: {},
  savesDirectory: false,
});
