import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Matrix } from '../linalg/types.ts';
import { SPLIT_ORDER, type SplitName } from '../dataset/scan.ts';
import { UserError } from '../util/errors.ts';
import { cacheRoot } from '../util/paths.ts';
import { decodeFeatureArrow } from './arrow.ts';
import { ARROW_FILE, MANIFEST_FILE, readManifest, type Manifest } from './manifest.ts';

export interface SplitData {
  X: Matrix;
  y: Int32Array;
  /** Image paths relative to manifest.dataRoot, aligned with rows. */
  paths: string[];
}

export interface FeatureCache {
  dir: string;
  manifest: Manifest;
  classes: string[];
  /** The images of each split (view 0). */
  splits: Partial<Record<SplitName, SplitData>>;
  /** Augmented views of training images (extract --augment --views K); `views[i]` is the view number. */
  augmented?: SplitData & { views: Int32Array };
}

/** Load a cache (Arrow file: features, labels, paths, split) and check it against its manifest. */
export function loadFeatureCache(dir: string): FeatureCache {
  const manifest = readManifest(dir);
  const arrowPath = join(dir, ARROW_FILE);
  if (!existsSync(arrowPath)) throw new UserError(`${arrowPath} is missing; re-run extract`);
  const { rows } = decodeFeatureArrow(readFileSync(arrowPath));
  if (rows.dim !== manifest.backbone.featureDim) throw new UserError(`${arrowPath} has D=${rows.dim} but the manifest says ${manifest.backbone.featureDim}; re-run extract`);
  const take = (idx: number[]): SplitData => {
    const X = new Float32Array(idx.length * rows.dim);
    idx.forEach((r, k) => X.set(rows.features.subarray(r * rows.dim, (r + 1) * rows.dim), k * rows.dim));
    return { X: { data: X, rows: idx.length, cols: rows.dim }, y: Int32Array.from(idx, (r) => rows.labels[r]!), paths: idx.map((r) => rows.paths[r]!) };
  };
  const splits: FeatureCache['splits'] = {};
  for (const split of SPLIT_ORDER) {
    const idx: number[] = [];
    rows.splits.forEach((s, i) => { if (s === split && rows.views[i] === 0) idx.push(i); });
    if (idx.length > 0) splits[split] = take(idx);
  }
  if (!splits.train) throw new UserError(`cache ${dir} has no training rows`);
  const augIdx: number[] = [];
  rows.views.forEach((v, i) => { if (v > 0) augIdx.push(i); });
  const augmented = augIdx.length > 0 ? { ...take(augIdx), views: Int32Array.from(augIdx, (r) => rows.views[r]!) } : undefined;
  return { dir, manifest, classes: manifest.classes, splits, ...(augmented ? { augmented } : {}) };
}

/**
 * --cache default: the most recently written cache under <cache root>/cache/ (what `convcache extract` just made).
 */
export function defaultCacheDir(rootDir?: string): string {
  const root = join(cacheRoot(rootDir), 'cache');
  const dirs = existsSync(root) ? readdirSync(root).map((d) => join(root, d)).filter((d) => existsSync(join(d, MANIFEST_FILE))) : [];
  if (dirs.length === 0) throw new UserError(`no feature cache found under ${root}; run 'convcache extract' first (or pass --cache DIR)`);
  dirs.sort((a, b) => statSync(join(b, MANIFEST_FILE)).mtimeMs - statSync(join(a, MANIFEST_FILE)).mtimeMs);
  return dirs[0]!;
}

/**
 * Library entry point: open a feature cache (its Arrow file, checked against the manifest) as
 * typed arrays by split — `splits.train.X` (row-major Float32Array, rows × D), `.y` (Int32Array
 * class indices into `classes`), `.paths`. Without `dir`: the newest cache under the cache root.
 */
export function openFeatureCache(dir?: string, opts: { cacheRoot?: string } = {}): FeatureCache {
  return loadFeatureCache(dir ?? defaultCacheDir(opts.cacheRoot));
}
