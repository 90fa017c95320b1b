import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Matrix } from '../linalg/types.ts';
import { SPLIT_ORDER, type SplitName } from '../dataset/scan.ts';
import { UserError } from '../util/errors.ts';
import { cacheRoot } from '../util/paths.ts';
import type { FixedSizeList } from 'apache-arrow';
import { totalmem } from 'node:os';
import { Rng } from '../linalg/random.ts';
import { arrowSchemaOf, readArrowBatches } from './batches.ts';
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

export interface LoadOptions {
  /** Refuse to load more than this many bytes of features (default: defaultMaxMemory()). */
  maxMemoryBytes?: number;
  /** Keep at most this many training rows: a seeded random subsample (val/test untouched). */
  maxRows?: number;
  seed?: number;
}

/** Fraction of physical memory a whole-split load may take by default (heads need room of their own). */
export const DEFAULT_MAX_MEMORY_FRACTION = 0.5;

/** --max-memory default: CONVCACHE_MAX_MEMORY (e.g. "8G") or half of physical memory. */
export function defaultMaxMemory(): number {
  const env = process.env.CONVCACHE_MAX_MEMORY;
  return env ? parseMemory(env, 'CONVCACHE_MAX_MEMORY') : Math.floor(totalmem() * DEFAULT_MAX_MEMORY_FRACTION);
}

/** "8G", "512M", "1.5GB", "123456" (bytes) → bytes. */
export function parseMemory(v: string, name = '--max-memory'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$/i.exec(v);
  if (!m) throw new UserError(`${name} must look like 8G, 512M or a byte count, got '${v}'`);
  const unit = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[
    m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'
  ];
  const bytes = Math.floor(Number(m[1]) * unit);
  if (bytes <= 0) throw new UserError(`${name} must be positive, got '${v}'`);
  return bytes;
}

const gb = (b: number): string => `${(b / 2 ** 30).toFixed(b < 2 ** 30 ? 2 : 1)} GB`;

/** Per-row bytes of a loaded split beyond the features: label, path string, bookkeeping. */
const ROW_OVERHEAD_BYTES = 96;

/**
 * Load a cache's splits into memory (Arrow file, read batch by batch straight into per-split
 * arrays: one copy of the features, never the whole file at once) and check it against its
 * manifest. Refuses with one line when the rows would exceed the memory budget.
 */
