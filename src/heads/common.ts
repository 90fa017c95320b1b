import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import type { FitOptions, Head, HeadParams, Matrix } from './types.ts';
import type { StandardizerJson } from './standardize.ts';

/** Shared plumbing for heads: parameter specs, input validation, class weights, (de)serialisation. */

export const HEAD_FORMAT = 'convcache-head';
export const HEAD_FORMAT_VERSION = 1;

export interface ParamSpec {
  type: 'number' | 'int' | 'boolean' | 'string';
  default: number | string | boolean;
  description: string;
  min?: number;
  max?: number;
  /** Allowed strings. For type number/int, these strings are accepted in addition to numbers. */
  choices?: readonly string[];
}
export type ParamSpecs = Record<string, ParamSpec>;

/** Defaults + validation. Unknown names or bad values give a one-line UserError naming the valid ones. */
export function resolveParams(kind: string, specs: ParamSpecs, given: HeadParams): HeadParams {
  const out: HeadParams = {};
  for (const name of Object.keys(given)) {
    if (!(name in specs)) {
      throw new UserError(`${kind}: unknown parameter '${name}' (valid: ${Object.keys(specs).join(', ')})`);
    }
  }
  for (const [name, s] of Object.entries(specs)) {
    const v = name in given ? given[name]! : s.default;
    out[name] = checkParam(kind, name, s, v);
  }
  return out;
}

function checkParam(kind: string, name: string, s: ParamSpec, v: number | string | boolean): number | string | boolean {
  const want = describe(s);
  const bad = () => new UserError(`${kind}: parameter ${name} must be ${want}, got '${String(v)}'`);
  if (s.type === 'boolean') {
    if (typeof v !== 'boolean') throw bad();
    return v;
  }
  if (typeof v === 'string') {
    if (s.choices?.includes(v)) return v;
    throw bad();
  }
  if (s.type === 'string' || typeof v !== 'number' || !Number.isFinite(v)) throw bad();
  if (s.type === 'int' && !Number.isInteger(v)) throw bad();
  if ((s.min !== undefined && v < s.min) || (s.max !== undefined && v > s.max)) throw bad();
  return v;
}

function describe(s: ParamSpec): string {
  const parts: string[] = [];
  if (s.type === 'boolean') return 'true or false';
  if (s.type === 'number' || s.type === 'int') {
    let r = s.type === 'int' ? 'an integer' : 'a number';
    if (s.min !== undefined && s.max !== undefined) r += ` in [${s.min}, ${s.max}]`;
    else if (s.min !== undefined) r += ` >= ${s.min}`;
    parts.push(r);
  }
  if (s.choices) parts.push(s.choices.map((c) => `'${c}'`).join(' | '));
  return parts.join(' or ');
}

export function checkMatrix(X: Matrix, what = 'X'): void {
  if (X.data.length !== X.rows * X.cols) {
    throw new UserError(`${what}: data length ${X.data.length} does not match ${X.rows}×${X.cols}`);
  }
}

export function checkFitInputs(kind: string, X: Matrix, y: Int32Array, opts: FitOptions): void {
  checkMatrix(X);
  const k = opts.nClasses;
  if (!Number.isInteger(k) || k < 2) throw new UserError(`${kind}: nClasses must be an integer >= 2, got ${k}`);
  if (y.length !== X.rows) throw new UserError(`${kind}: ${y.length} labels for ${X.rows} rows`);
  if (X.rows < 2) throw new UserError(`${kind}: need at least 2 training rows`);
  for (let i = 0; i < y.length; i++) {
    const c = y[i]!;
    if (!(c >= 0 && c < k && Number.isInteger(c))) {
      throw new UserError(`${kind}: label ${c} at row ${i} is outside 0..${k - 1}`);
    }
  }
  if (opts.val) {
    checkMatrix(opts.val.X, 'val.X');
    if (opts.val.X.cols !== X.cols)
      throw new UserError(`${kind}: validation width ${opts.val.X.cols} differs from train width ${X.cols}`);
    for (const c of opts.val.y)
      if (!(c >= 0 && c < k)) throw new UserError(`${kind}: validation label ${c} is outside 0..${k - 1}`);
  }
}

export function checkPredictInput(kind: string, X: Matrix, nFeatures: number | undefined): void {
  if (nFeatures === undefined) throw new UserError(`${kind}: head is not fitted (call fit or load first)`);
  checkMatrix(X);
  if (X.cols !== nFeatures)
    throw new UserError(`${kind}: X has ${X.cols} features but the head was fitted on ${nFeatures}`);
}

