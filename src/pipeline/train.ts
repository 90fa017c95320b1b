import { toolVersion } from '../util/version.ts';
import { pathBytes } from '../util/disk.ts';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import type { BackboneConfig } from '../backbone/backbone.ts';
import { takeSet, stratifiedHoldout } from '../eval/cv.ts';
import { evaluate, type Evaluation } from '../eval/metrics.ts';
import { formatParams, tuneHead, type TuneMode, type TuneResult } from '../eval/tune.ts';
import { refitOnTrainVal } from '../eval/select.ts';
import { readHeadFile } from '../heads/common.ts';
import { createHead, loadHead, savesDirectory } from '../heads/registry.ts';
import type { FitOptions, Head, HeadParams } from '../heads/types.ts';
import type { LabelledSet, Matrix } from '../linalg/types.ts';
import { iterateSplit, loadFeatureCache, type FeatureCache } from '../store/read.ts';
import { arrowBlockIndex, readArrowBlock } from '../store/batches.ts';
import { ARROW_FILE, readManifest, type Manifest } from '../store/manifest.ts';
import type { SplitName } from '../dataset/scan.ts';
import type { RowBatch, RowBatches } from '../heads/types.ts';
import { Rng } from '../linalg/random.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { UserError } from '../util/errors.ts';
import { silentLogger, type Logger } from '../util/log.ts';

/**
 * Train one head on a feature cache.
 *
 * Splits: the head is fitted on `train`. Validation (early stopping, tuning) is the cache's `val`
 * split when it has one; otherwise a stratified, seeded `valFraction` of train is carved out
 * (and not trained on). The test split is only ever used for the final score.
 *
 * Saved heads: the head itself (versioned JSON from Head.save; a directory for dense) plus a
 * sidecar `<headPath>.meta.json` (HeadMeta below; for a directory head `heads/dense/` it is
 * `heads/dense.meta.json`) recording the cache folder, classes and the manifest's backbone config,
 * so `predict` can rebuild exactly the same conv base and name the classes.
 */

export const DEFAULT_VAL_FRACTION = 0.1;

export { toolVersion };
export const HEAD_META_FORMAT = 'convcache-head-meta';
export const HEAD_META_VERSION = 1;

export interface TrainSplits {
  train: LabelledSet;
  val?: LabelledSet;
  test?: LabelledSet & { paths: string[] };
  /** 'cache': the cache's own val split; 'carved': carved from train; 'none': no validation set. */
  valSource: 'cache' | 'carved' | 'none';
  valFraction: number;
  seed: number;
}

/** The train / val / test sets for a cache (see the module comment for the val rule). */
export function prepareSplits(cache: FeatureCache, valFraction: number, seed: number): TrainSplits {
  if (!(valFraction >= 0 && valFraction < 1))
    throw new UserError(`--val-fraction must be in [0, 1), got ${valFraction}`);
  const tr = cache.splits.train!;
  const te = cache.splits.test;
  const test = te ? { X: te.X, y: te.y, paths: te.paths } : undefined;
  const v = cache.splits.val;
  let trainIdx: Int32Array | undefined;
  let val: LabelledSet | undefined;
  let valSource: TrainSplits['valSource'] = 'none';
  if (v) {
    val = { X: v.X, y: v.y };
    valSource = 'cache';
  } else if (valFraction > 0) {
    const { rest, holdout } = stratifiedHoldout(tr.y, valFraction, seed);
    if (holdout.length > 0) {
      trainIdx = rest;
      val = takeSet({ X: tr.X, y: tr.y }, holdout);
      valSource = 'carved';
    }
  }
  let train: LabelledSet = trainIdx ? takeSet({ X: tr.X, y: tr.y }, trainIdx) : { X: tr.X, y: tr.y };
  // Augmented views join training only for images that stayed in train: a carved-out val image's
  // views would leak it into training.
  const aug = cache.augmented;
  if (aug) {
    const kept = new Set(trainIdx ? Array.from(trainIdx, (i) => tr.paths[i]!) : tr.paths);
    const idx: number[] = [];
    aug.paths.forEach((p, i) => {
      if (kept.has(p)) idx.push(i);
    });
    const extra = takeSet({ X: aug.X, y: aug.y }, idx);
    const d = train.X.cols;
    const X = new Float32Array((train.X.rows + extra.X.rows) * d);
    X.set(train.X.data);
    X.set(extra.X.data, train.X.rows * d);
    const y = new Int32Array(train.y.length + extra.y.length);
    y.set(train.y);
    y.set(extra.y, train.y.length);
    train = { X: { data: X, rows: train.X.rows + extra.X.rows, cols: d }, y };
  }
  return {
    train,
    ...(val ? { val } : {}),
    test,
    valSource,
    valFraction: valSource === 'carved' ? valFraction : 0,
    seed,
  };
}

