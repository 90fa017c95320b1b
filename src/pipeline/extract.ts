import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { toolVersion } from '../util/version.ts';
import { prepareBackbone, type BackboneConfig } from '../backbone/backbone.ts';
import type { Pooling } from '../backbone/convert.ts';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { scanDataset, compareCodePoints, SPLIT_ORDER, type ImageEntry, type SplitName } from '../dataset/scan.ts';
import { DEFAULT_SPLIT, splitImages, type SplitFractions } from '../dataset/split.ts';
import { augmentSeed, formatAugmentSpec, isAugmenting, sampleAugmentParams, type AugmentParams, type AugmentSpec } from '../images/augment.ts';
import { seededRandom } from '../linalg/random.ts';
import { formatTtaSpec, isTta, meanFeatures, ttaViews, type TtaSpec } from '../images/tta.ts';
import { encodeFeatureArrow } from '../store/arrow.ts';
import { encodeNpy } from '../store/npy.ts';
import { ARROW_FILE, CACHE_FORMAT_VERSION, MANIFEST_FILE, type Manifest, type SplitCounts } from '../store/manifest.ts';
import { RecordStore, type RecordValue } from '../store/records.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { UserError } from '../util/errors.ts';
import { cpus } from 'node:os';
import { DEFAULT_MAX_PIXELS } from '../images/limits.ts';
import { DEFAULT_MODEL } from '../backbone/registry.ts';
import { silentLogger, type Logger } from '../util/log.ts';
import { cacheRoot, defaultDatasetDir } from '../util/paths.ts';
import { Progress } from '../util/progress.ts';

export interface ExtractOptions {
  /** Data root (class folders, optionally inside train/val/test); default <cache root>/images/, else the mirror's cats-vs-dogs. */
  data?: string;
  /** Cache directory; default <cache root>/cache/<dataset>-<model>-<layer>-<pooling>-<hash>. */
  out?: string;
  /** Where default cache folders go (default: CONVCACHE_HOME, else ./convcache-data). */
  cacheRoot?: string;
  /** Known model name, model folder, model.json, .onnx or URL (default mobilenet_v1_0.75_224). */
  model?: string;
  layer?: string;
  pooling?: Pooling;
  /** Default 0.8/0.1/0.1 when the data has no split folders. */
  split?: SplitFractions;
  /** Default 42. */
  seed?: number;
  /** Default 32. */
  batch?: number;
  /** Images decoded concurrently (default: one per core). */
  workers?: number;
  /** ONNX Runtime intra-op threads (default: one per core). */
  threads?: number;
  maxPixels?: number;
  /** No progress events. */
  quiet?: boolean;
  /** Preprocessing overrides (mostly for foreign .onnx models). */
  preprocessing?: Partial<Preprocessing>;
  onnxLayout?: 'nchw' | 'nhwc';
  /** Store this many augmented views of each *training* image beside it (val/test untouched). */
  augment?: { spec: AugmentSpec; views: number };
  /** Store, for every image, the mean feature of these fixed views (src/images/tta.ts). */
  tta?: TtaSpec;
  /** Progress lines, warnings about skipped images (default: silent). */
  log?: Logger;
}

/** ExtractOptions with every default filled in. */
type ResolvedExtractOptions = ExtractOptions & Required<Pick<ExtractOptions, 'model' | 'split' | 'seed' | 'batch' | 'workers' | 'threads' | 'maxPixels' | 'quiet' | 'log'>>;

function withDefaults(o: ExtractOptions): ResolvedExtractOptions {
  return {
    ...o,
    model: o.model ?? DEFAULT_MODEL, split: o.split ?? DEFAULT_SPLIT, seed: o.seed ?? 42, batch: o.batch ?? 32,
    workers: o.workers ?? cpus().length, threads: o.threads ?? cpus().length, maxPixels: o.maxPixels ?? DEFAULT_MAX_PIXELS,
    quiet: o.quiet ?? false, log: o.log ?? silentLogger,
  };
}

