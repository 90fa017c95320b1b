import { dot, matmulABt, rowSqNorms } from '../linalg/matmul.ts';
import { Rng } from '../linalg/random.ts';
import { BaseHead, defineHead } from './base.ts';
import { classWeights, decodeF32, encodeF32, type HeadDef, type ParamSpecs, LOG_C_GRID } from './common.ts';
import type { FitOptions, Matrix, RowBatches } from './types.ts';
import { UserError } from '../util/errors.ts';
import { plattFit, plattPredict, couple } from './svm-platt.ts';
import { CachedRows, PrecomputedRows, rbfKernelMatrix, subKernel, type KernelRows } from './svm-kernel.ts';
import { smo } from './svm-smo.ts';
import { linearDcd } from './svm-linear.ts';
import { NystroemMap, type NystroemJSON } from './nystroem.ts';
import { linearPrimalSquaredHinge } from './svm-primal.ts';
import { fitLinearMinibatch, matrixBatches, MINIBATCH_PARAMS, minibatchNote, minibatchOptions } from './minibatch.ts';

/**
 * Support vector classifier.
 * - kernel 'linear': liblinear's dual coordinate descent (Hsieh et al. 2008) with shrinking,
 *   squared hinge (default, as LinearSVC) or hinge loss, bias as a constant feature, one-vs-rest.
 * - kernel 'rbf': libsvm's SMO with second-order working-set selection (Fan et al. 2005).
 *   The kernel matrix is precomputed with one ONNX Runtime GEMM (K = X·Xᵀ) when n ≤ maxPrecompute, otherwise
 *   rows are computed on demand and kept in an LRU cache. Multi-class: one-vs-one (default, as
 *   libsvm) or one-vs-rest.
 * Class weights scale C per sample. Probabilities: Platt sigmoids (libsvm's Newton fit) on
 * decision values of opts.val when given, else of the training rows; one-vs-one pairs are joined
 * by pairwise coupling (Wu, Lin & Weng 2004), one-vs-rest sigmoids are normalised.
 * predict() uses the decision function (votes / argmax), like scikit-learn.
 * This file is the head; the solvers live beside it: svm-linear.ts (dual CD), svm-smo.ts (SMO),
 * svm-kernel.ts (RBF kernel rows) and svm-platt.ts (probabilities).
 */
