import { createHash } from 'node:crypto';
import { basename, join } from 'node:path';
import { prepareBackbone, type BackboneConfig } from '../backbone/backbone.ts';
import type { Pooling } from '../backbone/convert.ts';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { scanDataset, type ImageEntry, type ScanResult, type SplitName } from '../dataset/scan.ts';
import { DEFAULT_SPLIT, splitImages, type SplitFractions } from '../dataset/split.ts';
import { graphForCache, runConfig } from './precision.ts';
import { DEFAULT_PRECISION, type Precision } from '../backbone/quantize.ts';
import { resolveDecoder, type DecoderChoice } from '../images/jpeg-fast.ts';
import type { DecodePool } from '../images/decode-pool.ts';
import type { FeatureRunner } from '../backbone/ort-runner.ts';
import { WriteBehind } from '../store/write-behind.ts';
import {
  augmentSeed,
  formatAugmentSpec,
  isAugmenting,
  sampleAugmentParams,
  type AugmentParams,
  type AugmentSpec,
} from '../images/augment.ts';
import { seededRandom } from '../linalg/random.ts';
import { formatTtaSpec, isTta, ttaViews, type TtaSpec } from '../images/tta.ts';
import { MANIFEST_FILE, type Manifest } from '../store/manifest.ts';
import { RecordStore, type RecordValue } from '../store/records.ts';
import { assembleCache, assemblyDigest, clearAssembled, currentAssembly, markAssembled } from './assemble.ts';
import { contentKey, FILE_KEYS_NAME, FileKeyCache, nowNs } from '../store/file-keys.ts';
import { describeMissing, shardOf } from './shard.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { UserError } from '../util/errors.ts';
import { cpus } from 'node:os';
import { DEFAULT_MAX_PIXELS } from '../images/limits.ts';
import { DEFAULT_MODEL } from '../backbone/registry.ts';
import { silentLogger, type Logger } from '../util/log.ts';
import { cacheRoot, defaultDatasetDir } from '../util/paths.ts';
import { Progress } from '../util/progress.ts';
import {
  decodeSlots,
  DEFAULT_DECODE_NICE,
  DEFAULT_EXTRACT_BATCH,
  decodesInSessions,
  defaultSessions,
  sessionsFor,
} from './schedule.ts';

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
  /** Images per batch of each session; default DEFAULT_EXTRACT_BATCH (8; schedule.ts says why). */
  batch?: number;
  /** Images decoded concurrently (default: one per core). */
  workers?: number;
  /** ONNX Runtime intra-op threads, over all sessions (default: one per core). */
  threads?: number;
  /** ONNX Runtime sessions running batches side by side (default: schedule.ts defaultSessions). */
  sessions?: number;
  /**
   * The sessions decode their own batches where they can, instead of decode threads beside them
   * (schedule.ts decodesInSessions; default DECODE_IN_SESSIONS).
   */
  decodeInSessions?: boolean;
  /** How much lower the decode threads' priority is than ORT's (default DEFAULT_DECODE_NICE; 0 = equal). */
  decodeNice?: number;
  maxPixels?: number;
  /** No progress events. */
  quiet?: boolean;
  /** Preprocessing overrides (mostly for foreign .onnx models). */
  preprocessing?: Partial<Preprocessing>;
  onnxLayout?: 'nchw' | 'nhwc';
  /** Store this many augmented views of each *training* image beside it (val/test untouched). */
  augment?: { spec: AugmentSpec; views: number };
  /** Conv base precision (default DEFAULT_PRECISION); int8 is calibrated on training images (pipeline/precision.ts). */
  precision?: Precision;
  /** Decode path (default: the fast JPEG path where libjpeg-turbo loads). */
  decoder?: DecoderChoice;
  /** Store, for every image, the mean feature of these fixed views (src/images/tta.ts). */
  tta?: TtaSpec;
  /** Progress lines, warnings about skipped images (default: silent). */
  log?: Logger;
  /**
   * Merge (src/pipeline/merge.ts): compute nothing, take the backbone config the shards recorded, and
   * fail with one line naming the missing images' shards if any record is missing.
   */
  merge?: { backbone: BackboneConfig; shards: number };
}