export interface HeadRun {
  head: Head;
  kind: string;
  /** The fitted head's full parameters (defaults filled in; the tuned ones when tuned). */
  params: HeadParams;
  fitSeconds: number;
  val?: Evaluation;
  test?: Evaluation;
  testPred?: Int32Array;
  testProba?: Matrix;
  /** Milliseconds to predict 1000 rows (timed on test, else val, else train). */
  predictMsPer1000: number;
  tuning?: TuneResult;
  /**
   * Set when the configuration chosen on validation was refitted on train + val (then `head`,
   * `params`, `fitSeconds` and `test` are the refitted head's; `val` is the train-only fit's).
   */
  refit?: { rows: number; epochs?: number; selectionFitSeconds: number };
}

export interface FitOnSplitsOptions {
  classWeight?: FitOptions['classWeight'];
  seed: number;
  /** Progress lines (tuning). */
  log?: Logger;
  /** Passed to Head.fit (dense prints one line per epoch). */
  fitLog?: Logger;
  /** Grid-search the head's main hyperparameters first (src/eval/tune.ts); never on test. */
  tune?: false | TuneMode;
  /**
   * After scoring on validation, refit the chosen configuration on train + val before the test
   * score (src/eval/select.ts; early-stopped heads for their selected number of epochs).
   * Default false here; compare and trainHead turn it on.
   */
  refit?: boolean;
}

/** Fit a head of `kind` on splits.train (tuning first if asked) and score it on val and test. */
export async function fitOnSplits(
  kind: string,
  params: HeadParams,
  splits: TrainSplits,
  nClasses: number,
  o: FitOnSplitsOptions,
): Promise<HeadRun> {
  createHead(kind, params); // bad params fail before any work
  const fitOpts = { nClasses, val: splits.val, classWeight: o.classWeight, seed: o.seed, log: o.fitLog };
  let head: Head;
  let fitSeconds: number;
  let tuning: TuneResult | undefined;
  if (o.tune) {
    tuning = await tuneHead({
      kind,
      fixed: params,
      train: splits.train,
      val: splits.val,
      nClasses,
      mode: o.tune,
      classWeight: o.classWeight,
      seed: o.seed,
      log: o.log,
      fitLog: o.fitLog,
    });
    o.log?.info(`tune ${kind}: chose ${formatParams(tuning.best, params)} (${tuning.seconds.toFixed(1)} s)`);
    if (tuning.fitted) {
      ({ head, fitSeconds } = tuning.fitted);
    } else {
      head = createHead(kind, tuning.best);
      const t = performance.now();
      await head.fit(splits.train.X, splits.train.y, fitOpts);
      fitSeconds = (performance.now() - t) / 1000;
    }
  } else {
    head = createHead(kind, params);
    const t = performance.now();
    await head.fit(splits.train.X, splits.train.y, fitOpts);
    fitSeconds = (performance.now() - t) / 1000;
  }
  const score = async (s: LabelledSet) => {
    const t = performance.now();
    let pred: Int32Array;
    let proba: Matrix;
    let ms: number;
    if (head.predictWithProba) {
      // One pass for both (kNN searches and Nyström maps once); timed as prediction.
      ({ pred, proba } = await head.predictWithProba(s.X));
      ms = performance.now() - t;
    } else {
      pred = await head.predict(s.X);
      ms = performance.now() - t;
      proba = await head.predictProba(s.X);
    }
    return {
      pred,
      proba,
      ev: evaluate(s.y, pred, nClasses, proba),
      msPer1000: s.X.rows > 0 ? (ms / s.X.rows) * 1000 : 0,
    };
  };
  const val = splits.val ? await score(splits.val) : undefined;
  let refit: HeadRun['refit'];
  if (o.refit && splits.val) {
    const r = await refitOnTrainVal(kind, head.params, head, splits.train, splits.val, {
      nClasses,
      classWeight: o.classWeight,
      seed: o.seed,
      log: o.fitLog,
    });
    refit = { rows: r.rows, ...(r.epochs !== undefined ? { epochs: r.epochs } : {}), selectionFitSeconds: fitSeconds };
    head = r.head;
    fitSeconds = r.fitSeconds;
  }
  const test = splits.test ? await score(splits.test) : undefined;
  const timed = test ?? val ?? (await score(splits.train));
  return {
    head,
    kind,
    params: head.params,
    fitSeconds,
    val: val?.ev,
    test: test?.ev,
    testPred: test?.pred,
    testProba: test?.proba,
    predictMsPer1000: timed.msPer1000,
    ...(tuning ? { tuning: withoutFitted(tuning) } : {}),
    ...(refit ? { refit } : {}),
  };
}