export interface ExtractResult { cacheDir: string; manifest: Manifest }

/** Bumped when decoding changes in a way that changes pixels, so cached records are not reused. */
const DECODER_VERSION = 1;


/** Cache folder for one (dataset, model+weights, layer, pooling, preprocessing). */
export function cacheDirFor(dataRoot: string, backbone: BackboneConfig, augment?: { spec: string; views: number; seed: number }, root = cacheRoot(), tta?: string): string {
  const key = createHash('sha256').update(JSON.stringify({
    root: dataRoot, w: backbone.weightsHash, layer: backbone.layer, pooling: backbone.pooling, pre: backbone.preprocessing, dec: DECODER_VERSION,
    ...(augment ? { augment } : {}), ...(tta ? { tta } : {}),
  })).digest('hex').slice(0, 8);
  const dataset = basename(dataRoot).replace(/[^A-Za-z0-9._-]+/g, '_');
  const suffix = `${augment ? `-aug${augment.views}` : ''}${tta ? `-tta_${tta.replace(/,/g, '_')}` : ''}`;
  return join(root, 'cache', `${dataset}-${backbone.modelId}-${backbone.layer.replace(/,/g, '+')}-${backbone.pooling}${suffix}-${key}`);
}

/**
 * What one image contributes: record keys for view 0 (the image) and each augmented view, and with
 * TTA the keys of the extra fixed views whose features are averaged into view 0.
 */
interface ImagePlan { viewKeys: string[]; viewParams: (AugmentParams | null)[]; ttaKeys: string[]; ttaParams: (AugmentParams | null)[] }

/**
 * Views of each image. Augmentation parameters depend only on (seed, view, image content), so a
 * resumed or incremental run draws exactly the same views.
 */
function planViews(images: readonly ImageEntry[], keys: readonly string[], augment: ExtractOptions['augment'], seed: number, tta?: TtaSpec): ImagePlan[] {
  const augKey = augment ? createHash('sha256').update(`${formatAugmentSpec(augment.spec)}|${seed}`).digest('hex').slice(0, 12) : '';
  const extraViews = isTta(tta) ? ttaViews(tta).slice(1) : [];
  return images.map((img, i) => {
    const key = keys[i]!;
    const plan: ImagePlan = {
      viewKeys: [key], viewParams: [null],
      ttaKeys: extraViews.map((v) => `${key}:tta:${v.name}`), ttaParams: extraViews.map((v) => v.params),
    };
    if (augment && img.split === 'train') {
      const contentSeed = parseInt(key.slice(0, 8), 16);
      for (let v = 1; v <= augment.views; v++) {
        plan.viewKeys.push(`${key}:aug:${augKey}:${v}`);
        plan.viewParams.push(sampleAugmentParams(augment.spec, seededRandom(augmentSeed(seed, v, contentSeed))));
      }
    }
    return plan;
  });
}