export function loadFeatureCache(dir: string, opts: LoadOptions = {}): FeatureCache {
  const manifest = readManifest(dir);
  const arrowPath = join(dir, ARROW_FILE);
  if (!existsSync(arrowPath)) throw new UserError(`${arrowPath} is missing; re-run extract`);
  const D = manifest.backbone.featureDim;
  const dim = (arrowSchemaOf(arrowPath).fields.find((f) => f.name === 'features')?.type as FixedSizeList | undefined)
    ?.listSize;
  if (dim !== D) throw new UserError(`${arrowPath} has D=${dim ?? '?'} but the manifest says ${D}; re-run extract`);
  const nTrain = manifest.counts.train?.total ?? 0;
  const keepTrain = opts.maxRows !== undefined && opts.maxRows < nTrain ? opts.maxRows : nTrain;
  const augRows = manifest.augment?.rows ?? 0;
  const keptAug = nTrain > 0 ? Math.ceil((augRows * keepTrain) / nTrain) : 0;
  const rows = keepTrain + (manifest.counts.val?.total ?? 0) + (manifest.counts.test?.total ?? 0) + keptAug;
  const need = rows * (D * 4 + ROW_OVERHEAD_BYTES);
  const budget = opts.maxMemoryBytes ?? defaultMaxMemory();
  if (need > budget) {
    const fit = Math.max(0, Math.floor(budget / (D * 4 + ROW_OVERHEAD_BYTES) - (rows - keepTrain - keptAug)));
    throw new UserError(
      `loading ${dir} needs ~${gb(need)} (${rows} rows × D=${D}) but the memory budget is ${gb(budget)}; ` +
        `train on a subsample with --max-rows N (${fit > 0 ? `about ${fit} fits` : 'val/test alone exceed it'}) or raise --max-memory`,
    );
  }
  // Seeded subsample of the training rows (view 0), chosen by their position in the cache's row order.
  let keep: Uint8Array | null = null;
  if (keepTrain < nTrain) {
    const rng = new Rng(opts.seed ?? 42);
    const idx = Int32Array.from({ length: nTrain }, (_, i) => i);
    for (let i = 0; i < keepTrain; i++) {
      const j = i + rng.int(nTrain - i);
      const t = idx[i]!;
      idx[i] = idx[j]!;
      idx[j] = t;
    }
    keep = new Uint8Array(nTrain);
    for (let i = 0; i < keepTrain; i++) keep[idx[i]!] = 1;
  }
  const sizes: Record<SplitName, number> = {
    train: keepTrain,
    val: manifest.counts.val?.total ?? 0,
    test: manifest.counts.test?.total ?? 0,
  };
  const make = (n: number): SplitData => ({
    X: { data: new Float32Array(n * D), rows: n, cols: D },
    y: new Int32Array(n),
    paths: [],
  });
  const out: Partial<Record<SplitName, SplitData>> = {};
  for (const s of SPLIT_ORDER) if (sizes[s] > 0) out[s] = make(sizes[s]);
  const aug: SplitData & { views: number[] } = { ...make(0), views: [] };
  const augFeatures: Float32Array[] = [];
  const augLabels: number[] = [];
  let trainSeen = 0;
  let keptPath = '';
  let keptCurrent = false;
  for (const batch of readArrowBatches(arrowPath)) {
    const p = batch.getChild('path')!;
    const sp = batch.getChild('split')!;
    const l = batch.getChild('label')!;
    const v = batch.getChild('view');
    const child = batch.getChild('features')!.data[0]!.children[0]!;
    const values = (child.values as Float32Array).subarray(child.offset, child.offset + batch.numRows * D);
    for (let i = 0; i < batch.numRows; i++) {
      const split = String(sp.get(i)) as SplitName;
      const view = v ? Number(v.get(i)) : 0;
      const row = values.subarray(i * D, (i + 1) * D);
      if (view > 0) {
        // Augmented views follow their image (row order: path, then view); kept with it.
        if (keptCurrent && String(p.get(i)) === keptPath) {
          augFeatures.push(Float32Array.from(row));
          augLabels.push(Number(l.get(i)));
          aug.views.push(view);
          aug.paths.push(keptPath);
        }
        continue;
      }
      keptCurrent = true;
      if (split === 'train' && keep) keptCurrent = keep[trainSeen++] === 1;
      else if (split === 'train') trainSeen++;
      if (!keptCurrent) continue;
      const dst = out[split];
      if (!dst) throw new UserError(`${arrowPath} has '${split}' rows the manifest does not count; re-run extract`);
      const k = dst.paths.length;
      if (k >= dst.X.rows)
        throw new UserError(`${arrowPath} has more '${split}' rows than the manifest says; re-run extract`);
      dst.X.data.set(row, k * D);
      dst.y[k] = Number(l.get(i));
      keptPath = String(p.get(i));
      dst.paths.push(keptPath);
    }
  }
  for (const s of SPLIT_ORDER) {
    if (out[s] && out[s]!.paths.length !== sizes[s])
      throw new UserError(
        `${arrowPath} has ${out[s]!.paths.length} '${s}' rows, the manifest says ${sizes[s]}; re-run extract`,
      );
  }
  if (!out.train) throw new UserError(`cache ${dir} has no training rows`);
  let augmented: FeatureCache['augmented'];
  if (augFeatures.length > 0) {
    const X = new Float32Array(augFeatures.length * D);
    augFeatures.forEach((r, k) => X.set(r, k * D));
    augmented = {
      X: { data: X, rows: augFeatures.length, cols: D },
      y: Int32Array.from(augLabels),
      paths: aug.paths,
      views: Int32Array.from(aug.views),
    };
  }
  return { dir, manifest, classes: manifest.classes, splits: out, ...(augmented ? { augmented } : {}) };
}