/** ExtractOptions with every default filled in. */
export type ResolvedExtractOptions = ExtractOptions &
  Required<
    Pick<
      ExtractOptions,
      'model' | 'split' | 'seed' | 'batch' | 'workers' | 'threads' | 'sessions' | 'maxPixels' | 'quiet' | 'log'
    >
  >;

export function withDefaults(o: ExtractOptions): ResolvedExtractOptions {
  return {
    ...o,
    model: o.model ?? DEFAULT_MODEL,
    split: o.split ?? DEFAULT_SPLIT,
    seed: o.seed ?? 42,
    batch: o.batch ?? DEFAULT_EXTRACT_BATCH,
    workers: o.workers ?? cpus().length,
    threads: o.threads ?? cpus().length,
    sessions: o.sessions ?? defaultSessions(o.threads ?? cpus().length),
    maxPixels: o.maxPixels ?? DEFAULT_MAX_PIXELS,
    quiet: o.quiet ?? false,
    log: o.log ?? silentLogger,
  };
}

export interface ExtractResult {
  cacheDir: string;
  manifest: Manifest;
}

/** Bumped when decoding changes in a way that changes pixels, so cached records are not reused. */
const DECODER_VERSION = 1;

/** Cache folder for one (dataset, model+weights, layer, pooling, preprocessing, decoder, precision, augmentation, TTA). */
export function cacheDirFor(
  dataRoot: string,
  backbone: BackboneConfig,
  augment?: { spec: string; views: number; seed: number },
  root = cacheRoot(),
  tta?: string,
): string {
  const key = createHash('sha256')
    .update(
      JSON.stringify({
        root: dataRoot,
        w: backbone.weightsHash,
        layer: backbone.layer,
        pooling: backbone.pooling,
        pre: backbone.preprocessing,
        dec: DECODER_VERSION,
        // Other pixels or another precision give other features: another cache (sharp + fp32 keep their old key).
        ...(backbone.decoder && backbone.decoder !== 'sharp' ? { decoder: backbone.decoder } : {}),
        ...(backbone.precision && backbone.precision !== 'fp32' ? { precision: backbone.precision } : {}),
        ...(backbone.quantizer !== undefined ? { quantizer: backbone.quantizer } : {}),
        ...(augment ? { augment } : {}),
        ...(tta ? { tta } : {}),
      }),
    )
    .digest('hex')
    .slice(0, 8);
  const dataset = basename(dataRoot).replace(/[^A-Za-z0-9._-]+/g, '_');
  const suffix =
    (augment ? `-aug${augment.views}` : '') +
    (tta ? `-tta_${tta.replace(/,/g, '_')}` : '') +
    (backbone.precision === 'int8' ? '-int8' : '');
  return join(
    root,
    'cache',
    `${dataset}-${backbone.modelId}-${backbone.layer.replace(/,/g, '+')}-${backbone.pooling}${suffix}-${key}`,
  );
}

/**
 * What one image contributes: record keys for view 0 (the image) and each augmented view, and with
 * TTA the keys of the extra fixed views whose features are averaged into view 0.
 */
export interface ImagePlan {
  viewKeys: string[];
  viewParams: (AugmentParams | null)[];
  ttaKeys: string[];
  ttaParams: (AugmentParams | null)[];
}

/** Every record key of an image (its views', then its TTA views'), and the views' parameters in that order. */
function planKeys(plan: ImagePlan): string[] {
  return [...plan.viewKeys, ...plan.ttaKeys];
}
function planParams(plan: ImagePlan): (AugmentParams | null)[] {
  return [...plan.viewParams, ...plan.ttaParams];
}

/**
 * Views of one image, from its content key. Augmentation parameters depend only on (seed, view, image
 * content), so a resumed or incremental run draws exactly the same views; without augmentation the
 * parameters do not depend on the key at all (extract's first run plans before any key is known).
 */