async function hashFiles(images: readonly ImageEntry[], concurrency: number): Promise<string[]> {
  const keys = new Array<string>(images.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < images.length) {
      const i = next++;
      const buf = await readFile(images[i]!.absPath);
      keys[i] = createHash('sha1').update(buf).digest('hex');
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return keys;
}

export async function extractFeatures(options: ExtractOptions): Promise<ExtractResult> {
  const opts = withDefaults(options);
  const t0 = performance.now();
  const log = opts.log;
  const dataArg = opts.data ?? defaultDatasetDir(opts.cacheRoot);
  if (!dataArg) throw new UserError('no --data given, no images/ folder in the cache root, and no offline mirror with datasets/cats-vs-dogs');
  const scan = scanDataset(dataArg, log);
  const images = splitImages(scan, opts.split, opts.seed);
  const tScan = performance.now();

  if (opts.augment && (!isAugmenting(opts.augment.spec) || opts.augment.views < 1)) {
    throw new UserError('--augment needs at least one transform and --views K >= 1');
  }
  const augmentInfo = opts.augment ? { spec: formatAugmentSpec(opts.augment.spec), views: opts.augment.views, seed: opts.seed } : undefined;
  const tta = isTta(opts.tta) ? formatTtaSpec(opts.tta) : undefined;
  if (tta && augmentInfo) throw new UserError('--tta and --augment cannot be combined (the augmented rows would be single views of TTA-averaged images)');
  const backbone = await prepareBackbone({ model: opts.model, layer: opts.layer, pooling: opts.pooling, preprocessing: opts.preprocessing, onnxLayout: opts.onnxLayout, log });
  const cfg = backbone.config;
  const cacheDir = opts.out ?? cacheDirFor(scan.root, cfg, augmentInfo, cacheRoot(opts.cacheRoot), tta);
  const store = RecordStore.open(join(cacheDir, 'records'), cfg.featureDim, log);

  const keys = await hashFiles(images, 8);
  const plans = planViews(images, keys, opts.augment, opts.seed, opts.tta);
  const tHash = performance.now();
  // A job = one image with the views it still needs (a resumed run may need only some of them).
  const jobs: Job[] = [];
  const queued = new Set<string>();
  plans.forEach((plan, i) => {
    const allKeys = [...plan.viewKeys, ...plan.ttaKeys], allParams = [...plan.viewParams, ...plan.ttaParams];
    const need = allKeys.map((_, v) => v).filter((v) => !store.has(allKeys[v]!) && !queued.has(allKeys[v]!));
    if (need.length === 0) return;
    for (const v of need) queued.add(allKeys[v]!);
    jobs.push({ image: images[i]!, absPath: images[i]!.absPath, keys: need.map((v) => allKeys[v]!), views: need.map((v) => allParams[v]!) });
  });
  const missing = queued.size;
  const totalViews = plans.reduce((a, p) => a + p.viewKeys.length + p.ttaKeys.length, 0);
  log.info(`${images.length} images${augmentInfo ? ` (+${totalViews - images.length} augmented views)` : ''}, ${scan.classes.length} classes; ${totalViews - missing} cached, ${missing} to extract (${cfg.modelId} @ ${cfg.layer}, pooling ${cfg.pooling}, D=${cfg.featureDim})`);

  let computedSeconds = 0;
  if (jobs.length > 0) {
    const tx = performance.now();
    await computeMissing(jobs, missing, backbone.onnxPath, cfg, store, opts);
    computedSeconds = (performance.now() - tx) / 1000;
  }
  const tExtract = performance.now();

  const manifest = writeOutputs(cacheDir, images, plans, scan.classes, scan.skipped, store, cfg, opts, scan.root, scan.presplit, augmentInfo);
  store.compact(new Set(plans.flatMap((p) => [...p.viewKeys, ...p.ttaKeys])));
  const tEnd = performance.now();
  manifest.timings = {
    scanSeconds: round3((tScan - t0) / 1000), hashSeconds: round3((tHash - tScan) / 1000), extractSeconds: round3(computedSeconds),
    writeSeconds: round3((tEnd - tExtract) / 1000), totalSeconds: round3((tEnd - t0) / 1000),
    computed: missing, reused: totalViews - missing,
    extractImagesPerSecond: computedSeconds > 0 ? Math.round((missing / computedSeconds) * 10) / 10 : null,
  };
  writeFileAtomic(join(cacheDir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
  return { cacheDir, manifest };
}

function round3(x: number): number { return Math.round(x * 1000) / 1000; }

interface Job { image: ImageEntry; absPath: string; keys: string[]; views: (AugmentParams | null)[] }

/** Persist every batch before starting the next, so an interruption loses at most one batch. */
async function computeMissing(jobs: Job[], total: number, onnxPath: string, cfg: BackboneConfig, store: RecordStore, opts: ResolvedExtractOptions): Promise<void> {
  // Loaded here, not at the top: decoding brings in sharp, which an up-to-date cache never needs.
  const { runBackbone } = await import('./run-backbone.ts');
  const progress = new Progress({ label: 'extract', total, quiet: opts.quiet, log: opts.log });
  try {
    for await (const results of runBackbone(jobs, onnxPath, cfg, opts)) {
      const entries: { key: string; value: RecordValue }[] = results.map((r) => {
        const key = r.item.keys[r.view]!;
        if ('error' in r) {
          if (r.view === 0) opts.log.warn(`skipping ${r.item.image.path}: ${r.error}`);
          return { key, value: { error: r.error } };
        }
        return { key, value: r.features };
      });
      store.add(entries);
      progress.tick(entries.length);
    }
  } finally {
    progress.finish();
  }
}

function writeOutputs(
  cacheDir: string, images: readonly ImageEntry[], plans: readonly ImagePlan[], classes: readonly string[],
  scanSkipped: readonly { path: string; reason: string }[], store: RecordStore, cfg: BackboneConfig, opts: ResolvedExtractOptions,
  dataRoot: string, presplit: boolean, augmentInfo: { spec: string; views: number; seed: number } | undefined,
): Manifest {
  const order = images.map((_, i) => i).sort((a, b) => {
    const sa = SPLIT_ORDER.indexOf(images[a]!.split!);
    const sb = SPLIT_ORDER.indexOf(images[b]!.split!);
    return sa - sb || compareCodePoints(images[a]!.path, images[b]!.path);
  });
  const D = cfg.featureDim;
  const skipped = [...scanSkipped];
  // Rows: split, then path, then view (0 = the image, 1..K its augmented views).
  const rows: { image: number; view: number; value: Float32Array }[] = [];
  for (const i of order) {
    const plan = plans[i]!;
    const v0 = store.get(plan.viewKeys[0]!);
    if (!v0) throw new Error(`internal: no record for ${images[i]!.path}`);
    if (!(v0 instanceof Float32Array)) { skipped.push({ path: images[i]!.path, reason: v0.error }); continue; }
    plan.viewKeys.forEach((key, view) => {
      const value = store.get(key);
      if (!(value instanceof Float32Array)) throw new Error(`internal: no features for ${images[i]!.path} view ${view}`);
      if (view > 0 || plan.ttaKeys.length === 0) { rows.push({ image: i, view, value }); return; }
      // TTA: the image's feature is the mean over its fixed views.
      const extra = plan.ttaKeys.map((k) => store.get(k));
      if (!extra.every((v): v is Float32Array => v instanceof Float32Array)) throw new Error(`internal: missing TTA views for ${images[i]!.path}`);
      rows.push({ image: i, view, value: meanFeatures([value, ...extra]) });
    });
  }
  skipped.sort((a, b) => compareCodePoints(a.path, b.path));
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  const n = rows.length;
  const features = new Float32Array(n * D);
  const labels = new Int32Array(n);
  const views = new Int32Array(n);
  rows.forEach((r, k) => {
    features.set(r.value, k * D);
    labels[k] = classIndex.get(images[r.image]!.className)!;
    views[k] = r.view;
  });
  const paths = rows.map((r) => images[r.image]!.path);
  const splits = rows.map((r) => images[r.image]!.split!);

  /** Gather the given Arrow rows into .npy arrays (features, labels, and views when asked). */
  const writeNpy = (prefix: string, idx: number[], withViews: boolean): void => {
    const f = new Float32Array(idx.length * D);
    const l = new Int32Array(idx.length);
    const v = new Int32Array(idx.length);
    idx.forEach((r, k) => { f.set(features.subarray(r * D, (r + 1) * D), k * D); l[k] = labels[r]!; v[k] = views[r]!; });
    writeFileAtomic(join(cacheDir, `${prefix}_features.npy`), encodeNpy(f, [idx.length, D]));
    writeFileAtomic(join(cacheDir, `${prefix}_labels.npy`), encodeNpy(l, [idx.length]));
    if (withViews) writeFileAtomic(join(cacheDir, `${prefix}_views.npy`), encodeNpy(v, [idx.length]));
  };
  const counts: Manifest['counts'] = {};
  const npy: Manifest['files']['npy'] = {};
  for (const split of SPLIT_ORDER) {
    const idx: number[] = [];
    for (let r = 0; r < n; r++) if (splits[r] === split && views[r] === 0) idx.push(r);
    if (idx.length === 0) continue;
    writeNpy(split, idx, false);
    npy[split] = { features: `${split}_features.npy`, labels: `${split}_labels.npy`, rows: idx.length };
    const perClass: SplitCounts['perClass'] = Object.fromEntries(classes.map((c) => [c, 0]));
    for (const r of idx) perClass[classes[labels[r]!]!]! += 1;
    counts[split] = { total: idx.length, perClass };
  }
  if (!counts.train) throw new UserError('no usable training images (all were skipped); see the warnings above');
  const augIdx: number[] = [];
  for (let r = 0; r < n; r++) if (views[r]! > 0) augIdx.push(r);
  let augmentedNpy: Manifest['files']['augmentedNpy'];
  if (augmentInfo) {
    writeNpy('train_aug', augIdx, true);
    augmentedNpy = { features: 'train_aug_features.npy', labels: 'train_aug_labels.npy', views: 'train_aug_views.npy', rows: augIdx.length };
  }
  const arrowBytes = encodeFeatureArrow({ paths, labels, splits, views, features, dim: D }, {
    'convcache.format_version': String(CACHE_FORMAT_VERSION),
    'convcache.classes': JSON.stringify(classes),
    'convcache.model': cfg.modelId,
    'convcache.weights_hash': cfg.weightsHash,
    'convcache.layer': cfg.layer,
    'convcache.pooling': cfg.pooling,
    'convcache.preprocessing': JSON.stringify(cfg.preprocessing),
    ...(augmentInfo ? { 'convcache.augment': JSON.stringify(augmentInfo) } : {}),
    ...(isTta(opts.tta) ? { 'convcache.tta': JSON.stringify(ttaManifest(opts.tta)) } : {}),
  });
  writeFileAtomic(join(cacheDir, ARROW_FILE), arrowBytes);
  for (const c of classes) if (!counts.train.perClass[c]) opts.log.warn(`class '${c}' has no usable training images`);
  return {
    format: 'convcache-features',
    formatVersion: CACHE_FORMAT_VERSION,
    toolVersion: toolVersion(),
    dataRoot,
    split: presplit ? { mode: 'folders' } : { mode: 'stratified', fractions: [opts.split.train, opts.split.val, opts.split.test], seed: opts.seed },
    classes: [...classes],
    counts,
    augment: augmentInfo ? { ...augmentInfo, rows: augIdx.length } : null,
    ...(isTta(opts.tta) ? { tta: ttaManifest(opts.tta) } : {}),
    backbone: cfg,
    rowOrder: 'split (train, val, test), then path in code-point order, then view (0 = the image, 1..K augmented views); <split>_*.npy hold the view-0 rows of each split in that order, train_aug_*.npy the augmented rows',
    files: { arrow: ARROW_FILE, npy, ...(augmentedNpy ? { augmentedNpy } : {}), arrowSha256: createHash('sha256').update(arrowBytes).digest('hex') },
    skipped,
    timings: { scanSeconds: 0, hashSeconds: 0, extractSeconds: 0, writeSeconds: 0, totalSeconds: 0, computed: 0, reused: 0, extractImagesPerSecond: null },
  };
}

/** The manifest's record of TTA: the spec and the views averaged into every image's feature. */
function ttaManifest(t: TtaSpec): { spec: string; views: string[] } {
  return { spec: formatTtaSpec(t), views: ttaViews(t).map((v) => v.name) };
}

export type { SplitName };