/** Per-class weights: all 1, or n / (nClasses · count_c) ('balanced', as scikit-learn). */
export function classWeights(y: Int32Array, nClasses: number, mode: FitOptions['classWeight']): Float64Array {
  const counts = new Float64Array(nClasses);
  for (let i = 0; i < y.length; i++) counts[y[i]!]!++;
  return classWeightsFromCounts(counts, mode);
}

/** classWeights from per-class row counts (for rows that are streamed, never held). */
export function classWeightsFromCounts(counts: Float64Array, mode: FitOptions['classWeight']): Float64Array {
  const K = counts.length;
  const w = new Float64Array(K).fill(1);
  if (mode !== 'balanced') return w;
  let n = 0;
  for (let c = 0; c < K; c++) n += counts[c]!;
  for (let c = 0; c < K; c++) w[c] = counts[c]! > 0 ? n / (K * counts[c]!) : 1;
  return w;
}

export function argmaxRows(P: Matrix): Int32Array {
  const out = new Int32Array(P.rows);
  const k = P.cols;
  for (let i = 0; i < P.rows; i++) {
    let best = 0;
    let bv = -Infinity;
    for (let c = 0; c < k; c++) {
      const v = P.data[i * k + c]!;
      if (v > bv) {
        bv = v;
        best = c;
      }
    }
    out[i] = best;
  }
  return out;
}

export { decodeF32, decodeI32, encodeF32, encodeI32 } from './codec.ts';

/** The versioned JSON every head writes (dense writes it as head.json inside its directory). */
export interface HeadFile {
  format: typeof HEAD_FORMAT;
  version: number;
  kind: string;
  params: HeadParams;
  nClasses: number;
  nFeatures: number;
  standardizer: StandardizerJson;
  state: unknown;
}

export function writeHeadFile(path: string, file: HeadFile): void {
  writeFileAtomic(path, JSON.stringify(file));
}

/** Read a head's JSON from a file, or from `<dir>/head.json` for directory heads. */
export function readHeadFile(path: string): HeadFile {
  let file = path;
  try {
    if (statSync(path).isDirectory()) file = join(path, 'head.json');
  } catch {
    throw new UserError(`head file not found: ${path}`);
  }
  let j: HeadFile;
  try {
    j = JSON.parse(readFileSync(file, 'utf8')) as HeadFile;
  } catch (e) {
    throw new UserError(`cannot read head ${file}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (j?.format !== HEAD_FORMAT) throw new UserError(`${file} is not a convcache head (format '${String(j?.format)}')`);
  if (j.version !== HEAD_FORMAT_VERSION) {
    throw new UserError(
      `${file}: head format version ${j.version} is not supported (this build reads ${HEAD_FORMAT_VERSION})`,
    );
  }
  return j;
}

/** A hyperparameter grid: the values of each searched parameter (the grid is their cross product, in this order). */
export type TuneGrid = Readonly<Record<string, readonly (number | string | boolean)[]>>;

/** The C values the linear models search (log-spaced, as scikit-learn examples do). */
export const LOG_C_GRID: readonly number[] = [0.01, 0.1, 1, 10, 100];

/** A named configuration of a head kind: one row of `compare` and of the heads benchmark. */
export interface HeadRow {
  params: HeadParams;
  /**
   * Rank among rows tied on validation accuracy (lower is preferred): the a-priori strength of the
   * family, since a 200-image validation set ties often.
   */
  tieRank: number;
}

/**
 * Everything the rest of the program needs to know about a head kind: one object exported by each
 * head file, listed once in registry.ts. compare, tune, bench, train and the conformance tests read
 * it instead of keeping their own lists.
 */
export interface HeadDef {
  kind: string;
  paramSpecs: ParamSpecs;
  /** params are already resolved (defaults filled, validated). */
  create(params: HeadParams): Head;
  load(file: HeadFile, path: string): Promise<Head>;
  /** Rows for compare / bench, in order, by row name (row names are unique across kinds). */
  rows: Readonly<Record<string, HeadRow>>;
  /** Grid searched by --tune (entries the head no longer declares in paramSpecs are ignored). */
  tuneGrid: TuneGrid;
  /** Small settings that still learn: conformance tests and benchmark warm-ups. */
  quickParams: HeadParams;
  /** Head.save writes a directory rather than one JSON file. */
  savesDirectory: boolean;
}
