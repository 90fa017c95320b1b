import fg from 'fast-glob';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { join, resolve } from 'node:path';
import { prepareBackbone } from '../backbone/backbone.ts';
import { findBackbone } from '../backbone/registry.ts';
import { IMAGE_GLOB, compareCodePoints } from '../dataset/scan.ts';
import { loadHead } from '../heads/registry.ts';
import { defaultCacheDir } from '../store/read.ts';
import { UserError } from '../util/errors.ts';
import { silentLogger, type Logger } from '../util/log.ts';
import { cpus } from 'node:os';
import { DEFAULT_MAX_PIXELS } from '../images/limits.ts';
import { readHeadMeta } from './train.ts';
import { runBackbone, type BackboneRunOptions, type ImageResult } from './run-backbone.ts';
import { pinnedInt8Graph } from './precision.ts';
import { DEFAULT_EXTRACT_BATCH } from './schedule.ts';
import { meanFeatures, parseTtaSpec, ttaViews } from '../images/tta.ts';

/** One result per image: the mean of its views' features (a batch always holds whole images). */
function averageViews<T>(results: readonly ImageResult<T>[]): ImageResult<T>[] {
  const out: ImageResult<T>[] = [];
  const byItem = new Map<T, ImageResult<T>[]>();
  for (const r of results) {
    const list = byItem.get(r.item);
    if (list) list.push(r);
    else byItem.set(r.item, [r]);
  }
  for (const [item, list] of byItem) {
    const bad = list.find((r) => 'error' in r);
    out.push(
      bad ?? { item, view: 0, features: meanFeatures(list.map((r) => (r as { features: Float32Array }).features)) },
    );
  }
  return out;
}

export interface Prediction {
  path: string;
  label: string;
  probability: number;
  probabilities: Record<string, number>;
}
export interface PredictFailure {
  path: string;
  reason: string;
}

export interface PredictOptions extends Partial<BackboneRunOptions> {
  /** Saved head, or a finetune output folder; default the newest head of the newest cache under cacheRoot. */
  head?: string;
  inputs: string[];
  cacheRoot?: string;
  /** Warnings and progress (default: silent). */
  log?: Logger;
}

type ResolvedPredictOptions = PredictOptions & BackboneRunOptions & { log: Logger };

/** Defaults as the CLI's: extract's batch, one decode and one ORT thread per core (sessions: schedule.ts). */
function withDefaults(o: PredictOptions): ResolvedPredictOptions {
  return {
    ...o,
    batch: o.batch ?? DEFAULT_EXTRACT_BATCH,
    workers: o.workers ?? cpus().length,
    threads: o.threads ?? cpus().length,
    maxPixels: o.maxPixels ?? DEFAULT_MAX_PIXELS,
    log: o.log ?? silentLogger,
  };
}

/** --head default: the most recently saved head of the most recent cache. */
export function newestHeadPath(root?: string): string {
  const dir = join(defaultCacheDir(root), 'heads');
  const metas = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.meta.json')) : [];
  if (metas.length === 0)
    throw new UserError(
      `no trained head in ${dir}; run 'convcache train-head' or 'convcache compare' first, or pass --head FILE`,
    );
  metas.sort((a, b) => statSync(join(dir, b)).mtimeMs - statSync(join(dir, a)).mtimeMs);
  return join(dir, metas[0]!.slice(0, -'.meta.json'.length));
}

/** Expand files and folders (recursively) into image paths; missing paths are failures, not fatal. */
export function expandInputs(inputs: readonly string[]): { files: string[]; missing: PredictFailure[] } {
  const files: string[] = [];
  const missing: PredictFailure[] = [];
  for (const input of inputs) {
    const p = resolve(input);
    if (!existsSync(p)) {
      missing.push({ path: input, reason: 'no such file or directory' });
      continue;
    }
    if (statSync(p).isDirectory()) {
      const found = fg.sync(IMAGE_GLOB, {
        cwd: p,
        caseSensitiveMatch: false,
        dot: false,
        followSymbolicLinks: false,
        absolute: true,
      });
      if (found.length === 0) missing.push({ path: input, reason: 'folder has no images' });
      files.push(...found.sort(compareCodePoints));
    } else files.push(p);
  }
  return { files, missing };
}

/**
 * Classify images with a saved head, running the conv base exactly as the head's cache was extracted
 * (same model weights, layer, pooling and preprocessing, all read from the head's metadata).
 */
