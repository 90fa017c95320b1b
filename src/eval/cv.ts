import { createHead, headParamSpecs } from '../heads/registry.ts';
import type { FitOptions, HeadParams } from '../heads/types.ts';
import type { LabelledSet, Matrix } from '../linalg/types.ts';
import { Rng } from '../linalg/random.ts';
import { UserError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import { accuracy, confusionMatrix, macroF1, meanStd } from './metrics.ts';

/**
 * Seeded, deterministic stratified splitting (k-fold and a single holdout) and k-fold
 * cross-validation of a head kind. Indices are always returned sorted ascending, so the rows a
 * head sees keep the cache's order; the result depends only on (y, k or fraction, seed), not on
 * anything else.
 */

export interface Fold {
  train: Int32Array;
  test: Int32Array;
}

/** Row indices of each class, in ascending order. */
function indicesByClass(y: ArrayLike<number>): Map<number, number[]> {
  const by = new Map<number, number[]>();
  for (let i = 0; i < y.length; i++) {
    const c = y[i]!;
    let a = by.get(c);
    if (!a) by.set(c, (a = []));
    a.push(i);
  }
  return new Map([...by.entries()].sort((a, b) => a[0] - b[0]));
}

/**
 * Stratified k folds: each class's rows are shuffled (seeded) and dealt round-robin into the
 * folds, continuing the deal across classes so fold sizes differ by at most one. A class with
 * fewer than k rows is simply absent from some test folds (as in scikit-learn, which warns).
 */
export function stratifiedKFold(y: ArrayLike<number>, k: number, seed: number): Fold[] {
  if (!Number.isInteger(k) || k < 2) throw new UserError(`cross-validation needs k >= 2 folds, got ${k}`);
  if (k > y.length) throw new UserError(`cannot make ${k} folds from ${y.length} rows`);
  const rng = new Rng(seed);
  const foldOf = new Int32Array(y.length);
  let deal = 0;
  for (const idx of indicesByClass(y).values()) {
    rng.shuffle(idx);
    for (const i of idx) foldOf[i] = deal++ % k;
  }
  const folds: Fold[] = [];
  for (let f = 0; f < k; f++) {
    const train: number[] = [],
      test: number[] = [];
    for (let i = 0; i < y.length; i++) (foldOf[i] === f ? test : train).push(i);
    folds.push({ train: Int32Array.from(train), test: Int32Array.from(test) });
  }
  return folds;
}

/**
 * A stratified, seeded holdout: about `fraction` of each class goes to `holdout`
 * (round(fraction · n_c), at least 1 and at most n_c − 1 when the class has 2+ rows; a class
 * with a single row stays in `rest`).
 */
export function stratifiedHoldout(
  y: ArrayLike<number>,
  fraction: number,
  seed: number,
): { rest: Int32Array; holdout: Int32Array } {
  if (!(fraction > 0 && fraction < 1)) throw new UserError(`holdout fraction must be in (0, 1), got ${fraction}`);
  const rng = new Rng(seed);
  const inHoldout = new Uint8Array(y.length);
  for (const idx of indicesByClass(y).values()) {
    if (idx.length < 2) continue;
    rng.shuffle(idx);
    const m = Math.min(idx.length - 1, Math.max(1, Math.round(fraction * idx.length)));
    for (let j = 0; j < m; j++) inHoldout[idx[j]!] = 1;
  }
  const rest: number[] = [],
    holdout: number[] = [];
  for (let i = 0; i < y.length; i++) (inHoldout[i] ? holdout : rest).push(i);
  return { rest: Int32Array.from(rest), holdout: Int32Array.from(holdout) };
}

/** The given rows of a matrix, in the given order (a copy). */
export function takeRows(X: Matrix, idx: ArrayLike<number>): Matrix {
  const d = X.cols;
  const out = new Float32Array(idx.length * d);
  for (let r = 0; r < idx.length; r++) {
    const i = idx[r]!;
    out.set(X.data.subarray(i * d, (i + 1) * d), r * d);
  }
  return { data: out, rows: idx.length, cols: d };
}

export function takeSet(s: LabelledSet, idx: ArrayLike<number>): LabelledSet {
  const y = new Int32Array(idx.length);
  for (let r = 0; r < idx.length; r++) y[r] = s.y[idx[r]!]!;
  return { X: takeRows(s.X, idx), y };
}

/** Row-wise concatenation of labelled sets with the same width. */
export function concatSets(...sets: LabelledSet[]): LabelledSet {
  const d = sets[0]!.X.cols;
  const rows = sets.reduce((s, a) => s + a.X.rows, 0);
  const data = new Float32Array(rows * d);
  const y = new Int32Array(rows);
  let r = 0;
  for (const s of sets) {
    if (s.X.cols !== d) throw new Error(`concatSets: width ${s.X.cols} differs from ${d}`);
    data.set(s.X.data.subarray(0, s.X.rows * d), r * d);
    y.set(s.y, r);
    r += s.X.rows;
  }
  return { X: { data, rows, cols: d }, y };
}

/**
 * Whether a head configuration uses the validation set during fit (early stopping). Detected from its
 * parameter specs (a `patience` parameter, on when > 0), so a new head with early stopping needs no
 * change here. Heads that ignore `val` are given all their training rows instead.
 */
export function usesEarlyStopping(kind: string, params: HeadParams): boolean {
  const spec = headParamSpecs(kind).patience;
  if (!spec) return false;
  const patience = params.patience ?? spec.default;
  return typeof patience === 'number' && patience > 0;
}

export interface CvOptions {
  classWeight?: FitOptions['classWeight'];
  log?: Logger;
  /**
   * For heads with early stopping: fraction of each training fold held out (stratified, seeded)
   * as their validation set. Default 0.1. Never the fold's test rows.
   */
  innerValFraction?: number;
  /** Called after each fold (progress lines). */
  onFold?: (fold: number, k: number, acc: number) => void;
}

export interface CvResult {
  k: number;
  seed: number;
  folds: { accuracy: number; macroF1: number; n: number }[];
  accuracy: { mean: number; std: number };
  macroF1: { mean: number; std: number };
}

/**
 * Stratified k-fold cross-validation: for each fold a fresh head (createHead(kind, params)) is
 * fitted on the other folds and scored on this one. Deterministic for a given seed.
 */
export async function crossValidate(
  kind: string,
  params: HeadParams,
  X: Matrix,
  y: Int32Array,
  k: number,
  seed: number,
  nClasses: number,
  opts: CvOptions = {},
): Promise<CvResult> {
  if (X.rows !== y.length) throw new UserError(`crossValidate: ${y.length} labels for ${X.rows} rows`);
  createHead(kind, params); // validate params before any work
  const all: LabelledSet = { X, y };
  const early = usesEarlyStopping(kind, params);
  const innerFrac = opts.innerValFraction ?? 0.1;
  const folds: CvResult['folds'] = [];
  for (const [f, fold] of stratifiedKFold(y, k, seed).entries()) {
    let train = takeSet(all, fold.train);
    let val: LabelledSet | undefined;
    if (early && innerFrac > 0) {
      const { rest, holdout } = stratifiedHoldout(train.y, innerFrac, seed + 1 + f);
      val = takeSet(train, holdout);
      train = takeSet(train, rest);
    }
    const test = takeSet(all, fold.test);
    const head = createHead(kind, params);
    await head.fit(train.X, train.y, { nClasses, val, classWeight: opts.classWeight, seed: seed + f, log: opts.log });
    const pred = await head.predict(test.X);
    const acc = accuracy(test.y, pred);
    folds.push({ accuracy: acc, macroF1: macroF1(confusionMatrix(test.y, pred, nClasses)), n: test.y.length });
    opts.onFold?.(f + 1, k, acc);
  }
  return {
    k,
    seed,
    folds,
    accuracy: meanStd(folds.map((r) => r.accuracy)),
    macroF1: meanStd(folds.map((r) => r.macroF1)),
  };
}
