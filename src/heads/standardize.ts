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
    const d = X.cols;
    if (!enabled || X.rows === 0) return new Standardizer(new Float32Array(d), new Float32Array(d).fill(1), enabled);
    const m = new RunningMoments(d);
    m.add(X);
    const { mean, scale } = m.result();
    return new Standardizer(Float32Array.from(mean), Float32Array.from(scale), enabled);
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

/**
 * Per-feature mean and standard deviation accumulated batch by batch (for sources too large to
 * hold): shifted sums (shift = the first row seen) in float64, as Standardizer.fit does in one
 * piece, so both give the same statistics up to rounding. Constant features get scale 1.
 */
export class RunningMoments {
  private shift?: Float64Array;
  private readonly s1: Float64Array;
  private readonly s2: Float64Array;
  private n = 0;

  constructor(readonly cols: number) {
    this.s1 = new Float64Array(cols);
    this.s2 = new Float64Array(cols);
  }

  add(X: Matrix): void {
    const { rows, cols: d, data } = X;
    if (d !== this.cols) throw new Error(`RunningMoments: ${d} columns, expected ${this.cols}`);
    if (rows === 0) return;
    const shift = (this.shift ??= Float64Array.from(data.subarray(0, d)));
    for (let i = 0; i < rows; i++) {
      const o = i * d;
      for (let j = 0; j < d; j++) {
        const v = data[o + j]! - shift[j]!;
        this.s1[j]! += v;
        this.s2[j]! += v * v;
      }
    }
    this.n += rows;
  }

  result(): { mean: Float64Array; scale: Float64Array; rows: number } {
    const d = this.cols;
    const mean = new Float64Array(d);
    const scale = new Float64Array(d).fill(1);
    if (this.n === 0) return { mean, scale, rows: 0 };
    for (let j = 0; j < d; j++) {
      const m = this.s1[j]! / this.n;
      mean[j] = this.shift![j]! + m;
      const sd = Math.sqrt(Math.max(0, this.s2[j]! / this.n - m * m));
      scale[j] = sd > 1e-12 ? sd : 1;
    }
    return { mean, scale, rows: this.n };
  }
}