function viewPlanner(
  augment: ExtractOptions['augment'],
  seed: number,
  tta?: TtaSpec,
): (img: ImageEntry, key: string) => ImagePlan {
  const augKey = augment
    ? createHash('sha256')
        .update(`${formatAugmentSpec(augment.spec)}|${seed}`)
        .digest('hex')
        .slice(0, 12)
    : '';
  const extraViews = isTta(tta) ? ttaViews(tta).slice(1) : [];
  return (img, key) => {
    const plan: ImagePlan = {
      viewKeys: [key],
      viewParams: [null],
      ttaKeys: extraViews.map((v) => `${key}:tta:${v.name}`),
      ttaParams: extraViews.map((v) => v.params),
    };
    if (augment && img.split === 'train') {
      const contentSeed = parseInt(key.slice(0, 8), 16);
      for (let v = 1; v <= augment.views; v++) {
        plan.viewKeys.push(`${key}:aug:${augKey}:${v}`);
        plan.viewParams.push(sampleAugmentParams(augment.spec, seededRandom(augmentSeed(seed, v, contentSeed))));
      }
    }
    return plan;
  };
}

/** Content keys of the images; unchanged files' keys come from records/file-keys.tsv without reading them. */
async function hashFiles(images: readonly ImageEntry[], concurrency: number, cacheDir: string): Promise<string[]> {
  const known = FileKeyCache.load(join(cacheDir, 'records', FILE_KEYS_NAME));
  const keys = await known.keysOf(
    images.map((i) => i.absPath),
    concurrency,
  );
  known.save();
  return keys;
}

/** Everything decided before any image runs: the images, their record keys, and what is missing. */
export interface ExtractionPlan {
  scan: ScanResult;
  images: ImageEntry[];
  /** The images this run is responsible for (all of them, or one shard's). */
  selected: ImageEntry[];
  /** Per selected image; null when the keys come from where the files are decoded (`keysFromDecode`): the jobs' plans then. */
  plans: ImagePlan[] | null;
  /**
   * Nothing is cached yet (empty store, no augmentation, not a shard), so every image is missing whatever
   * its key: nothing is hashed up front, and the threads that decode (the sessions', or decode threads) key the files they read anyway. The jobs
   * (one per selected image, in order) get their keys as their results arrive (computeMissing).
   */
  keysFromDecode: boolean;
  jobs: Job[];
  missing: number;
  totalViews: number;
  cfg: BackboneConfig;
  onnxPath: string | null;
  cacheDir: string;
  store: RecordStore;
  augmentInfo: { spec: string; views: number; seed: number } | undefined;
  tScan: number;
  tHash: number;
  /** The options with defaults filled in. */
  opts: ResolvedExtractOptions;
  /** Decode threads started early (planExtraction's prestartDecoders); the caller passes them on or closes them. */
  pool?: DecodePool;
  /** The conv base's sessions, started early (on threads of their own, decoding their batches or beside the decode threads); the caller passes them on or releases them. */
  runner?: Promise<FeatureRunner>;
}

/**
 * Scan, split, key and plan. `select` narrows the work to one shard (same scan and split as every
 * other shard, so row order and splits agree); `recordPrefix` names this writer's record chunks.
 */
