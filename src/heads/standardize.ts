import type { Matrix } from './types.ts';
import { decodeF32, encodeF32 } from './codec.ts';

/** How a Standardizer is saved inside a head's JSON. */
export interface StandardizerJson {
  enabled: boolean;
  mean: string;
  scale: string;
}

/**
 * Per-feature standardisation (x - mean) / std, fitted on the training split only and saved with
 * the head. Constant features get std 1 (as scikit-learn's StandardScaler). `identity()` is used
 * when a head is created with standardize=false so the code path stays the same.
 */
export class Standardizer {
  constructor(
    readonly mean: Float32Array,
    readonly scale: Float32Array,
    readonly enabled: boolean,
  ) {}

  static fit(X: Matrix, enabled = true): Standardizer {
    const { rows: n, cols: d, data } = X;
    const mean = new Float32Array(d);
    const scale = new Float32Array(d).fill(1);
    if (!enabled || n === 0) return new Standardizer(mean, scale, enabled);
    // One pass of shifted sums (shift = first row) keeps float64 sums well conditioned.
    const shift = Float64Array.from(data.subarray(0, d));
    const s1 = new Float64Array(d);
    const s2 = new Float64Array(d);
    for (let i = 0; i < n; i++) {
      const o = i * d;
      for (let j = 0; j < d; j++) {
        const v = data[o + j]! - shift[j]!;
        s1[j]! += v;
        s2[j]! += v * v;
      }
    }
    for (let j = 0; j < d; j++) {
      const m = s1[j]! / n;
      mean[j] = shift[j]! + m;
      const sd = Math.sqrt(Math.max(0, s2[j]! / n - m * m));
      scale[j] = sd > 1e-12 ? sd : 1;
    }
    return new Standardizer(mean, scale, enabled);
  }

  /** A new standardised matrix (the input is never mutated). */
  transform(X: Matrix): Matrix {
    if (!this.enabled) return X;
    const { rows: n, cols: d, data } = X;
    const out = new Float32Array(n * d);
    const inv = new Float64Array(d);
    const mean = Float64Array.from(this.mean);
    for (let j = 0; j < d; j++) inv[j] = 1 / this.scale[j]!;
    transformRows(data, out, n, d, mean, inv);
    return { data: out, rows: n, cols: d };
  }

  toJSON(): StandardizerJson {
    return { enabled: this.enabled, mean: encodeF32(this.mean), scale: encodeF32(this.scale) };
  }

  static fromJSON(j: StandardizerJson): Standardizer {
    return new Standardizer(decodeF32(j.mean), decodeF32(j.scale), j.enabled);
  }
}

function transformRows(
  src: Float32Array,
  dst: Float32Array,
  n: number,
  d: number,
  mean: Float64Array,
  inv: Float64Array,
): void {
  for (let i = 0; i < n; i++) {
    const o = i * d;
    for (let j = 0; j < d; j++) dst[o + j] = (src[o + j]! - mean[j]!) * inv[j]!;
  }
}
