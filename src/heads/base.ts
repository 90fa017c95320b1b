import type { FitOptions, Head, HeadParams, LabelledSet, Matrix, RowBatches } from './types.ts';
import { UserError } from '../util/errors.ts';
import { Standardizer } from './standardize.ts';
import {
  argmaxRows,
  checkFitInputs,
  checkPredictInput,
  HEAD_FORMAT,
  HEAD_FORMAT_VERSION,
  resolveParams,
  writeHeadFile,
  type HeadDef,
  type HeadFile,
  type ParamSpecs,
} from './common.ts';

/**
 * Common skeleton: validation, standardisation (fitted on train only) and the JSON envelope.
 * Subclasses implement fitImpl / probaImpl (and predictImpl when their decision rule is not the
 * argmax of the probabilities) on standardised inputs, and getState / setState for persistence.
 * Learned attributes carry a trailing underscore, as in scikit-learn.
 */
export abstract class BaseHead implements Head {
  abstract readonly kind: string;
  nClasses_?: number;
  nFeatures_?: number;
  std_?: Standardizer;

  constructor(readonly params: HeadParams) {}

  async fit(X: Matrix, y: Int32Array, opts: FitOptions): Promise<void> {
    checkFitInputs(this.kind, X, y, opts);
    const std = Standardizer.fit(X, this.params.standardize !== false);
    const val: LabelledSet | undefined = opts.val ? { X: std.transform(opts.val.X), y: opts.val.y } : undefined;
    await this.fitImpl(std.transform(X), y, { ...opts, val });
    this.std_ = std;
    this.nClasses_ = opts.nClasses;
    this.nFeatures_ = X.cols;
  }

  /**
   * Checks and envelope fields for a fit from streamed batches (fitBatches of the heads that have
   * one). The rows are never held, so the head's standardisation is the identity: the mini-batch
   * solver standardises inside and returns weights on the original features.
   */
  protected beginStreamedFit(src: RowBatches, opts: FitOptions): void {
    if (this.params.standardize === true)
      throw new UserError(`${this.kind}: standardize=true cannot be used when training from streamed batches`);
    if (!(opts.nClasses >= 2)) throw new UserError(`${this.kind}: need at least 2 classes, got ${opts.nClasses}`);
    if (src.rows < 1 || src.cols < 1) throw new UserError(`${this.kind}: no training rows`);
    this.std_ = Standardizer.fit({ data: new Float32Array(0), rows: 0, cols: src.cols }, false);
    this.nClasses_ = opts.nClasses;
    this.nFeatures_ = src.cols;
  }

  async predict(X: Matrix): Promise<Int32Array> {
    checkPredictInput(this.kind, X, this.nFeatures_);
    return this.predictImpl(this.std_!.transform(X));
  }

  async predictProba(X: Matrix): Promise<Matrix> {
    checkPredictInput(this.kind, X, this.nFeatures_);
    return this.probaImpl(this.std_!.transform(X));
  }

  async predictWithProba(X: Matrix): Promise<{ pred: Int32Array; proba: Matrix }> {
    checkPredictInput(this.kind, X, this.nFeatures_);
    return this.bothImpl(this.std_!.transform(X));
  }

  /** Both outputs on standardised rows; heads whose predict is not the probabilities' argmax override it. */
  protected async bothImpl(X: Matrix): Promise<{ pred: Int32Array; proba: Matrix }> {
    const proba = await this.probaImpl(X);
    // predictImpl's default is the argmax of probaImpl: reuse the probabilities instead of recomputing them.
    const pred = this.predictImpl === BaseHead.prototype.predictImpl ? argmaxRows(proba) : await this.predictImpl(X);
    return { pred, proba };
  }

  async save(path: string): Promise<void> {
    writeHeadFile(path, this.envelope(await this.getState(path)));
  }

  protected envelope(state: unknown): HeadFile {
    if (this.nFeatures_ === undefined) throw new Error(`${this.kind}: cannot save an unfitted head`);
    return {
      format: HEAD_FORMAT,
      version: HEAD_FORMAT_VERSION,
      kind: this.kind,
      params: this.params,
      nClasses: this.nClasses_!,
      nFeatures: this.nFeatures_,
      standardizer: this.std_!.toJSON(),
      state,
    };
  }

  /** Restore the envelope fields, then the head's own state. */
  async restore(file: HeadFile, path: string): Promise<this> {
    this.nClasses_ = file.nClasses;
    this.nFeatures_ = file.nFeatures;
    this.std_ = Standardizer.fromJSON(file.standardizer);
    await this.setState(file.state, path);
    return this;
  }

  protected async predictImpl(X: Matrix): Promise<Int32Array> {
    return argmaxRows(await this.probaImpl(X));
  }

  protected abstract fitImpl(X: Matrix, y: Int32Array, opts: FitOptions): Promise<void>;
  protected abstract probaImpl(X: Matrix): Promise<Matrix>;
  protected abstract getState(path: string): Promise<unknown> | unknown;
  protected abstract setState(state: unknown, path: string): Promise<void> | void;
}

/** Row-wise softmax in place over a rows×k Float64Array of scores; returns float32 probabilities. */
export function softmaxRows(Z: Float64Array, rows: number, k: number): Matrix {
  const out = new Float32Array(rows * k);
  for (let i = 0; i < rows; i++) {
    const o = i * k;
    let mx = -Infinity;
    for (let c = 0; c < k; c++) if (Z[o + c]! > mx) mx = Z[o + c]!;
    let s = 0;
    for (let c = 0; c < k; c++) {
      const e = Math.exp(Z[o + c]! - mx);
      Z[o + c] = e;
      s += e;
    }
    for (let c = 0; c < k; c++) out[o + c] = Z[o + c]! / s;
  }
  return { data: out, rows, cols: k };
}

/**
 * The HeadDef of a BaseHead subclass: `create` builds it from resolved params, `load` builds it from
 * the saved (re-validated) params and restores the saved state.
 */
export function defineHead(
  kind: string,
  paramSpecs: ParamSpecs,
  make: (params: HeadParams) => BaseHead,
  meta: Pick<HeadDef, 'rows' | 'tuneGrid' | 'quickParams' | 'savesDirectory'>,
): HeadDef {
  return {
    kind,
    paramSpecs,
    create: make,
    load: (file, path) => make(resolveParams(kind, paramSpecs, file.params)).restore(file, path),
    ...meta,
  };
}