function withoutFitted(t: TuneResult): TuneResult {
  const { fitted: _unused, ...rest } = t;
  return rest;
}

// ------------------------------------------------------------------------------- trainHead

export interface TrainHeadOptions {
  /** A loaded cache, or its directory. */
  cache: FeatureCache | string;
  kind: string;
  params?: HeadParams;
  classWeight?: FitOptions['classWeight'];
  seed?: number;
  /** Fraction of train carved out as validation when the cache has no val split (default 0.1; 0 = none). */
  valFraction?: number;
  tune?: false | TuneMode;
  /** Refit the configuration chosen on validation on train + val before scoring test (default true). */
  refit?: boolean;
  log?: Logger;
  /** Forwarded to Head.fit (per-epoch lines for dense). Default: silent. */
  fitLog?: Logger;
}

export interface TrainHeadResult extends HeadRun {
  cache: FeatureCache;
  splits: TrainSplits;
  valAccuracy: number | null;
  testAccuracy: number | null;
  classWeight: 'none' | 'balanced';
  seed: number;
}

export async function trainHead(o: TrainHeadOptions): Promise<TrainHeadResult> {
  const params = o.params ?? {};
  createHead(o.kind, params); // unknown head / bad params: fail before loading the cache
  const cache = typeof o.cache === 'string' ? loadFeatureCache(o.cache) : o.cache;
  const seed = o.seed ?? 42;
  const splits = prepareSplits(cache, o.valFraction ?? DEFAULT_VAL_FRACTION, seed);
  const run = await fitOnSplits(o.kind, params, splits, cache.classes.length, {
    classWeight: o.classWeight,
    seed,
    log: o.log,
    fitLog: o.fitLog ?? silentLogger,
    tune: o.tune,
    refit: o.refit ?? true,
  });
  return {
    ...run,
    cache,
    splits,
    seed,
    classWeight: o.classWeight ?? 'none',
    valAccuracy: run.val?.accuracy ?? null,
    testAccuracy: run.test?.accuracy ?? null,
  };
}

// ------------------------------------------------------------------------- saving + meta

/** Default save location: `<cache>/heads/<kind>.json`, or `<cache>/heads/<kind>/` for directory heads. */
export function defaultHeadPath(cacheDir: string, kind: string, name = kind): string {
  return join(cacheDir, 'heads', savesDirectory(kind) ? name : `${name}.json`);
}

/** The sidecar of a saved head: `<path>.meta.json` (trailing slashes of a directory head dropped). */
export function headMetaPath(headPath: string): string {
  return resolve(headPath).replace(/[\\/]+$/, '') + '.meta.json';
}

export interface HeadMeta {
  format: typeof HEAD_META_FORMAT;
  version: number;
  kind: string;
  params: HeadParams;
  /** Absolute path of the cache the head was trained on. */
  cacheDir: string;
  /** Class names in label order (index = predicted label). */
  classes: string[];
  /** The manifest's backbone config: model, weights hash, layer, pooling, preprocessing, D. */
  backbone: BackboneConfig;
  featureDim: number;
  /** The cache's test-time augmentation (extract --tta): predict averages the same views. */
  tta?: { spec: string; views: string[] };
  /** The head file or directory name, beside this sidecar. */
  head: string;
  classWeight: 'none' | 'balanced';
  seed: number;
  split: { train: number; val: number; test: number; valSource: TrainSplits['valSource']; valFraction: number };
  valAccuracy: number | null;
  testAccuracy: number | null;
  tuning?: { by: 'val' | 'cv'; folds?: number; best: HeadParams; trials: number };
  /** Present when the head was refitted on train + val after selection (rows, and epochs for early-stopped heads). */
  refit?: { rows: number; epochs?: number };
  toolVersion: string;
  createdAt: string;
}

