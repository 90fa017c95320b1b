import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { createRequire } from 'node:module';
import { prepareBackbone, type BackboneConfig } from '../backbone/backbone.ts';
import type { Pooling } from '../backbone/convert.ts';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { scanDataset, compareCodePoints, SPLIT_ORDER, type ImageEntry, type SplitName } from '../dataset/scan.ts';
import { assignSplits, type SplitFractions } from '../dataset/split.ts';
import { runBackbone } from './run-backbone.ts';
import { encodeFeatureArrow } from '../store/arrow.ts';
import { encodeNpy } from '../store/npy.ts';
import { ARROW_FILE, CACHE_FORMAT_VERSION, MANIFEST_FILE, type Manifest, type SplitCounts } from '../store/manifest.ts';
import { RecordStore, type RecordValue } from '../store/records.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { UserError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import { defaultDataDir, defaultDatasetDir } from '../util/paths.ts';
import { Progress } from '../util/progress.ts';

export interface ExtractOptions {
  data?: string;
  /** Cache directory; default data/cache/<dataset>-<model>-<layer>-<pooling>-<hash>. */
  out?: string;
  model: string;
  layer?: string;
  pooling?: Pooling;
  split: SplitFractions;
  seed: number;
  batch: number;
  /** Images decoded concurrently. */
  workers: number;
  /** ONNX Runtime intra-op threads. */
  threads: number;
  maxPixels: number;
  quiet: boolean;
  /** Preprocessing overrides (mostly for foreign .onnx models). */
  preprocessing?: Partial<Preprocessing>;
  onnxLayout?: 'nchw' | 'nhwc';
  log: Logger;
  /** Called after each persisted batch (tests use it to simulate interruption). */
  onBatch?: (done: number, total: number) => void;
}

export interface ExtractResult { cacheDir: string; manifest: Manifest }

/** Bumped when decoding changes in a way that changes pixels, so cached records are not reused. */
const DECODER_VERSION = 1;

export function toolVersion(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
}

