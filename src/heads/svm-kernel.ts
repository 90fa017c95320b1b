import { dot, mirrorLower, rowSqNorms } from '../linalg/matmul.ts';
import { matmulABtOrt } from '../linalg/ort-gemm.ts';

/** RBF kernel rows for SMO: the whole matrix precomputed on ONNX Runtime's GEMM, or rows on demand in an LRU cache. */

export interface KernelRows {
  /** Kernel values of global row i against all n rows. */
  row(i: number): Float32Array;
}

/** Kernel rows restricted to a subproblem's rows (identity when the subproblem is every row). */
export interface SubKernel {
  row(t: number): Float32Array;
}

export function subKernel(kern: KernelRows, sub: Int32Array, n: number): SubKernel {
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

export async function rbfKernelMatrix(X: Float32Array, n: number, d: number, gamma: number): Promise<Float32Array> {
  // The Gram matrix is most of an RBF fit: ONNX Runtime's GEMM does it ~5x faster than our wasm kernel.
  const K = await matmulABtOrt(X, n, X, n, d);
  const sq = new Float64Array(n);
  for (let i = 0; i < n; i++) sq[i] = K[i * n + i]!;
  // exp on the lower triangle only, then mirror.
  for (let i = 0; i < n; i++) {
    const o = i * n,
      si = sq[i]!;
    for (let j = 0; j <= i; j++) K[o + j] = Math.exp(-gamma * Math.max(0, si + sq[j]! - 2 * K[o + j]!));
  }
  mirrorLower(K, n);
  return K;
}

export class PrecomputedRows implements KernelRows {
  constructor(
    private readonly K: Float32Array,
    private readonly n: number,
  ) {}
  row(i: number): Float32Array {
    return this.K.subarray(i * this.n, (i + 1) * this.n);
  }
}

/** On-demand RBF rows with an LRU cache (Map iteration order = recency). */
export class CachedRows implements KernelRows {
  private readonly cache = new Map<number, Float32Array>();
  private readonly capacity: number;
  private readonly sq: Float64Array;
  constructor(
    private readonly X: Float32Array,
    private readonly n: number,
    private readonly d: number,
    private readonly gamma: number,
    cacheMB: number,
  ) {
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
