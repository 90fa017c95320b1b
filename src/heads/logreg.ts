import { lbfgs } from '../linalg/lbfgs.ts';
import { matvec, matTvec, ResidentMatrix } from '../linalg/matmul.ts';
import { BaseHead, defineHead, softmaxRows } from './base.ts';
import { classWeights, decodeF32, encodeF32, type HeadDef, type ParamSpecs, LOG_C_GRID } from './common.ts';
import type { FitOptions, Matrix, RowBatches } from './types.ts';
import { fitLinearMinibatch, matrixBatches, MINIBATCH_PARAMS, minibatchNote, minibatchOptions } from './minibatch.ts';

/**
 * Logistic regression with L2 penalty and an unpenalised bias, solved by L-BFGS.
 * Objective as scikit-learn (lbfgs solver): Σ_i w_i·loss_i + ||W||² / (2C). Two classes use one
 * weight vector (binary logistic, as sklearn does); more use the multinomial (softmax) loss.
 */
export const paramSpecs: ParamSpecs = {
  C: { type: 'number', default: 1, min: 1e-12, description: 'inverse L2 regularisation strength (sklearn semantics)' },
  maxIter: { type: 'int', default: 100, min: 1, description: 'L-BFGS iterations' },
  tol: { type: 'number', default: 1e-4, min: 0, description: 'stop when max |gradient| <= tol' },
  // Off by default, as in scikit-learn: pooled conv features share one scale, and standardising
  // amplifies near-constant dimensions (measured: -0.3 to -0.7 points on cats-vs-dogs).
  standardize: { type: 'boolean', default: false, description: 'standardise features (fitted on train)' },
  simd: { type: 'boolean', default: true, description: 'use the WebAssembly SIMD matrix-vector kernels' },
  // L-BFGS keeps n × classes scores and does ~100 full passes; past minibatchAbove rows the same
  // objective is minimised by mini-batch Adam (src/heads/minibatch.ts, README "Heads past 100k rows").
  solver: {
    type: 'string',
    default: 'auto',
    choices: ['auto', 'lbfgs', 'minibatch'],
    description: "'auto' = L-BFGS up to minibatchAbove rows, mini-batch Adam beyond",
  },
  minibatchAbove: {
    type: 'int',
    default: 50000,
    min: 0,
    description: 'training rows above which solver=auto trains by mini-batches',
  },
  ...MINIBATCH_PARAMS,
};

interface State {
  nRows: number;
  W: string;
  b: string;
  iterations: number;
  variant?: string;
}

export class LogRegHead extends BaseHead {
  readonly kind = 'logreg';
  /** nRows × d weights (nRows = 1 for binary, else nClasses), float32 so save/load is exact. */
  W_?: Float32Array;
  b_?: Float32Array;
  iterations_ = 0;
  /** Which solver ran and why (compare puts it in the report); undefined for L-BFGS. */
  variant_?: string;