/**
 * The rows of one split (view 0), `batchRows` at a time, in the cache's row order, read straight
 * from the Arrow file: memory is one batch however large the cache. For heads that train by
 * mini-batches, and for anything that only streams (statistics, export).
 */
export function* iterateSplit(
  dir: string,
  split: SplitName,
  batchRows = 8192,
): Generator<SplitData & { start: number }> {
  const manifest = readManifest(dir);
  const D = manifest.backbone.featureDim;
  let X = new Float32Array(batchRows * D);
  let y = new Int32Array(batchRows);
  let paths: string[] = [];
  let start = 0;
  const emit = (): SplitData & { start: number } => {
    const n = paths.length;
    const out = { X: { data: X.subarray(0, n * D), rows: n, cols: D }, y: y.subarray(0, n), paths, start };
    start += n;
    X = new Float32Array(batchRows * D);
    y = new Int32Array(batchRows);
    paths = [];
    return out;
  };
  for (const batch of readArrowBatches(join(dir, ARROW_FILE))) {
    const sp = batch.getChild('split')!;
    const v = batch.getChild('view');
    const p = batch.getChild('path')!;
    const l = batch.getChild('label')!;
    const child = batch.getChild('features')!.data[0]!.children[0]!;
    const values = (child.values as Float32Array).subarray(child.offset, child.offset + batch.numRows * D);
    for (let i = 0; i < batch.numRows; i++) {
      if (sp.get(i) !== split || (v && Number(v.get(i)) !== 0)) continue;
      const k = paths.length;
      X.set(values.subarray(i * D, (i + 1) * D), k * D);
      y[k] = Number(l.get(i));
      paths.push(String(p.get(i)));
      if (paths.length === batchRows) yield emit();
    }
  }
  if (paths.length > 0) yield emit();
}

/** A cache opened without loading it: its manifest, and batch iteration or a checked whole load. */
export interface FeatureCacheReader {
  dir: string;
  manifest: Manifest;
  classes: string[];
  batches(split: SplitName, batchRows?: number): Generator<SplitData & { start: number }>;
  load(opts?: LoadOptions): FeatureCache;
}

export function readFeatureCache(dir: string): FeatureCacheReader {
  const manifest = readManifest(dir);
  return {
    dir,
    manifest,
    classes: manifest.classes,
    batches: (split, batchRows) => iterateSplit(dir, split, batchRows),
    load: (opts) => loadFeatureCache(dir, opts),
  };
}

/**
 * --cache default: the most recently written cache under <cache root>/cache/ (what `convcache extract` just made).
 */
export function defaultCacheDir(rootDir?: string): string {
  const root = join(cacheRoot(rootDir), 'cache');
  const dirs = existsSync(root)
    ? readdirSync(root)
        .map((d) => join(root, d))
        .filter((d) => existsSync(join(d, MANIFEST_FILE)))
    : [];
  if (dirs.length === 0)
    throw new UserError(`no feature cache found under ${root}; run 'convcache extract' first (or pass --cache DIR)`);
  dirs.sort((a, b) => statSync(join(b, MANIFEST_FILE)).mtimeMs - statSync(join(a, MANIFEST_FILE)).mtimeMs);
  return dirs[0]!;
}

/**
 * Library entry point: open a feature cache (its Arrow file, checked against the manifest) as
 * typed arrays by split — `splits.train.X` (row-major Float32Array, rows × D), `.y` (Int32Array
 * class indices into `classes`), `.paths`. Without `dir`: the newest cache under the cache root.
 * Checked against a memory budget first (LoadOptions); `readFeatureCache(dir).batches(split)` streams instead.
 */
export function openFeatureCache(dir?: string, opts: { cacheRoot?: string } & LoadOptions = {}): FeatureCache {
  return loadFeatureCache(dir ?? defaultCacheDir(opts.cacheRoot), opts);
}