export async function predictImages(
  options: PredictOptions,
): Promise<{ predictions: Prediction[]; failures: PredictFailure[] }> {
  const opts = withDefaults(options);
  const headPath = opts.head ?? newestHeadPath(opts.cacheRoot);
  if (existsSync(join(headPath, 'finetune.json'))) return predictFinetuned(headPath, opts);
  const meta = readHeadMeta(headPath);
  const head = await loadHead(headPath);
  const b = meta.backbone;
  const model = findBackbone(b.modelId) ? b.modelId : b.modelSource;
  const backbone = await prepareBackbone({
    model,
    layer: b.layer,
    pooling: b.pooling,
    preprocessing: b.preprocessing,
    onnxLayout: b.layout,
    log: opts.log,
  });
  if (backbone.config.weightsHash !== b.weightsHash) {
    throw new UserError(
      `the model found for '${model}' has weights ${backbone.config.weightsHash}, but the head was trained on features of weights ${b.weightsHash}`,
    );
  }
  if (backbone.config.featureDim !== meta.featureDim)
    throw new UserError(`backbone gives D=${backbone.config.featureDim}, head expects ${meta.featureDim}`);
  const { files, missing } = expandInputs(opts.inputs);
  const failures: PredictFailure[] = [...missing];
  const predictions: Prediction[] = [];
  // A TTA cache's features are the mean over fixed views: predict averages the same views.
  const views = meta.tta ? ttaViews(parseTtaSpec(meta.tta.spec)).map((v) => v.params) : undefined;
  const items = files.map((absPath, i) => ({
    absPath,
    display: displayPath(opts.inputs, absPath, i),
    ...(views ? { views } : {}),
  }));
  // The head's features came from this decoder and precision: predict must use the same.
  const decoder = b.decoder && b.decoder !== 'sharp' ? ('fast' as const) : ('sharp' as const);
  const graph = b.precision === 'int8' ? pinnedInt8Graph(meta.cacheDir, backbone.onnxPath) : backbone.onnxPath;
  for await (const raw of runBackbone(items, graph, backbone.config, { ...opts, decoder })) {
    const results = views ? averageViews(raw) : raw;
    const ok = results.filter((r): r is Extract<typeof r, { features: Float32Array }> => 'features' in r);
    for (const r of results) if ('error' in r) failures.push({ path: r.item.display, reason: r.error });
    if (ok.length === 0) continue;
    const D = meta.featureDim;
    const X = new Float32Array(ok.length * D);
    ok.forEach((r, i) => X.set(r.features, i * D));
    const P = await head.predictProba({ data: X, rows: ok.length, cols: D });
    const k = P.cols;
    ok.forEach((r, i) => {
      const row = P.data.subarray(i * k, (i + 1) * k);
      let best = 0;
      for (let c = 1; c < k; c++) if (row[c]! > row[best]!) best = c;
      predictions.push({
        path: r.item.display,
        label: meta.classes[best]!,
        probability: row[best]!,
        probabilities: Object.fromEntries(meta.classes.map((c, j) => [c, row[j]!])),
      });
    });
  }
  return { predictions, failures };
}

/**
 * A fine-tuned model (`convcache finetune --out DIR`): the exported TF.js layers model already ends
 * in the softmax, so the "features" at its last layer are the class probabilities.
 */
async function predictFinetuned(
  dir: string,
  opts: ResolvedPredictOptions,
): Promise<{ predictions: Prediction[]; failures: PredictFailure[] }> {
  const file = join(dir, 'finetune.json');
  let report: { classes: string[]; preprocessing: Preprocessing; export: { tfjs: string; outputLayer: string } };
  try {
    report = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`cannot read ${file}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (
    !Array.isArray(report?.classes) ||
    !report.preprocessing?.size ||
    !report.export?.tfjs ||
    !report.export?.outputLayer
  ) {
    throw new UserError(
      `${file} is not a complete finetune result (classes, preprocessing and export are needed); re-run 'convcache finetune'`,
    );
  }
  const { size, resize, cropPct, kernel, channelOrder, mean, std } = report.preprocessing;
  const backbone = await prepareBackbone({
    model: join(dir, report.export.tfjs),
    layer: report.export.outputLayer,
    pooling: 'none',
    preprocessing: { size, resize, ...(cropPct !== undefined ? { cropPct } : {}), kernel, channelOrder, mean, std },
    log: opts.log,
  });
  if (backbone.config.featureDim !== report.classes.length)
    throw new UserError(
      `${dir}: model outputs ${backbone.config.featureDim} values for ${report.classes.length} classes`,
    );
  const { files, missing } = expandInputs(opts.inputs);
  const failures: PredictFailure[] = [...missing];
  const predictions: Prediction[] = [];
  const items = files.map((absPath, i) => ({ absPath, display: displayPath(opts.inputs, absPath, i) }));
  for await (const results of runBackbone(items, backbone.onnxPath, backbone.config, opts)) {
    for (const r of results) {
      if ('error' in r) {
        failures.push({ path: r.item.display, reason: r.error });
        continue;
      }
      let best = 0;
      for (let c = 1; c < r.features.length; c++) if (r.features[c]! > r.features[best]!) best = c;
      predictions.push({
        path: r.item.display,
        label: report.classes[best]!,
        probability: r.features[best]!,
        probabilities: Object.fromEntries(report.classes.map((c, j) => [c, r.features[j]!])),
      });
    }
  }
  return { predictions, failures };
}

/** Show paths as the user typed them when possible. */
function displayPath(inputs: readonly string[], abs: string, _i: number): string {
  for (const input of inputs) {
    const p = resolve(input);
    if (abs === p) return input;
    if (abs.startsWith(p + '/')) return join(input, abs.slice(p.length + 1));
  }
  return abs;
}
