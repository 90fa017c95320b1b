import { Rng } from '../linalg/random.ts';
import type { Matrix } from '../heads/types.ts';

/**
 * Synthetic "bottleneck features" for scale benchmarks and tests: each class is a mixture of
 * `blobs` Gaussian clusters around random centres in a low-dimensional subspace, embedded in D
 * non-negative dimensions (like pooled ReLU features), so classes are not linearly separable and
 * an RBF kernel or kNN has something to find. Deterministic per seed.
 */
export function syntheticFeatures(
  n: number,
  D: number,
  classes: number,
  seed: number,
  opts: { blobs?: number; spread?: number } = {},
): { X: Matrix; y: Int32Array } {
  const rng = new Rng(seed);
  const blobs = opts.blobs ?? 4;
  const spread = opts.spread ?? 1.8;
  const latent = Math.min(16, D);
  const centres = new Float64Array(classes * blobs * latent).map(() => rng.normal() * 1.6);
  // A fixed random embedding latent → D, then ReLU-like shift.
  const E = new Float32Array(latent * D).map(() => rng.normal() / Math.sqrt(latent));
  const X = new Float32Array(n * D);
  const y = new Int32Array(n);
  const z = new Float64Array(latent);
  for (let i = 0; i < n; i++) {
    const c = i % classes;
    const b = rng.int(blobs);
    y[i] = c;
    for (let l = 0; l < latent; l++) z[l] = centres[(c * blobs + b) * latent + l]! + rng.normal() * spread;
    for (let j = 0; j < D; j++) {
      let v = 0;
      for (let l = 0; l < latent; l++) v += z[l]! * E[l * D + j]!;
      X[i * D + j] = Math.max(0, v + 0.5) + 0.05 * rng.normal();
    }
  }
  return { X: { data: X, rows: n, cols: D }, y };
}

/** Rows [from, to) of a synthetic set (a view, no copy). */
export function sliceRows(s: { X: Matrix; y: Int32Array }, from: number, to: number): { X: Matrix; y: Int32Array } {
  const d = s.X.cols;
  return { X: { data: s.X.data.subarray(from * d, to * d), rows: to - from, cols: d }, y: s.y.subarray(from, to) };
}