export const paramSpecs: ParamSpecs = {
  C: { type: 'number', default: 1, min: 1e-12, description: 'penalty of the error term' },
  kernel: { type: 'string', default: 'rbf', choices: ['rbf', 'linear'], description: 'kernel' },
  gamma: {
    type: 'number',
    default: 'scale',
    min: 1e-12,
    choices: ['scale', 'auto'],
    description: "RBF width: 'scale' = 1/(d·var(X)), 'auto' = 1/d, or a number",
  },
  loss: {
    type: 'string',
    default: 'squared_hinge',
    choices: ['squared_hinge', 'hinge'],
    description: 'linear kernel loss',
  },
  multiClass: {
    type: 'string',
    default: 'ovo',
    choices: ['ovo', 'ovr'],
    description: 'RBF multi-class scheme (linear is always ovr)',
  },
  tol: {
    type: 'number',
    default: 'auto',
    min: 1e-12,
    choices: ['auto'],
    description: "stopping tolerance ('auto': 1e-3 rbf, 1e-4 linear)",
  },
  maxIter: {
    type: 'int',
    default: 0,
    min: 0,
    description: 'iteration cap (0 = default: 1000 epochs linear, 10⁷ SMO steps rbf)',
  },
  // 12000 rows = a 576 MB float32 Gram matrix, computed in seconds by ORT's GEMM; beyond it an LRU row cache.
  maxPrecompute: {
    type: 'int',
    default: 12000,
    min: 0,
    description: 'precompute the full kernel matrix up to this many rows',
  },
  cacheMB: { type: 'number', default: 500, min: 1, description: 'kernel row cache size when not precomputed' },
  // Exact SMO is O(n²) in kernel evaluations: past approxAbove rows the RBF kernel is approximated
  // (src/heads/nystroem.ts) and the linear solver runs on the mapped features (README "Heads past 100k rows").
  approx: {
    type: 'string',
    default: 'auto',
    choices: ['auto', 'exact', 'nystroem'],
    description: "RBF solver: 'auto' = exact up to approxAbove rows, Nyström + linear solver beyond",
  },
  approxAbove: {
    type: 'int',
    default: 20000,
    min: 0,
    description: 'training rows above which approx=auto uses Nyström',
  },
  components: {
    type: 'int',
    default: 1000,
    min: 1,
    description: 'Nyström landmarks (rank of the kernel approximation)',
  },
  solver: {
    type: 'string',
    default: 'auto',
    choices: ['auto', 'dual', 'primal', 'minibatch'],
    description:
      "linear solver: 'auto' = dual coordinate descent up to primalAbove rows, primal L-BFGS (squared hinge) up to minibatchAbove, mini-batch Adam beyond",
  },
  primalAbove: {
    type: 'int',
    default: 20000,
    min: 0,
    description: 'rows above which solver=auto trains the linear SVM in the primal (when rows > features)',
  },
  // Each L-BFGS iteration is two passes over all rows, ~100-300 iterations per one-vs-rest model;
  // mini-batches train every class's model in one pass per epoch (src/heads/minibatch.ts).
  minibatchAbove: {
    type: 'int',
    default: 50000,
    min: 0,
    description: 'rows above which solver=auto trains the linear SVM (squared hinge) by mini-batches',
  },
  ...MINIBATCH_PARAMS,
  // Off by default, as in scikit-learn: pooled conv features share one scale, and standardising
  // amplifies near-constant dimensions (measured: -0.3 to -0.7 points on cats-vs-dogs).
  standardize: { type: 'boolean', default: false, description: 'standardise features (fitted on train)' },
};

interface LinearState {
  type: 'linear';
  W: string;
  nModels: number;
  platt: string;
  nystroem?: NystroemJSON;
  variant?: string;
}
interface RbfState {
  type: 'rbf';
  gamma: number;
  nSV: number;
  SV: string;
  coef: string;
  rho: string;
  pairs: number[];
  platt: string;
  scheme: 'ovo' | 'ovr';
}

export class SvmHead extends BaseHead {
  readonly kind = 'svm';
  state_?: LinearState | RbfState;
  // Decoded state used by prediction.
  private W_?: Float32Array;
  private SV_?: Float32Array;
  private coef_?: Float32Array;
  private rho_?: Float32Array;
  private platt_?: Float32Array;
  private gamma_ = 0;
  /** Nyström map when the RBF kernel was approximated; the linear model then works on φ(x). */
  private map_?: NystroemMap;
  /** Which solver ran and why (compare puts it in the report). */
  variant_?: string;