  protected async fitImpl(X: Matrix, y: Int32Array, opts: FitOptions): Promise<void> {
    const { rows: n, cols: d, data } = X;
    const K = opts.nClasses;
    const R = K === 2 ? 1 : K;
    const cw = classWeights(y, K, opts.classWeight);
    this.variant_ = undefined;
    const solver = this.params.solver as string;
    if (solver === 'minibatch' || (solver === 'auto' && n > (this.params.minibatchAbove as number))) {
      const r = await fitLinearMinibatch(matrixBatches(X, y), minibatchOptions(this.params, 'logistic', K, cw, opts));
      this.W_ = Float32Array.from(r.W);
      this.b_ = Float32Array.from(r.b);
      this.iterations_ = r.epochs;
      this.variant_ = minibatchNote(this.params, solver, n);
      return;
    }
    const sw = new Float64Array(n);
    for (let i = 0; i < n; i++) sw[i] = cw[y[i]!]!;
    const alpha = 1 / (this.params.C as number);
    const P = R * (d + 1); // parameter layout: [W row 0 (d), ..., W row R-1, b (R)]
    const Z = new Float64Array(n * R);
    // SIMD matrix-vector products on a resident copy of X when available (float32 accumulation,
    // ample for tol=1e-4), scalar float64 loops otherwise.
    const res = this.params.simd === false ? null : ResidentMatrix.create(data, n, d);
    const fg = (x: Float64Array, g: Float64Array): number => {
      // Scores Z = X·Wᵀ + b.
      for (let r = 0; r < R; r++) {
        if (res) res.matvec(x, r * d, Z, R, r, x[R * d + r]!);
        else matvec(data, n, d, x, r * d, Z, R, r, x[R * d + r]!);
      }
      // Loss and residuals (written back into Z).
      let loss = 0;
      if (R === 1) {
        for (let i = 0; i < n; i++) {
          const z = Z[i]!;
          const t = y[i] === 1 ? 1 : -1;
          const m = t * z;
          // log(1 + exp(-m)), stable
          loss += sw[i]! * (m > 0 ? Math.log1p(Math.exp(-m)) : -m + Math.log1p(Math.exp(m)));
          const p = 1 / (1 + Math.exp(-z));
          Z[i] = sw[i]! * (p - (t === 1 ? 1 : 0));
        }
      } else {
        for (let i = 0; i < n; i++) {
          const o = i * R;
          let mx = -Infinity;
          for (let r = 0; r < R; r++) if (Z[o + r]! > mx) mx = Z[o + r]!;
          let s = 0;
          for (let r = 0; r < R; r++) s += Math.exp(Z[o + r]! - mx);
          const lse = mx + Math.log(s);
          loss += sw[i]! * (lse - Z[o + y[i]!]!);
          for (let r = 0; r < R; r++) Z[o + r] = sw[i]! * (Math.exp(Z[o + r]! - lse) - (r === y[i] ? 1 : 0));
        }
      }
      // Gradient: G_r = Σ_i resid_ir x_i + alpha W_r; bias gradient = Σ resid.
      for (let r = 0; r < R; r++) {
        if (res) res.matTvec(Z, R, r, g, r * d);
        else matTvec(data, n, d, Z, R, r, g, r * d);
        let gb = 0;
        for (let i = 0; i < n; i++) gb += Z[i * R + r]!;
        const wo = r * d;
        let reg = 0;
        for (let k = 0; k < d; k++) {
          const w = x[wo + k]!;
          reg += w * w;
          g[wo + k]! += alpha * w;
        }
        loss += 0.5 * alpha * reg;
        g[R * d + r] = gb;
      }
      return loss;
    };
    const opt = lbfgs(fg, new Float64Array(P), {
      maxIter: this.params.maxIter as number,
      gtol: this.params.tol as number,
    });
    if (!opt.converged)
      opts.log?.warn(`logreg: L-BFGS stopped after ${opt.iterations} iterations without converging (raise maxIter)`);
    this.W_ = Float32Array.from(opt.x.subarray(0, R * d));
    this.b_ = Float32Array.from(opt.x.subarray(R * d));
    this.iterations_ = opt.iterations;
  }

  /** Mini-batch training over rows streamed from disk (train-head --stream). */
  async fitBatches(src: RowBatches, opts: FitOptions): Promise<void> {
    this.beginStreamedFit(src, opts);
    const r = await fitLinearMinibatch(
      src,
      minibatchOptions(this.params, 'logistic', opts.nClasses, opts.classWeight, opts),
    );
    this.W_ = Float32Array.from(r.W);
    this.b_ = Float32Array.from(r.b);
    this.iterations_ = r.epochs;
    this.variant_ = minibatchNote(this.params, 'stream', src.rows);
  }

  /** Raw scores, rows × nRows. */
  decisionFunction(X: Matrix): Float64Array {
    const { rows: n, cols: d, data } = X;
    const W = this.W_!;
    const R = this.b_!.length;
    const Z = new Float64Array(n * R);
    for (let i = 0; i < n; i++) {
      for (let r = 0; r < R; r++) {
        let s = this.b_![r]!;
        for (let k = 0; k < d; k++) s += data[i * d + k]! * W[r * d + k]!;
        Z[i * R + r] = s;
      }
    }
    return Z;
  }

  protected async probaImpl(X: Matrix): Promise<Matrix> {
    const Z = this.decisionFunction(X);
    const R = this.b_!.length;
    if (R > 1) return softmaxRows(Z, X.rows, R);
    const out = new Float32Array(X.rows * 2);
    for (let i = 0; i < X.rows; i++) {
      const p = 1 / (1 + Math.exp(-Z[i]!));
      out[2 * i + 1] = p;
      out[2 * i] = 1 - p;
    }
    return { data: out, rows: X.rows, cols: 2 };
  }

  protected getState(): State {
    return {
      nRows: this.b_!.length,
      W: encodeF32(this.W_!),
      b: encodeF32(this.b_!),
      iterations: this.iterations_,
      ...(this.variant_ ? { variant: this.variant_ } : {}),
    };
  }

  protected setState(s: unknown): void {
    const st = s as State;
    this.W_ = decodeF32(st.W);
    this.b_ = decodeF32(st.b);
    this.iterations_ = st.iterations;
    this.variant_ = st.variant;
  }
}

export const logregHead: HeadDef = defineHead('logreg', paramSpecs, (params) => new LogRegHead(params), {
  rows: { logreg: { params: {}, tieRank: 1 } },
  tuneGrid: { C: LOG_C_GRID },
  quickParams: {},
  savesDirectory: false,
});