/** What saveTrainedHead needs (a TrainHeadResult has it all; compare builds one per row). */
export type SavableHead = Pick<
  TrainHeadResult,
  | 'head'
  | 'kind'
  | 'params'
  | 'cache'
  | 'splits'
  | 'seed'
  | 'classWeight'
  | 'valAccuracy'
  | 'testAccuracy'
  | 'tuning'
  | 'refit'
>;

/** Save the trained head and its sidecar meta. Returns where, and the head's size on disk. */
export async function saveTrainedHead(
  r: SavableHead,
  path?: string,
): Promise<{ path: string; metaPath: string; bytes: number }> {
  const cacheDir = resolve(r.cache.dir);
  const out = resolve(path ?? defaultHeadPath(cacheDir, r.kind));
  await r.head.save(out);
  const meta: HeadMeta = {
    format: HEAD_META_FORMAT,
    version: HEAD_META_VERSION,
    kind: r.kind,
    params: r.params,
    cacheDir,
    classes: r.cache.classes,
    backbone: r.cache.manifest.backbone,
    featureDim: r.cache.manifest.backbone.featureDim,
    ...(r.cache.manifest.tta ? { tta: r.cache.manifest.tta } : {}),
    head: basename(out),
    classWeight: r.classWeight,
    seed: r.seed,
    split: {
      train: r.splits.train.y.length,
      val: r.splits.val?.y.length ?? 0,
      test: r.splits.test?.y.length ?? 0,
      valSource: r.splits.valSource,
      valFraction: r.splits.valFraction,
    },
    valAccuracy: r.valAccuracy,
    testAccuracy: r.testAccuracy,
    ...(r.tuning
      ? { tuning: { by: r.tuning.by, folds: r.tuning.folds, best: r.tuning.best, trials: r.tuning.trials.length } }
      : {}),
    ...(r.refit
      ? { refit: { rows: r.refit.rows, ...(r.refit.epochs !== undefined ? { epochs: r.refit.epochs } : {}) } }
      : {}),
    toolVersion: toolVersion(),
    createdAt: new Date().toISOString(),
  };
  const metaPath = headMetaPath(out);
  writeFileAtomic(metaPath, JSON.stringify(meta, null, 2) + '\n');
  return { path: out, metaPath, bytes: pathBytes(out) };
}