  protected async fitImpl(X: Matrix, y: Int32Array, opts: FitOptions): Promise<void> {
    this.variant_ = undefined;
    this.map_ = undefined;
    const K = opts.nClasses;
    const cw = classWeights(y, K, opts.classWeight);
    const C = this.params.C as number;
    const Cs = new Float64Array(X.rows);
    for (let i = 0; i < X.rows; i++) Cs[i] = C * cw[y[i]!]!;
    const tolP = this.params.tol;
    const maxIterP = this.params.maxIter as number;
    if (this.params.kernel === 'linear') {
      await this.fitLinear(X, y, opts, Cs);
      return;
    }
    // RBF
    const { rows: n, cols: d, data } = X;
    const gp = this.params.gamma;
    let gamma: number;
    if (gp === 'scale') {
      let s = 0,
        s2 = 0;
      for (let i = 0; i < data.length; i++) {
        s += data[i]!;
        s2 += data[i]! * data[i]!;
      }
      const mean = s / data.length;
      const v = s2 / data.length - mean * mean;
      gamma = v > 0 ? 1 / (d * v) : 1;
    } else if (gp === 'auto') gamma = 1 / d;
    else gamma = gp as number;
    const approx = this.params.approx as string;
    if (approx === 'nystroem' || (approx === 'auto' && n > (this.params.approxAbove as number))) {
      const map = await NystroemMap.fit(X, gamma, this.params.components as number, opts.seed ?? 0);
      const val = opts.val ? { X: await map.transform(opts.val.X), y: opts.val.y } : undefined;
      await this.fitLinear(await map.transform(X), y, { ...opts, val }, Cs);
      this.map_ = map;
      const linear = this.variant_ as string | undefined;
      this.variant_ = `RBF kernel approximated: Nyström, ${map.m} landmarks, + linear ${linear?.startsWith('linear solver in the primal') ? 'primal L-BFGS ' : linear?.startsWith('trained by mini-batches') ? 'mini-batch ' : ''}solver (${approx === 'auto' ? `${n} training rows > approxAbove=${this.params.approxAbove as number}; exact SMO is O(n²)` : 'approx=nystroem'})`;
      (this.state_ as LinearState).variant = this.variant_;
      return;
    }
    const eps = tolP === 'auto' ? 1e-3 : (tolP as number);
    const maxIter = maxIterP > 0 ? maxIterP : 10_000_000;
    const kern: KernelRows =
      n <= (this.params.maxPrecompute as number)
        ? new PrecomputedRows(await rbfKernelMatrix(data, n, d, gamma), n)
        : new CachedRows(data, n, d, gamma, this.params.cacheMB as number);
    const scheme = K === 2 ? 'ovo' : (this.params.multiClass as 'ovo' | 'ovr');
    const pairs: number[] = [];
    if (scheme === 'ovo') for (let a = 0; a < K; a++) for (let b = a + 1; b < K; b++) pairs.push(a, b);
    else for (let a = 0; a < K; a++) pairs.push(a, -1);
    const nModels = pairs.length / 2;
    const models: { sub: Int32Array; coef: Float64Array; rho: number; dec: Float64Array; ys: Int8Array }[] = [];
    for (let m = 0; m < nModels; m++) {
      const a = pairs[2 * m]!,
        b = pairs[2 * m + 1]!;
      const rows: number[] = [];
      for (let i = 0; i < n; i++) if (b < 0 || y[i] === a || y[i] === b) rows.push(i);
      const sub = Int32Array.from(rows);
      const ys = new Int8Array(sub.length);
      const cs = new Float64Array(sub.length);
      for (let t = 0; t < sub.length; t++) {
        ys[t] = y[sub[t]!] === a ? 1 : -1;
        cs[t] = Cs[sub[t]!]!;
      }
      const r = smo(subKernel(kern, sub, n), ys, cs, eps, maxIter);
      if (r.iterations >= maxIter) opts.log?.warn(`svm: SMO hit maxIter=${maxIter} for model ${m}`);
      const coef = new Float64Array(sub.length);
      for (let t = 0; t < sub.length; t++) coef[t] = r.alpha[t]! * ys[t]!;
      models.push({ sub, coef, rho: r.rho, dec: r.dec, ys });
    }
    // Support vectors = union of rows with non-zero coefficient in any model.
    const svIndex = new Int32Array(n).fill(-1);
    let nSV = 0;
    for (const mdl of models)
      for (let t = 0; t < mdl.sub.length; t++)
        if (mdl.coef[t] !== 0 && svIndex[mdl.sub[t]!] === -1) svIndex[mdl.sub[t]!] = nSV++;
    const SV = new Float32Array(nSV * d);
    for (let i = 0; i < n; i++) if (svIndex[i]! >= 0) SV.set(data.subarray(i * d, (i + 1) * d), svIndex[i]! * d);
    const coefAll = new Float32Array(nModels * nSV);
    const rho = new Float32Array(nModels);
    models.forEach((mdl, m) => {
      for (let t = 0; t < mdl.sub.length; t++)
        if (mdl.coef[t] !== 0) coefAll[m * nSV + svIndex[mdl.sub[t]!]!] = mdl.coef[t]!;
      rho[m] = mdl.rho;
    });
    this.SV_ = SV;
    this.coef_ = coefAll;
    this.rho_ = rho;
    this.gamma_ = gamma;
    this.state_ = { type: 'rbf', gamma, nSV, SV: '', coef: '', rho: '', pairs, platt: '', scheme };
    this.platt_ = new Float32Array(2 * nModels);
    const { Xp, yp } = this.plattData(X, y, opts);
    if (Xp !== X) {
      this.fitPlatt(this.decision(Xp), yp, nModels, (m) => [pairs[2 * m]!, pairs[2 * m + 1]!]);
    } else {
      // Training rows: SMO already has each model's decision values on its own rows.
      models.forEach((mdl, m) => {
        const [A, B] = plattFit(
          mdl.dec,
          Uint8Array.from(mdl.ys, (v) => (v === 1 ? 1 : 0)),
        );
        this.platt_![2 * m] = A;
        this.platt_![2 * m + 1] = B;
      });
    }
  }

