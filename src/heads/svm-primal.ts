import { lbfgs } from '../linalg/lbfgs.ts';
import { matTvec, matvec, ResidentMatrix } from '../linalg/matmul.ts';
import type { Matrix } from './types.ts';

/**
 * Linear SVM with the squared hinge loss solved in the primal by L-BFGS:
 *   min_w,b  ½‖w‖² + Σ_i C_i · max(0, 1 − y_i (w·x_i + b))²
 * (the bias is penalised too, as liblinear's constant-1 feature is). The loss is differentiable, so
 * each iteration is two passes over X (a matrix-vector product and its transpose), however many
 * rows there are. scikit-learn's LinearSVC picks the primal problem for n_samples > n_features
 * (dual="auto"); the dual coordinate descent needs many epochs over all rows on large,
 * overlapping data (measured: > 10 min at 160 000 × 768 under load). Returns w (d + 1, last = bias).
 */
export function linearPrimalSquaredHinge(
  X: Matrix,
  y: Int8Array,
  Cs: Float64Array,
  opts: { maxIter: number; tol: number },
): { w: Float64Array; iterations: number; converged: boolean } {
  const { rows: n, cols: d, data } = X;
  const z = new Float64Array(n);
  const res = ResidentMatrix.create(data, n, d);
  let Csum = 0;
  for (let i = 0; i < n; i++) Csum += Cs[i]!;
  const fg = (x: Float64Array, g: Float64Array): number => {
    if (res) res.matvec(x, 0, z, 1, 0, x[d]!);
    else matvec(data, n, d, x, 0, z, 1, 0, x[d]!);
    let loss = 0;
    let gb = 0;
    for (let i = 0; i < n; i++) {
      const m = 1 - y[i]! * z[i]!;
      if (m > 0) {
        loss += Cs[i]! * m * m;
        z[i] = -2 * Cs[i]! * m * y[i]!;
        gb += z[i]!;
      } else z[i] = 0;
    }
    if (res) res.matTvec(z, 1, 0, g, 0);
    else matTvec(data, n, d, z, 1, 0, g, 0);
    let reg = 0;
    for (let k = 0; k <= d; k++) reg += x[k]! * x[k]!;
    for (let k = 0; k < d; k++) g[k]! += x[k]!;
    g[d] = gb + x[d]!;
    return loss + 0.5 * reg;
  };
  // Gradient tolerance relative to the loss scale (ΣC_i, the loss at w = 0), as liblinear's primal solvers do.
  const r = lbfgs(fg, new Float64Array(d + 1), { maxIter: opts.maxIter, gtol: opts.tol * Math.max(1, Csum) });
  return { w: r.x, iterations: r.iterations, converged: r.converged };
}
