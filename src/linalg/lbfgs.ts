/**
 * Limited-memory BFGS for smooth unconstrained minimisation (Nocedal & Wright, alg. 7.4/7.5)
 * with a backtracking line search satisfying the Armijo condition, plus a curvature check before
 * each memory update. Stops like scipy's L-BFGS-B as used by scikit-learn: max |g| ≤ gtol, or a
 * relative decrease of f below ftol, or maxIter iterations.
 */
export interface LbfgsOptions {
  /** History size (default 10). */
  m?: number;
  maxIter?: number;
  gtol?: number;
  ftol?: number;
}

export interface LbfgsResult {
  x: Float64Array;
  f: number;
  iterations: number;
  evaluations: number;
  converged: boolean;
}

/** fg(x, g) returns f(x) and writes ∇f(x) into g. */
export type Objective = (x: Float64Array, g: Float64Array) => number;

function dotv(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

function maxAbs(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const v = Math.abs(a[i]!);
    if (v > m) m = v;
  }
  return m;
}

export function lbfgs(fg: Objective, x0: Float64Array, opts: LbfgsOptions = {}): LbfgsResult {
  const mem = opts.m ?? 10;
  const maxIter = opts.maxIter ?? 100;
  const gtol = opts.gtol ?? 1e-5;
  const ftol = opts.ftol ?? 2.220446049250313e-9;
  const n = x0.length;
  const x = Float64Array.from(x0);
  const g = new Float64Array(n);
  const xNew = new Float64Array(n);
  const gNew = new Float64Array(n);
  const dir = new Float64Array(n);
  const S = Array.from({ length: mem }, () => new Float64Array(n));
  const Y = Array.from({ length: mem }, () => new Float64Array(n));
  const rho = new Float64Array(mem);
  const alpha = new Float64Array(mem);
  let stored = 0;
  let head = 0; // index of the next slot to write
  let f = fg(x, g);
  let evaluations = 1;
  let iterations = 0;
  let converged = maxAbs(g) <= gtol;

  while (!converged && iterations < maxIter) {
    // Two-loop recursion: dir = -H·g.
    for (let i = 0; i < n; i++) dir[i] = -g[i]!;
    for (let t = 0; t < stored; t++) {
      const k = (head - 1 - t + mem) % mem;
      const a = rho[k]! * dotv(S[k]!, dir);
      alpha[k] = a;
      const yk = Y[k]!;
      for (let i = 0; i < n; i++) dir[i]! -= a * yk[i]!;
    }
    if (stored > 0) {
      const k = (head - 1 + mem) % mem;
      const gamma = dotv(S[k]!, Y[k]!) / dotv(Y[k]!, Y[k]!);
      for (let i = 0; i < n; i++) dir[i]! *= gamma;
    }
    for (let t = stored - 1; t >= 0; t--) {
      const k = (head - 1 - t + mem) % mem;
      const b = rho[k]! * dotv(Y[k]!, dir);
      const sk = S[k]!;
      const c = alpha[k]! - b;
      for (let i = 0; i < n; i++) dir[i]! += c * sk[i]!;
    }
    let slope = dotv(g, dir);
    if (!(slope < 0)) {
      // Not a descent direction (numerical trouble): restart from steepest descent.
      stored = 0;
      for (let i = 0; i < n; i++) dir[i] = -g[i]!;
      slope = dotv(g, dir);
    }
    // First step: scale so the step has unit length; later steps try the full quasi-Newton step.
    let step = stored === 0 ? Math.min(1, 1 / Math.sqrt(dotv(dir, dir))) : 1;
    let fNew = Infinity;
    let ok = false;
    for (let ls = 0; ls < 40; ls++) {
      for (let i = 0; i < n; i++) xNew[i] = x[i]! + step * dir[i]!;
      fNew = fg(xNew, gNew);
      evaluations++;
      if (Number.isFinite(fNew) && fNew <= f + 1e-4 * step * slope) {
        ok = true;
        break;
      }
      step *= 0.5;
    }
    iterations++;
    if (!ok) break; // cannot decrease further: at the floating-point optimum
    // Memory update when curvature is positive.
    const sk = S[head]!;
    const yk = Y[head]!;
    for (let i = 0; i < n; i++) {
      sk[i] = xNew[i]! - x[i]!;
      yk[i] = gNew[i]! - g[i]!;
    }
    const sy = dotv(sk, yk);
    if (sy > 1e-10 * dotv(yk, yk)) {
      rho[head] = 1 / sy;
      head = (head + 1) % mem;
      stored = Math.min(stored + 1, mem);
    }
    const fOld = f;
    x.set(xNew);
    g.set(gNew);
    f = fNew;
    if (maxAbs(g) <= gtol) converged = true;
    else if ((fOld - f) / Math.max(Math.abs(fOld), Math.abs(f), 1) <= ftol) converged = true;
  }
  return { x, f, iterations, evaluations, converged };
}