  /** liblinear-style dual coordinate descent per one-vs-rest model, then Platt sigmoids. */
  private async fitLinear(X: Matrix, y: Int32Array, opts: FitOptions, Cs: Float64Array): Promise<void> {
    const K = opts.nClasses;
    const tolP = this.params.tol;
    const maxIterP = this.params.maxIter as number;
    const eps = tolP === 'auto' ? 1e-4 : (tolP as number);
    const maxIter = maxIterP > 0 ? maxIterP : 1000;
    const rng = new Rng(opts.seed ?? 0);
    const nModels = K === 2 ? 1 : K;
    const d = X.cols;
    const W = new Float32Array(nModels * (d + 1));
    const ys = new Int8Array(X.rows);
    const squared = this.params.loss === 'squared_hinge';
    const solver = this.params.solver as string;
    const minibatch =
      squared &&
      (solver === 'minibatch' || (solver === 'auto' && X.rows > (this.params.minibatchAbove as number) && X.rows > d));
    const primal =
      squared &&
      !minibatch &&
      (solver === 'primal' || (solver === 'auto' && X.rows > (this.params.primalAbove as number) && X.rows > d));
    if (minibatch) {
      // One-vs-rest scores for all classes at once (one score for two classes, class 1 positive),
      // the same layout as the per-model solvers below.
      const cw = classWeights(y, K, opts.classWeight);
      const r = await fitLinearMinibatch(
        matrixBatches(X, y),
        minibatchOptions(this.params, 'squared_hinge', K, cw, opts),
      );
      for (let m = 0; m < nModels; m++) {
        for (let j = 0; j < d; j++) W[m * (d + 1) + j] = r.W[m * d + j]!;
        W[m * (d + 1) + d] = r.b[m]!;
      }
      this.variant_ = minibatchNote(this.params, solver, X.rows);
    }
    for (let m = 0; m < nModels && !minibatch; m++) {
      const pos = K === 2 ? 1 : m;
      for (let i = 0; i < X.rows; i++) ys[i] = y[i] === pos ? 1 : -1;
      W.set(
        primal
          ? linearPrimalSquaredHinge(X, ys, Cs, { maxIter: maxIterP > 0 ? maxIterP : 300, tol: eps }).w
          : linearDcd(X, ys, Cs, squared, eps, maxIter, rng),
        m * (d + 1),
      );
    }
    if (primal)
      this.variant_ = `linear solver in the primal (L-BFGS, squared hinge): ${solver === 'auto' ? `${X.rows} rows > primalAbove=${this.params.primalAbove as number} and > ${d} features; dual coordinate descent needs many passes over all rows` : 'solver=primal'}`;
    this.W_ = W;
    this.state_ = { type: 'linear', W: '', nModels, platt: '', ...(this.variant_ ? { variant: this.variant_ } : {}) };
    this.platt_ = new Float32Array(2 * nModels);
    const { Xp, yp } = this.plattData(X, y, opts);
    this.fitPlatt(this.decision(Xp), yp, nModels, (m) => (K === 2 ? [1, 0] : [m, -1]));
  }

