import type { Matrix } from './types.ts';
import { decodeF32, encodeF32 } from './common.ts';

/**
 * Per-feature standardisation (x - mean) / std, fitted on the training split only and saved with
 * the head. Constant features get std 1 (as scikit-learn's StandardScaler). `identity()` is used
 * when a head is created with standardize=false so the code path stays the same.
 */
export class Standardizer {
  constructor(readonly mean: Float32Array, readonly scale: Float32Array, readonly enabled: boolean) {}

  static fit(X: Matrix, enabled = true): Standardizer {
    const { rows: n, cols: d, data } = X;
    const mean = new Float64Array(d);
    const sq = new Float64Array(d);
    if (enabled) {
      for (let i = 0; i < n; i++) {
        const o = i * d;
        for (let j = 0; j < d; j++) mean[j]! += data[o + j]!;
      }
      for (let j = 0; j < d; j++) mean[j]! /= Math.max(1, n);
      for (let i = 0; i < n; i++) {
        const o = i * d;
        for (let j = 0; j < d; j++) {
          const v = data[o + j]! - mean[j]!;
          sq[j]! += v * v;
        }
      }
    }
    const scale = new Float32Array(d);
    for (let j = 0; j < d; j++) {
      const sd = Math.sqrt(sq[j]! / Math.max(1, n));
      scale[j] = enabled && sd > 1e-12 ? sd : 1;
    }
    return new Standardizer(Float32Array.from(mean), scale, enabled);
  }

  /** A new standardised matrix (the input is never mutated). */
  transform(X: Matrix): Matrix {
    if (!this.enabled) return X;
    const { rows: n, cols: d, data } = X;
    const out = new Float32Array(n * d);
    const inv = new Float32Array(d);
    for (let j = 0; j < d; j++) inv[j] = 1 / this.scale[j]!;
    for (let i = 0; i < n; i++) {
      const o = i * d;
      for (let j = 0; j < d; j++) out[o + j] = (data[o + j]! - this.mean[j]!) * inv[j]!;
    }
    return { data: out, rows: n, cols: d };
  }

  toJSON(): { enabled: boolean; mean: string; scale: string } {
    return { enabled: this.enabled, mean: encodeF32(this.mean), scale: encodeF32(this.scale) };
  }

  static fromJSON(j: { enabled: boolean; mean: string; scale: string }): Standardizer {
    return new Standardizer(decodeF32(j.mean), decodeF32(j.scale), j.enabled);
  }
}