/** Size in bytes of a head as saved (saved to a temporary place, measured, removed). */
export async function headBytes(head: Head): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'convcache-headsize-'));
  try {
    const p = join(dir, 'head');
    await head.save(p);
    return pathBytes(p);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The sidecar meta of a saved head (what `predict` needs: cache dir, classes, backbone config,
 * kind, params). One-line UserError when it is missing or not ours.
 */
export function readHeadMeta(headPath: string): HeadMeta {
  const p = headMetaPath(headPath);
  if (!existsSync(p)) {
    throw new UserError(`no metadata for head ${headPath} (expected ${p}); re-train it with 'convcache train-head'`);
  }
  let m: HeadMeta;
  try {
    m = JSON.parse(readFileSync(p, 'utf8')) as HeadMeta;
  } catch (e) {
    throw new UserError(`cannot read ${p}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (m?.format !== HEAD_META_FORMAT) throw new UserError(`${p} is not a convcache head metadata file`);
  if (m.version !== HEAD_META_VERSION)
    throw new UserError(
      `${p}: head metadata version ${m.version} is not supported (this build reads ${HEAD_META_VERSION})`,
    );
  return m;
}

function describeBackbone(
  b: Pick<BackboneConfig, 'modelId' | 'layer' | 'pooling' | 'featureDim' | 'weightsHash'>,
): string {
  return `${b.modelId}/${b.layer}/${b.pooling} D=${b.featureDim} weights ${b.weightsHash}`;
}

/**
 * Refuse (one-line UserError) to apply a head to features it was not trained on: a different
 * weights hash, layer, pooling, preprocessing, feature width or class list.
 */
export function checkHeadMatchesCache(meta: HeadMeta, manifest: Manifest, cacheDir: string): void {
  const a = meta.backbone,
    b = manifest.backbone;
  const diffs: string[] = [];
  if (meta.featureDim !== b.featureDim) diffs.push(`D ${meta.featureDim} vs ${b.featureDim}`);
  if (a.weightsHash !== b.weightsHash) diffs.push(`weights ${a.weightsHash} vs ${b.weightsHash}`);
  if (a.layer !== b.layer) diffs.push(`layer ${a.layer} vs ${b.layer}`);
  if (a.pooling !== b.pooling) diffs.push(`pooling ${a.pooling} vs ${b.pooling}`);
  if (JSON.stringify(a.preprocessing) !== JSON.stringify(b.preprocessing)) diffs.push('different preprocessing');
  if ((meta.tta?.spec ?? 'none') !== (manifest.tta?.spec ?? 'none'))
    diffs.push(`TTA ${meta.tta?.spec ?? 'none'} vs ${manifest.tta?.spec ?? 'none'}`);
  if (JSON.stringify(meta.classes) !== JSON.stringify(manifest.classes))
    diffs.push(`classes [${meta.classes.join(', ')}] vs [${manifest.classes.join(', ')}]`);
  if (diffs.length > 0) {
    throw new UserError(
      `head (${describeBackbone(a)}) does not match cache ${cacheDir} (${describeBackbone(b)}): ${diffs.join(', ')}; use a cache extracted with the head's backbone or train a new head`,
    );
  }
}

export interface EvaluateHeadResult {
  meta: HeadMeta | undefined;
  test?: Evaluation;
  classes: string[];
}

/**
 * Score a saved head on a cache's test split, after checking the head was trained on the same
 * features (sidecar meta when present; the head file's feature width in any case).
 */
export async function evaluateSavedHead(headPath: string, cache: FeatureCache | string): Promise<EvaluateHeadResult> {
  const file = readHeadFile(headPath);
  const c = typeof cache === 'string' ? loadFeatureCache(cache) : cache;
  const meta = existsSync(headMetaPath(headPath)) ? readHeadMeta(headPath) : undefined;
  if (meta) checkHeadMatchesCache(meta, c.manifest, c.dir);
  const D = c.manifest.backbone.featureDim;
  if (file.nFeatures !== D) {
    throw new UserError(
      `head ${headPath} expects D=${file.nFeatures} features but cache ${c.dir} has D=${D} (${c.manifest.backbone.modelId}/${c.manifest.backbone.layer}); use a cache extracted with the head's backbone`,
    );
  }
  if (file.nClasses !== c.classes.length)
    throw new UserError(`head ${headPath} has ${file.nClasses} classes but cache ${c.dir} has ${c.classes.length}`);
  const head = await loadHead(headPath);
  const te = c.splits.test;
  if (!te) return { meta, classes: c.classes };
  const pred = await head.predict(te.X);
  const proba = await head.predictProba(te.X);
  return { meta, classes: c.classes, test: evaluate(te.y, pred, c.classes.length, proba) };
}

// ------------------------------------------------------------------ streaming from disk

/** Record batches mixed per shuffled pool: 8 × 8192 rows (~200 MB at D = 768), whatever the cache size. */
export const POOL_BLOCKS = 8;

/**
 * A cache split as a RowBatches source read from disk, for heads that train by mini-batches on a
 * split larger than memory. Unshuffled passes stream in row order (iterateSplit). A shuffled pass
 * visits the Arrow record batches in a seeded random order, `poolBlocks` at a time, and shuffles
 * the rows of each pool: the cache's row order is by path, so classes lie in long runs and a
 * plain streaming order would feed the solver one class at a time. Memory: one pool.
 */
export function cacheRowBatches(dir: string, split: SplitName = 'train', poolBlocks = POOL_BLOCKS): RowBatches {
  const manifest = readManifest(dir);
  const D = manifest.backbone.featureDim;
  const path = join(dir, ARROW_FILE);
  return {
    rows: manifest.counts[split]?.total ?? 0,
    cols: D,
    *pass(batchRows: number, shuffle?: { seed: number }): Generator<RowBatch> {
      if (!shuffle) {
        for (const b of iterateSplit(dir, split, batchRows)) yield { X: b.X, y: b.y };
        return;
      }
      const index = arrowBlockIndex(path);
      const rng = new Rng(shuffle.seed);
      const order = Int32Array.from({ length: index.blocks.length }, (_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      let X = new Float32Array(0);
      let y = new Int32Array(0);
      const bx = new Float32Array(batchRows * D);
      const by = new Int32Array(batchRows);
      for (let p = 0; p < order.length; p += poolBlocks) {
        let n = 0;
        for (const blk of order.subarray(p, p + poolBlocks)) {
          const batch = readArrowBlock(path, index, blk);
          const sp = batch.getChild('split')!;
          const v = batch.getChild('view');
          const l = batch.getChild('label')!;
          const child = batch.getChild('features')!.data[0]!.children[0]!;
          const values = (child.values as Float32Array).subarray(child.offset, child.offset + batch.numRows * D);
          if (X.length < (n + batch.numRows) * D) {
            const grow = new Float32Array(Math.max((n + batch.numRows) * D, X.length * 2));
            grow.set(X.subarray(0, n * D));
            X = grow;
            const gy = new Int32Array(grow.length / D);
            gy.set(y.subarray(0, n));
            y = gy;
          }
          for (let i = 0; i < batch.numRows; i++) {
            if (sp.get(i) !== split || (v && Number(v.get(i)) !== 0)) continue;
            X.set(values.subarray(i * D, (i + 1) * D), n * D);
            y[n++] = Number(l.get(i));
          }
        }
        const perm = Int32Array.from({ length: n }, (_, i) => i);
        for (let i = n - 1; i > 0; i--) {
          const j = rng.int(i + 1);
          [perm[i], perm[j]] = [perm[j]!, perm[i]!];
        }
        for (let s = 0; s < n; s += batchRows) {
          const e = Math.min(n, s + batchRows);
          for (let t = s; t < e; t++) {
            const r = perm[t]!;
            bx.set(X.subarray(r * D, (r + 1) * D), (t - s) * D);
            by[t - s] = y[r]!;
          }
          yield { X: { data: bx.subarray(0, (e - s) * D), rows: e - s, cols: D }, y: by.subarray(0, e - s) };
        }
      }
    },
  };
}

/**
 * train-head --stream: fit a head that trains by mini-batches (Head.fitBatches) on the cache's
 * training split read from disk, never loaded; validation and test are loaded (they are scored).
 * No tuning and no refit on train+val (each would be another full pass schedule).
 */
export async function trainHeadStreaming(o: {
  dir: string;
  kind: string;
  params?: HeadParams;
  classWeight?: FitOptions['classWeight'];
  seed?: number;
  maxMemoryBytes?: number;
  log?: Logger;
}): Promise<TrainHeadResult> {
  const params = o.params ?? {};
  const head = createHead(o.kind, params);
  if (!head.fitBatches)
    throw new UserError(
      `${o.kind} cannot train from streamed batches (only heads trained by mini-batches: logreg, svm with kernel=linear); use --max-rows N instead`,
    );
  const seed = o.seed ?? 42;
  // Val/test and a single training row (the loader keeps at least one): the training split streams.
  const cache = loadFeatureCache(o.dir, {
    maxRows: 1,
    seed,
    ...(o.maxMemoryBytes ? { maxMemoryBytes: o.maxMemoryBytes } : {}),
  });
  const src = cacheRowBatches(o.dir, 'train');
  const K = cache.classes.length;
  const val = cache.splits.val ? { X: cache.splits.val.X, y: cache.splits.val.y } : undefined;
  o.log?.info(`train-head: ${o.kind} by mini-batches over ${src.rows} training rows streamed from ${o.dir}`);
  const t = performance.now();
  await head.fitBatches(src, { nClasses: K, seed, classWeight: o.classWeight, ...(val ? { val } : {}) });
  const fitSeconds = (performance.now() - t) / 1000;
  const score = async (s: LabelledSet) => {
    const t0 = performance.now();
    const pred = await head.predict(s.X);
    const ms = performance.now() - t0;
    const proba = await head.predictProba(s.X);
    return { pred, proba, ev: evaluate(s.y, pred, K, proba), msPer1000: s.X.rows > 0 ? (ms / s.X.rows) * 1000 : 0 };
  };
  const v = val ? await score(val) : undefined;
  const te = cache.splits.test ? await score(cache.splits.test) : undefined;
  const splits: TrainSplits = {
    train: { X: { data: new Float32Array(0), rows: 0, cols: src.cols }, y: new Int32Array(src.rows) },
    ...(val ? { val } : {}),
    test: cache.splits.test ? { ...cache.splits.test } : undefined,
    valSource: val ? 'cache' : 'none',
    valFraction: 0,
    seed,
  };
  return {
    head,
    kind: o.kind,
    params: head.params,
    fitSeconds,
    val: v?.ev,
    test: te?.ev,
    testPred: te?.pred,
    testProba: te?.proba,
    predictMsPer1000: te?.msPer1000 ?? v?.msPer1000 ?? 0,
    cache,
    splits,
    seed,
    classWeight: o.classWeight ?? 'none',
    valAccuracy: v?.ev.accuracy ?? null,
    testAccuracy: te?.ev.accuracy ?? null,
  };
}