export async function planExtraction(
  options: ExtractOptions,
  select?: (img: ImageEntry) => boolean,
  recordPrefix?: string,
  prestartDecoders = false,
): Promise<ExtractionPlan> {
  const opts = withDefaults(options);
  const log = opts.log;
  const dataArg = opts.data ?? defaultDatasetDir(opts.cacheRoot);
  if (!dataArg)
    throw new UserError(
      'no --data given, no images/ folder in the cache root, and no offline mirror with datasets/cats-vs-dogs',
    );
  const scan = scanDataset(dataArg, log);
  const images = splitImages(scan, opts.split, opts.seed);
  const tScan = performance.now();

  if (opts.augment && (!isAugmenting(opts.augment.spec) || opts.augment.views < 1)) {
    throw new UserError('--augment needs at least one transform and --views K >= 1');
  }
  const augmentInfo = opts.augment
    ? { spec: formatAugmentSpec(opts.augment.spec), views: opts.augment.views, seed: opts.seed }
    : undefined;
  const tta = isTta(opts.tta) ? formatTtaSpec(opts.tta) : undefined;
  if (tta && augmentInfo)
    throw new UserError(
      '--tta and --augment cannot be combined (the augmented rows would be single views of TTA-averaged images)',
    );
  let cfg: BackboneConfig;
  let onnxPath: string | null = null;
  let backbone: Awaited<ReturnType<typeof prepareBackbone>> | undefined;
  const precision = opts.precision ?? DEFAULT_PRECISION;
  if (opts.merge) {
    cfg = opts.merge.backbone; // merge computes nothing: the shards' recorded config (decoder, precision included)
  } else {
    backbone = await prepareBackbone({
      model: opts.model,
      layer: opts.layer,
      pooling: opts.pooling,
      preprocessing: opts.preprocessing,
      onnxLayout: opts.onnxLayout,
      featureInputSize: true,
      log,
    });
    cfg = runConfig(backbone, { precision, decoder: opts.decoder });
  }
  const cacheDir = opts.out ?? cacheDirFor(scan.root, cfg, augmentInfo, cacheRoot(opts.cacheRoot), tta);
  const store = RecordStore.open(
    join(cacheDir, 'records'),
    cfg.featureDim,
    log,
    recordPrefix ? { prefix: recordPrefix } : {},
  );
  if (backbone) {
    // int8 calibration draws from all training images (not one shard's), so every shard quantizes alike.
    onnxPath = await graphForCache(backbone, cacheDir, {
      precision,
      decoder: opts.decoder,
      images,
      seed: opts.seed,
      threads: opts.threads,
      maxPixels: opts.maxPixels,
      log,
    });
  }

  const selected = select ? images.filter(select) : images;
  // Fewer records than images: there is work ahead, so start the sessions (and any decode threads) now; they load their
  // code while the images are hashed. (A no-op run never pays for them.)
  let pool: DecodePool | undefined;
  let runner: Promise<FeatureRunner> | undefined;
  let inSessions = false;
  if (prestartDecoders && backbone && store.size < selected.length && resolveDecoder(opts.decoder) === 'fast') {
    const sessions = sessionsFor(opts.sessions, opts.threads, selected.length - store.size, opts.batch);
    inSessions = decodesInSessions(opts.decodeInSessions, 'fast', sessions, !opts.augment && !tta);
    if (!inSessions) {
      const { DecodePool } = await import('../images/decode-pool.ts');
      pool = new DecodePool(opts.workers, cfg.preprocessing, opts.maxPixels, {
        nice: opts.decodeNice ?? DEFAULT_DECODE_NICE,
        slots: decodeSlots(opts.batch, opts.workers, sessions), // as runBackbone sizes its own pool
      });
    }
    // Sessions on threads of their own load the graph meanwhile too (one session would block this thread).
    if (sessions > 1) {
      const { startRunner } = await import('./run-backbone.ts');
      runner = startRunner(onnxPath!, cfg, opts.threads, sessions, inSessions ? opts.maxPixels : undefined);
      runner.catch(() => {}); // awaited by runBackbone (or released below); never unhandled meanwhile
    }
  }
  const planOf = viewPlanner(opts.augment, opts.seed, opts.tta);
  const keysFromDecode = (pool !== undefined || inSessions) && store.size === 0 && !opts.augment && !select;
  // A job = one image with the views it still needs (a resumed run may need only some of them).
  const jobs: Job[] = [];
  let plans: ImagePlan[] | null = null;
  let missing: number, totalViews: number;
  if (keysFromDecode) {
    for (const image of selected)
      jobs.push({
        image,
        absPath: image.absPath,
        keys: [],
        views: planParams(planOf(image, '')), // the views' parameters; their keys once the file is read
        planFor: (key) => planOf(image, key),
      });
    missing = totalViews = jobs.reduce((a, j) => a + j.views.length, 0);
  } else {
    let keys: string[];
    try {
      keys = await hashFiles(selected, 8, cacheDir);
    } catch (e) {
      await closePrestarted({ pool, runner });
      throw e;
    }
    plans = selected.map((img, i) => planOf(img, keys[i]!));
    const queued = new Set<string>();
    plans.forEach((plan, i) => {
      const allKeys = planKeys(plan),
        allParams = planParams(plan);
      const need = allKeys.map((_, v) => v).filter((v) => !store.has(allKeys[v]!) && !queued.has(allKeys[v]!));
      if (need.length === 0) return;
      for (const v of need) queued.add(allKeys[v]!);
      jobs.push({
        image: selected[i]!,
        absPath: selected[i]!.absPath,
        keys: need.map((v) => allKeys[v]!),
        views: need.map((v) => allParams[v]!),
      });
    });
    missing = queued.size;
    totalViews = plans.reduce((a, p) => a + p.viewKeys.length + p.ttaKeys.length, 0);
  }
  const tHash = performance.now();
  return {
    scan,
    images,
    selected,
    plans,
    keysFromDecode,
    jobs,
    missing,
    totalViews,
    cfg,
    onnxPath,
    cacheDir,
    store,
    augmentInfo,
    tScan,
    tHash,
    opts,
    ...(pool ? { pool } : {}),
    ...(runner ? { runner } : {}),
  };
}