  /**
   * Linear kernel, squared hinge, trained by mini-batches over rows streamed from disk
   * (train-head --stream). Platt sigmoids on the validation split (when it has every class), else
   * on the first 20 000 streamed rows.
   */
  async fitBatches(src: RowBatches, opts: FitOptions): Promise<void> {
    if (this.params.kernel !== 'linear' || this.params.loss !== 'squared_hinge')
      throw new UserError('svm: only kernel=linear with loss=squared_hinge trains from streamed batches');
    this.beginStreamedFit(src, opts);
    this.map_ = undefined;
    const K = opts.nClasses;
    const d = src.cols;
    const nModels = K === 2 ? 1 : K;
    const r = await fitLinearMinibatch(src, minibatchOptions(this.params, 'squared_hinge', K, opts.classWeight, opts));
    const W = new Float32Array(nModels * (d + 1));
    for (let m = 0; m < nModels; m++) {
      for (let j = 0; j < d; j++) W[m * (d + 1) + j] = r.W[m * d + j]!;
      W[m * (d + 1) + d] = r.b[m]!;
    }
    this.W_ = W;
    this.variant_ = minibatchNote(this.params, 'stream', src.rows);
    this.state_ = { type: 'linear', W: '', nModels, platt: '', variant: this.variant_ };
    this.platt_ = new Float32Array(2 * nModels);
    let Xp: Matrix, yp: Int32Array;
    if (opts.val && new Set(opts.val.y).size === K) ({ X: Xp, y: yp } = opts.val);
    else {
      const cap = Math.min(src.rows, 20000);
      const data = new Float32Array(cap * d);
      yp = new Int32Array(cap);
      let k = 0;
      for await (const b of src.pass(8192)) {
        const take = Math.min(b.X.rows, cap - k);
        data.set(b.X.data.subarray(0, take * d), k * d);
        yp.set(b.y.subarray(0, take), k);
        k += take;
        if (k >= cap) break;
      }
      Xp = { data, rows: cap, cols: d };
    }
    this.fitPlatt(this.decision(Xp), yp, nModels, (m) => (K === 2 ? [1, 0] : [m, -1]));
  }

  /** Rows for the Platt fit: the validation split when it has every class, else the training rows. */
  private plattData(X: Matrix, y: Int32Array, opts: FitOptions): { Xp: Matrix; yp: Int32Array } {
    if (opts.val) {
      const seen = new Set(opts.val.y);
      if (seen.size === opts.nClasses) return { Xp: opts.val.X, yp: opts.val.y };
    }
    return { Xp: X, yp: y };
  }

  /** Fit one sigmoid per model on rows of its two sides (b = -1: the rest). */
  private fitPlatt(dec: Float64Array, y: Int32Array, nModels: number, sides: (m: number) => [number, number]): void {
    for (let m = 0; m < nModels; m++) {
      const [a, b] = sides(m);
      const f: number[] = [];
      const pos: number[] = [];
      for (let i = 0; i < y.length; i++) {
        if (b >= 0 && y[i] !== a && y[i] !== b) continue;
        f.push(dec[i * nModels + m]!);
        pos.push(y[i] === a ? 1 : 0);
      }
      const [A, B] = f.length > 0 ? plattFit(Float64Array.from(f), Uint8Array.from(pos)) : [-1, 0];
      this.platt_![2 * m] = A;
      this.platt_![2 * m + 1] = B;
    }
  }