/** Cache folder for one (dataset, model+weights, layer, pooling, preprocessing). */
export function cacheDirFor(dataRoot: string, backbone: BackboneConfig): string {
  const key = createHash('sha256').update(JSON.stringify({
    root: dataRoot, w: backbone.weightsHash, layer: backbone.layer, pooling: backbone.pooling, pre: backbone.preprocessing, dec: DECODER_VERSION,
  })).digest('hex').slice(0, 8);
  const dataset = basename(dataRoot).replace(/[^A-Za-z0-9._-]+/g, '_');
  return join(defaultDataDir(), 'cache', `${dataset}-${backbone.modelId}-${backbone.layer}-${backbone.pooling}-${key}`);
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

export async function extractFeatures(opts: ExtractOptions): Promise<ExtractResult> {
  const t0 = performance.now();
  const log = opts.log;
  const dataArg = opts.data ?? defaultDatasetDir();
  if (!dataArg) throw new UserError('no --data given, no data/images/ folder, and no offline mirror with datasets/cats-vs-dogs');
  const scan = scanDataset(dataArg, log);
  const images = scan.presplit ? scan.images : assignSplits(scan.images, opts.split, opts.seed);
  const tScan = performance.now();

  const backbone = await prepareBackbone({ model: opts.model, layer: opts.layer, pooling: opts.pooling, preprocessing: opts.preprocessing, onnxLayout: opts.onnxLayout, log });
  const cfg = backbone.config;
  const cacheDir = opts.out ?? cacheDirFor(scan.root, cfg);
  const store = RecordStore.open(join(cacheDir, 'records'), cfg.featureDim, log);

  const keys = await hashFiles(images, 8);
  const tHash = performance.now();
  const missing: number[] = [];
  const queued = new Set<string>();
  keys.forEach((k, i) => { if (!store.has(k) && !queued.has(k)) { queued.add(k); missing.push(i); } });
  log.info(`${images.length} images, ${scan.classes.length} classes; ${images.length - missing.length} cached, ${missing.length} to extract (${cfg.modelId} @ ${cfg.layer}, pooling ${cfg.pooling}, D=${cfg.featureDim})`);

  let computedSeconds = 0;
  if (missing.length > 0) {
    const tx = performance.now();
    await computeMissing(missing.map((i) => ({ image: images[i]!, key: keys[i]!, absPath: images[i]!.absPath })), backbone.onnxPath, cfg, store, opts);
    computedSeconds = (performance.now() - tx) / 1000;
  }
  const tExtract = performance.now();

  const manifest = writeOutputs(cacheDir, images, keys, scan.classes, scan.skipped, store, cfg, opts, scan.root, scan.presplit);
  store.compact(new Set(keys));
  const tEnd = performance.now();
  manifest.timings = {
    scanSeconds: round3((tScan - t0) / 1000), hashSeconds: round3((tHash - tScan) / 1000), extractSeconds: round3(computedSeconds),
    writeSeconds: round3((tEnd - tExtract) / 1000), totalSeconds: round3((tEnd - t0) / 1000),
    computed: missing.length, reused: images.length - missing.length,
    extractImagesPerSecond: computedSeconds > 0 ? Math.round((missing.length / computedSeconds) * 10) / 10 : null,
  };
  writeFileAtomic(join(cacheDir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
  return { cacheDir, manifest };
}

function round3(x: number): number { return Math.round(x * 1000) / 1000; }

interface Job { image: ImageEntry; key: string; absPath: string }

/** Persist every batch before starting the next, so an interruption loses at most one batch. */
async function computeMissing(jobs: Job[], onnxPath: string, cfg: BackboneConfig, store: RecordStore, opts: ExtractOptions): Promise<void> {
  const progress = new Progress({ label: 'extract', total: jobs.length, quiet: opts.quiet });
  let done = 0;
  try {
    for await (const results of runBackbone(jobs, onnxPath, cfg, opts)) {
      const entries: { key: string; value: RecordValue }[] = results.map((r) => {
        if ('error' in r) {
          opts.log.warn(`skipping ${r.item.image.path}: ${r.error}`);
          return { key: r.item.key, value: { error: r.error } };
        }
        return { key: r.item.key, value: r.features };
      });
      store.add(entries);
      done += entries.length;
      progress.tick(entries.length);
      opts.onBatch?.(done, jobs.length);
    }
  } finally {
    progress.finish();
  }
}

function writeOutputs(
  cacheDir: string, images: readonly ImageEntry[], keys: readonly string[], classes: readonly string[],
  scanSkipped: readonly { path: string; reason: string }[], store: RecordStore, cfg: BackboneConfig, opts: ExtractOptions,
  dataRoot: string, presplit: boolean,
): Manifest {
  const order = images.map((_, i) => i).sort((a, b) => {
    const sa = SPLIT_ORDER.indexOf(images[a]!.split!);
    const sb = SPLIT_ORDER.indexOf(images[b]!.split!);
    return sa - sb || compareCodePoints(images[a]!.path, images[b]!.path);
  });
  const D = cfg.featureDim;
  const skipped = [...scanSkipped];
  const rows: number[] = [];
  for (const i of order) {
    const v = store.get(keys[i]!);
    if (!v) throw new Error(`internal: no record for ${images[i]!.path}`);
    if (v instanceof Float32Array) rows.push(i);
    else skipped.push({ path: images[i]!.path, reason: v.error });
  }
  skipped.sort((a, b) => compareCodePoints(a.path, b.path));
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  const features = new Float32Array(rows.length * D);
  const labels = new Int32Array(rows.length);
  rows.forEach((i, r) => {
    features.set(store.get(keys[i]!) as Float32Array, r * D);
    labels[r] = classIndex.get(images[i]!.className)!;
  });
  const paths = rows.map((i) => images[i]!.path);
  const splits = rows.map((i) => images[i]!.split!);

  const counts: Manifest['counts'] = {};
  const npy: Manifest['files']['npy'] = {};
  for (const split of SPLIT_ORDER) {
    const idx = splits.map((s, r) => (s === split ? r : -1)).filter((r) => r >= 0);
    if (idx.length === 0) continue;
    const first = idx[0]!;
    const n = idx.length;
    // Rows of one split are contiguous (split-major order), so the .npy arrays are plain slices.
    writeFileAtomic(join(cacheDir, `${split}_features.npy`), encodeNpy(features.subarray(first * D, (first + n) * D), [n, D]));
    writeFileAtomic(join(cacheDir, `${split}_labels.npy`), encodeNpy(labels.subarray(first, first + n), [n]));
    npy[split] = { features: `${split}_features.npy`, labels: `${split}_labels.npy`, rows: n };
    const perClass: SplitCounts['perClass'] = Object.fromEntries(classes.map((c) => [c, 0]));
    for (const r of idx) perClass[classes[labels[r]!]!]! += 1;
    counts[split] = { total: n, perClass };
  }
  if (!counts.train) throw new UserError('no usable training images (all were skipped); see the warnings above');
  const arrowBytes = encodeFeatureArrow({ paths, labels, splits, features, dim: D }, {
    'convcache.format_version': String(CACHE_FORMAT_VERSION),
    'convcache.classes': JSON.stringify(classes),
    'convcache.model': cfg.modelId,
    'convcache.weights_hash': cfg.weightsHash,
    'convcache.layer': cfg.layer,
    'convcache.pooling': cfg.pooling,
    'convcache.preprocessing': JSON.stringify(cfg.preprocessing),
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
    backbone: cfg,
    rowOrder: 'split (train, val, test), then path in code-point order; .npy rows follow the same order within each split',
    files: { arrow: ARROW_FILE, npy, arrowSha256: createHash('sha256').update(arrowBytes).digest('hex') },
    skipped,
    timings: { scanSeconds: 0, hashSeconds: 0, extractSeconds: 0, writeSeconds: 0, totalSeconds: 0, computed: 0, reused: 0, extractImagesPerSecond: null },
  };
}

export type { SplitName };