export async function extractFeatures(options: ExtractOptions): Promise<ExtractResult> {
  const t0 = performance.now();
  const p = await planExtraction(options, undefined, undefined, true);
  const opts = p.opts;
  const log = opts.log;
  const { scan, images, jobs, missing, totalViews, cfg, cacheDir, store, augmentInfo } = p;
  if (jobs.length === 0) await closePrestarted(p); // everything was cached after all
  if (opts.merge && missing > 0)
    throw new UserError(
      describeMissing(
        p.jobs.map((j) => shardOf(j.image.path, opts.merge!.shards)),
        missing,
        opts.merge.shards,
      ),
    );
  log.info(
    `${images.length} images${augmentInfo ? ` (+${totalViews - images.length} augmented views)` : ''}, ${scan.classes.length} classes; ${totalViews - missing} cached, ${missing} to extract (${cfg.modelId} @ ${cfg.layer}, pooling ${cfg.pooling}, D=${cfg.featureDim})`,
  );

  let computedSeconds = 0;
  const readStartNs = nowNs(); // before any file is read: file-keys.ts's race rule
  if (jobs.length > 0) {
    const tx = performance.now();
    await computeMissing(jobs, missing, p.onnxPath!, cfg, store, {
      ...opts,
      ...(p.pool ? { pool: p.pool } : {}),
      ...(p.runner ? { runner: p.runner } : {}),
    });
    computedSeconds = (performance.now() - tx) / 1000;
  }
  const plans = p.plans ?? plansFromDecode(p, readStartNs);
  const tExtract = performance.now();

  const inputs = {
    images,
    plans,
    classes: scan.classes,
    scanSkipped: scan.skipped,
    backbone: cfg,
    dataRoot: scan.root,
    presplit: scan.presplit,
    split: opts.split,
    seed: opts.seed,
    augment: augmentInfo,
    ...(isTta(opts.tta) ? { tta: ttaManifest(opts.tta) } : {}),
  };
  const digest = assemblyDigest(inputs);
  // Nothing computed and the folder already holds the assembly of exactly these inputs: writing it
  // again would give the same bytes, so write nothing (a no-op re-run touches no file).
  const current = missing === 0 ? currentAssembly(cacheDir, digest) : null;
  let manifest: Manifest;
  if (current) {
    manifest = current;
  } else {
    clearAssembled(cacheDir);
    manifest = assembleCache({ ...inputs, cacheDir, store, log });
  }
  store.compact(new Set(plans.flatMap(planKeys)));
  const tEnd = performance.now();
  // On a no-op run these timings are returned but not written: the manifest's describe the run that wrote the files.
  manifest.timings = {
    scanSeconds: round3((p.tScan - t0) / 1000),
    hashSeconds: round3((p.tHash - p.tScan) / 1000),
    extractSeconds: round3(computedSeconds),
    writeSeconds: round3((tEnd - tExtract) / 1000),
    totalSeconds: round3((tEnd - t0) / 1000),
    computed: missing,
    reused: totalViews - missing,
    extractImagesPerSecond: computedSeconds > 0 ? Math.round((missing / computedSeconds) * 10) / 10 : null,
  };
  if (!current) {
    writeFileAtomic(join(cacheDir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    markAssembled(cacheDir, digest);
  }
  return { cacheDir, manifest };
}

/** keysFromDecode: every job has its content key now; remember them for the next run, and plan as if hashed. */
function plansFromDecode(p: ExtractionPlan, readStartNs: bigint): ImagePlan[] {
  const plans = p.jobs.map((j) => j.plan!); // one job per selected image, in order
  const known = FileKeyCache.load(join(p.cacheDir, 'records', FILE_KEYS_NAME));
  known.learn(
    p.jobs.map((j) => j.absPath),
    plans.map((pl) => pl.viewKeys[0]!), // view 0's key is the file's content key
    readStartNs,
  );
  known.save();
  return plans;
}

/** End the sessions and decode threads a plan started early (when they are not passed on to a run). */
export async function closePrestarted(p: Pick<ExtractionPlan, 'pool' | 'runner'>): Promise<void> {
  await p.pool?.close();
  await p.runner?.then(
    (r) => r.release(),
    () => {},
  );
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export interface Job {
  image: ImageEntry;
  absPath: string;
  /** Record key of each view (empty until the file's content key is known, with planFor). */
  keys: string[];
  views: (AugmentParams | null)[];
  /** The image's plan from its content key (ExtractionPlan.keysFromDecode); computeMissing sets `plan` and `keys`. */
  planFor?: (contentKey: string) => ImagePlan;
  plan?: ImagePlan;
}

/**
 * Persist the batches while the next ones run (store/write-behind.ts: the fsync happens on libuv's
 * pool, not on the JS thread, and batches that finish meanwhile go into the next chunk): an
 * interruption loses at most the chunk being written, the batches queued behind it and those the
 * sessions are running, and a re-run computes exactly those again.
 */
export async function computeMissing(
  jobs: Job[],
  total: number,
  onnxPath: string,
  cfg: BackboneConfig,
  store: RecordStore,
  opts: ResolvedExtractOptions & { pool?: DecodePool; runner?: Promise<FeatureRunner> },
): Promise<void> {
  // Loaded here, not at the top: decoding brings in sharp, which an up-to-date cache never needs.
  const { runBackbone } = await import('./run-backbone.ts');
  const progress = new Progress({ label: 'extract', total, quiet: opts.quiet, log: opts.log });
  const writer = new WriteBehind(store);
  const hash = jobs.some((j) => j.planFor);
  try {
    for await (const results of runBackbone(jobs, onnxPath, cfg, hash ? { ...opts, hash } : opts)) {
      const entries: { key: string; value: RecordValue }[] = [];
      for (const r of results) {
        const job = r.item;
        if (job.planFor && !job.plan) {
          // The decode thread could not read the file: key it here (still unreadable: store/file-keys.ts's unreadableKey).
          job.plan = job.planFor(r.key ?? (await contentKey(job.absPath)));
          job.keys = planKeys(job.plan);
        }
        const key = job.keys[r.view]!;
        if ('error' in r) {
          if (r.view === 0) opts.log.warn(`skipping ${job.image.path}: ${r.error}`);
          entries.push({ key, value: { error: r.error } });
        } else entries.push({ key, value: r.features });
      }
      await writer.add(entries); // a failed earlier write is thrown here
      progress.tick(entries.length);
    }
    await writer.drain();
  } finally {
    await writer.abandon(); // on an error elsewhere: let the write in flight finish, then rethrow that
    progress.finish();
  }
}

/** The manifest's record of TTA: the spec and the views averaged into every image's feature. */
function ttaManifest(t: TtaSpec): { spec: string; views: string[] } {
  return { spec: formatTtaSpec(t), views: ttaViews(t).map((v) => v.name) };
}

export type { SplitName };