  /** Decision values, rows × nModels (positive = first side of each model). */
  decision(X: Matrix): Float64Array {
    const { rows: n, cols: d, data } = X;
    if (this.state_!.type === 'linear') {
      const nm = this.state_!.nModels;
      const W = this.W_!;
      const out = new Float64Array(n * nm);
      for (let i = 0; i < n; i++)
        for (let m = 0; m < nm; m++) out[i * nm + m] = dot(data, i * d, W, m * (d + 1), d) + W[m * (d + 1) + d]!;
      return out;
    }
    const st = this.state_ as RbfState;
    const nSV = st.nSV;
    const nm = this.rho_!.length;
    const out = new Float64Array(n * nm);
    if (nSV === 0) {
      for (let i = 0; i < n; i++) for (let m = 0; m < nm; m++) out[i * nm + m] = -this.rho_![m]!;
      return out;
    }
    const block = 1024;
    const Kb = new Float32Array(Math.min(block, n) * nSV);
    const svSq = rowSqNorms(this.SV_!, nSV, d);
    const g = this.gamma_;
    for (let i0 = 0; i0 < n; i0 += block) {
      const rows = Math.min(block, n - i0);
      matmulABt(data.subarray(i0 * d, (i0 + rows) * d), rows, this.SV_!, nSV, d, Kb);
      for (let r = 0; r < rows; r++) {
        const xx = dot(data, (i0 + r) * d, data, (i0 + r) * d, d);
        const ko = r * nSV;
        for (let s = 0; s < nSV; s++) Kb[ko + s] = Math.exp(-g * Math.max(0, xx + svSq[s]! - 2 * Kb[ko + s]!));
        for (let m = 0; m < nm; m++) {
          const co = m * nSV;
          let acc = 0;
          for (let s = 0; s < nSV; s++) acc += this.coef_![co + s]! * Kb[ko + s]!;
          out[(i0 + r) * nm + m] = acc - this.rho_![m]!;
        }
      }
    }
    return out;
  }

  private get isOvo(): boolean {
    return this.state_!.type === 'rbf' && (this.state_ as RbfState).scheme === 'ovo';
  }

  protected override async predictImpl(X: Matrix): Promise<Int32Array> {
    return this.votes(await this.decisionOf(X), X.rows);
  }

  protected async probaImpl(X: Matrix): Promise<Matrix> {
    return this.probaFromDecision(await this.decisionOf(X), X.rows);
  }

  /** One decision pass (and one Nyström map) for both outputs. */
  protected override async bothImpl(X: Matrix): Promise<{ pred: Int32Array; proba: Matrix }> {
    const dec = await this.decisionOf(X);
    return { pred: this.votes(dec, X.rows), proba: this.probaFromDecision(dec, X.rows) };
  }

  private async decisionOf(X: Matrix): Promise<Float64Array> {
    return this.decision(this.map_ ? await this.map_.transform(X) : X);
  }

  /** Labels from decision values (votes / argmax), as scikit-learn's predict. */
  private votes(dec: Float64Array, rows: number): Int32Array {
    const K = this.nClasses_!;
    const nm = dec.length / rows;
    const out = new Int32Array(rows);
    if (K === 2) {
      // Binary: linear's model has class 1 positive; rbf's pair (0,1) has class 0 positive.
      const posIs0 = this.state_!.type === 'rbf';
      for (let i = 0; i < rows; i++) out[i] = dec[i]! > 0 === posIs0 ? 0 : 1;
      return out;
    }
    if (this.isOvo) {
      const pairs = (this.state_ as RbfState).pairs;
      const votes = new Int32Array(K);
      for (let i = 0; i < rows; i++) {
        votes.fill(0);
        for (let m = 0; m < nm; m++) votes[dec[i * nm + m]! > 0 ? pairs[2 * m]! : pairs[2 * m + 1]!]!++;
        let best = 0;
        for (let c = 1; c < K; c++) if (votes[c]! > votes[best]!) best = c;
        out[i] = best;
      }
      return out;
    }
    for (let i = 0; i < rows; i++) {
      let best = 0;
      for (let m = 1; m < nm; m++) if (dec[i * nm + m]! > dec[i * nm + best]!) best = m;
      out[i] = best;
    }
    return out;
  }

  private probaFromDecision(dec: Float64Array, n: number): Matrix {
    const K = this.nClasses_!;
    const nm = dec.length / n;
    const P = new Float32Array(n * K);
    const pl = this.platt_!;
    if (K === 2) {
      const posIs0 = this.state_!.type === 'rbf';
      for (let i = 0; i < n; i++) {
        const p = plattPredict(dec[i]!, pl[0]!, pl[1]!);
        P[2 * i] = posIs0 ? p : 1 - p;
        P[2 * i + 1] = 1 - P[2 * i]!;
      }
      return { data: P, rows: n, cols: K };
    }
    if (this.isOvo) {
      const pairs = (this.state_ as RbfState).pairs;
      const r = new Float64Array(K * K);
      const p = new Float64Array(K),
        Q = new Float64Array(K * K),
        Qp = new Float64Array(K);
      for (let i = 0; i < n; i++) {
        for (let m = 0; m < nm; m++) {
          const a = pairs[2 * m]!,
            b = pairs[2 * m + 1]!;
          const v = Math.min(Math.max(plattPredict(dec[i * nm + m]!, pl[2 * m]!, pl[2 * m + 1]!), 1e-7), 1 - 1e-7);
          r[a * K + b] = v;
          r[b * K + a] = 1 - v;
        }
        couple(K, r, p, Q, Qp);
        this.writeNormalised(P, i, K, p);
      }
      return { data: P, rows: n, cols: K };
    }
    const p = new Float64Array(K);
    for (let i = 0; i < n; i++) {
      for (let m = 0; m < K; m++) p[m] = plattPredict(dec[i * nm + m]!, pl[2 * m]!, pl[2 * m + 1]!);
      this.writeNormalised(P, i, K, p);
    }
    return { data: P, rows: n, cols: K };
  }

  private writeNormalised(P: Float32Array, i: number, K: number, p: Float64Array): void {
    let s = 0;
    for (let c = 0; c < K; c++) s += Math.max(p[c]!, 0);
    for (let c = 0; c < K; c++) P[i * K + c] = s > 0 ? Math.max(p[c]!, 0) / s : 1 / K;
  }

  protected getState(): LinearState | RbfState {
    const st = this.state_!;
    if (st.type === 'linear')
      return {
        ...st,
        W: encodeF32(this.W_!),
        platt: encodeF32(this.platt_!),
        ...(this.map_ ? { nystroem: this.map_.toJSON() } : {}),
      };
    return {
      ...st,
      SV: encodeF32(this.SV_!),
      coef: encodeF32(this.coef_!),
      rho: encodeF32(this.rho_!),
      platt: encodeF32(this.platt_!),
    };
  }

  protected setState(s: unknown): void {
    const st = s as LinearState | RbfState;
    this.state_ = st;
    this.platt_ = decodeF32(st.platt);
    if (st.type === 'linear') {
      this.W_ = decodeF32(st.W);
      this.map_ = st.nystroem ? NystroemMap.fromJSON(st.nystroem) : undefined;
      this.variant_ = st.variant;
    } else {
      this.SV_ = decodeF32(st.SV);
      this.coef_ = decodeF32(st.coef);
      this.rho_ = decodeF32(st.rho);
      this.gamma_ = st.gamma;
    }
  }
}

export const svmHead: HeadDef = defineHead('svm', paramSpecs, (params) => new SvmHead(params), {
  rows: { 'svm-linear': { params: { kernel: 'linear' }, tieRank: 3 }, svm: { params: { kernel: 'rbf' }, tieRank: 0 } },
  tuneGrid: { C: LOG_C_GRID },
  quickParams: {},
  savesDirectory: false,
});
