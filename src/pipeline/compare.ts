import { existsSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import sharp from 'sharp';
import { concatSets, crossValidate } from '../eval/cv.ts';
import type { ClassMetrics } from '../eval/metrics.ts';
import {
  normalizeExtraRows,
  renderMarkdown,
  REPORT_FORMAT,
  REPORT_VERSION,
  type CacheSummary,
  type ExtraRow,
  type Misclassified,
  type Report,
  type ReportRow,
} from '../eval/report.ts';
import { chooseHead } from '../eval/select.ts';
import { addIntervals, addPairedTests, makeVerdict } from '../eval/verdict.ts';
import { renderHtml, type Thumbnail } from '../eval/report-html.ts';
import { formatParams, type TuneMode } from '../eval/tune.ts';
import { createHead, HEAD_ROWS } from '../heads/registry.ts';
import type { FitOptions, HeadParams } from '../heads/types.ts';
import type { Matrix } from '../linalg/types.ts';
import { loadFeatureCache, type FeatureCache } from '../store/read.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { UserError } from '../util/errors.ts';
import { silentLogger, type Logger } from '../util/log.ts';
import {
  DEFAULT_VAL_FRACTION,
  defaultHeadPath,
  fitOnSplits,
  headBytes,
  prepareSplits,
  saveTrainedHead,
  toolVersion,
  type HeadRun,
} from './train.ts';
import { pct } from '../util/format.ts';

/**
 * Train every head on the same split of one cache and write report.json, report.md and
 * report.html (src/eval/report.ts documents the JSON shape).
 *
 * Extension point — rows produced elsewhere (e.g. fine-tuned models from a later stage) join the
 * report without touching this file, in two ways:
 *   1. `compareHeads({ ..., extraRows: [...] })` (an ExtraRow[] argument), and/or
 *   2. a file `<cache>/report/extra-rows.json` (override with `extraRowsFile`; `null` to skip),
 *      holding a JSON array of ExtraRow or `{ "rows": [...] }`.
 * An ExtraRow needs only `name`; it should carry `testAccuracy` (a fraction) measured on this
 * cache's test split, and may carry valAccuracy, macroF1, logLoss, perClass, confusion,
 * fitSeconds, predictMsPer1000, modelBytes, cv, params, kind, note. Extra rows appear in every
 * table and chart (marked "extra") with a test interval, but they are not candidates of the choice
 * (made on this run's validation split, src/eval/select.ts) and get no paired test (no per-image
 * predictions); the misclassified-image gallery comes from the chosen head.
 */

/** The rows `--heads all` trains: name → head kind + fixed params. svm appears twice (RBF and linear). */
export const COMPARE_ROWS: Readonly<Record<string, { kind: string; params: HeadParams }>> = HEAD_ROWS;

export const EXTRA_ROWS_FILE = 'extra-rows.json';

/**
 * The CLIs' default --cv: the head is chosen by 5-fold CV on train+val (2000 rows on the default
 * data) rather than by a 200-image validation split. Measured: on the crops-TTA cache validation
 * chose rf (val 99.0 %, CV 97.25 %, test 97.6 %) where CV chose svm (CV 98.4 %, test 98.8 %); a
 * 200-image split ties or misorders heads whose accuracies differ by a few images.
 */
export const DEFAULT_SELECTION_CV = 5;

/**
 * Above this many train+val rows compare chooses on the validation split alone (no k-fold CV) and
 * does not refit on train+val. At 160 000 training rows CV would fit every head k more times and
 * the refit once more (7 fits instead of 1 at --cv 5), while the hold-out it replaces is already
 * large: 20 000 validation rows give a standard error of ~0.15 pt at 95 % accuracy, against the
 * 200-image split that made CV the default; and refitting on 11 % more rows moves a head trained on
 * 160 000 by noise. Measured cost: README "Heads past 100k rows". `holdoutAbove: 0` turns it off.
 */
export const HOLDOUT_ABOVE = 50_000;
export const MAX_THUMBNAILS = 24;
export const THUMBNAIL_PX = 96;

/** 'all' or a list of row names → row names, validated (one-line error naming the valid ones). */
export function resolveHeadList(items: readonly string[]): string[] {
  const names = items
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  if (names.length === 0 || names.includes('all')) return Object.keys(COMPARE_ROWS);
  const out: string[] = [];
  for (const n of names) {
    if (!(n in COMPARE_ROWS))
      throw new UserError(`unknown head '${n}' in --heads (valid: all, ${Object.keys(COMPARE_ROWS).join(', ')})`);
    if (!out.includes(n)) out.push(n);
  }
  return out;
}

export interface CompareOptions {
  /** A loaded cache, or its directory. */
  cache: FeatureCache | string;
  /** Report folder; default `<cache>/report/`. */
  out?: string;
  /** Row names from COMPARE_ROWS (default: all). */
  heads?: readonly string[];
  /** k for k-fold CV on train+val (0 or undefined: no CV). */
  cv?: number;
  tune?: false | TuneMode;
  seed?: number;
  valFraction?: number;
  classWeight?: FitOptions['classWeight'];
  /**
   * Refit each head's validated configuration on train + val before its test score (default true;
   * src/eval/select.ts). The head is chosen on validation (or CV) either way, never on test.
   */
  refit?: boolean;
  /** Progress lines (one per head, plus CV folds and tuning). */
  log?: Logger;
  /** Extra rows to include (see the module comment). */
  extraRows?: readonly ExtraRow[];
  /** Where to read more extra rows; default `<cache>/report/extra-rows.json`; null = do not read. */
  extraRowsFile?: string | null;
  /** Cap on embedded thumbnails of misclassified test images (default 24). */
  maxThumbnails?: number;
  /**
   * Rows computed after the heads are trained (they may depend on which head won, e.g. the best
   * head retrained on an augmented cache). Same contract as extraRows.
   */
  laterRows?: (ctx: LaterRowsContext) => Promise<ExtraRow[]>;
  /**
   * Which trained heads to keep in `<cache>/heads/<row name>.json` (a directory for dense), each
   * with its .meta.json sidecar, for `convcache predict`: 'best' (default; the head chosen without
   * test), 'all' (the chosen one is still written last, so it is the most recent), or 'none'.
   */
  saveHeads?: 'best' | 'all' | 'none';
  /** Train+val rows above which selection uses the validation split only, without CV or refit (HOLDOUT_ABOVE; 0 = never). */
  holdoutAbove?: number;
}

/** What laterRows gets: the rows trained here and the head chosen among them (without test). */
export interface LaterRowsContext {
  rows: readonly ReportRow[];
  cache: FeatureCache;
  seed: number;
  log: Logger;
  chosen?: string | null;
}

export interface CompareResult {
  report: Report;
  outDir: string;
  files: { json: string; md: string; html: string };
}

function cacheSummary(c: FeatureCache): CacheSummary {
  const m = c.manifest;
  const counts: Record<string, number> = {};
  const countsPerClass: Record<string, Record<string, number>> = {};
  for (const [s, v] of Object.entries(m.counts)) {
    if (!v) continue;
    counts[s] = v.total;
    countsPerClass[s] = v.perClass;
  }
  return {
    dir: resolve(c.dir),
    dataRoot: m.dataRoot,
    model: m.backbone.modelId,
    weightsHash: m.backbone.weightsHash,
    layer: m.backbone.layer,
    pooling: m.backbone.pooling,
    D: m.backbone.featureDim,
    classes: c.classes,
    counts,
    countsPerClass,
    skipped: m.skipped.length,
  };
}

function perClassRecord(classes: readonly string[], pc: readonly ClassMetrics[]): Record<string, ClassMetrics> {
  return Object.fromEntries(classes.map((c, i) => [c, pc[i]!]));
}

/** Test rows the head got wrong, most confident mistakes first (ties: path order). */
function mistakes(
  paths: readonly string[],
  y: Int32Array,
  pred: Int32Array,
  proba: Matrix,
  classes: readonly string[],
): Misclassified[] {
  const out: Misclassified[] = [];
  for (let i = 0; i < y.length; i++) {
    if (pred[i] === y[i]) continue;
    out.push({
      path: paths[i]!,
      trueClass: classes[y[i]!]!,
      predictedClass: classes[pred[i]!]!,
      confidence: proba.data[i * proba.cols + pred[i]!]!,
    });
  }
  return out.sort((a, b) => b.confidence - a.confidence || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/**
 * A small JPEG data: URI of one dataset image, or null when it cannot be read (missing, not an
 * image, or a path that would leave the data root) — the page then shows a placeholder.
 */
export async function thumbnailDataUri(dataRoot: string, relPath: string, px = THUMBNAIL_PX): Promise<string | null> {
  const root = resolve(dataRoot);
  const abs = resolve(root, relPath);
  const rel = relative(root, abs);
  if (rel.startsWith('..') || isAbsolute(rel)) return null;
  try {
    if (!existsSync(abs) || !statSync(abs).isFile()) return null;
    const buf = await sharp(abs, { failOn: 'none', limitInputPixels: 100e6, animated: false })
      .rotate()
      .resize(px, px, { fit: 'inside', withoutEnlargement: true })
      .flatten({ background: '#ffffff' })
      .jpeg({ quality: 72 })
      .toBuffer();
    return `data:image/jpeg;base64,${buf.toString('base64')}`;
  } catch {
    return null;
  }
}

function readExtraRowsFile(path: string, classes: readonly string[], required: boolean): ReportRow[] {
  if (!existsSync(path)) {
    if (required) throw new UserError(`extra rows file not found: ${path}`);
    return [];
  }
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new UserError(`cannot read extra rows ${path}: ${(e as Error).message.split('\n')[0]}`);
  }
  return normalizeExtraRows(data, classes, path);
}

export async function compareHeads(o: CompareOptions): Promise<CompareResult> {
  const t0 = performance.now();
  const log = o.log ?? silentLogger;
  const names = resolveHeadList(o.heads ?? ['all']);
  for (const n of names) createHead(COMPARE_ROWS[n]!.kind, COMPARE_ROWS[n]!.params); // fail fast
  if (o.cv !== undefined && o.cv !== 0 && !(Number.isInteger(o.cv) && o.cv >= 2))
    throw new UserError(`--cv must be an integer >= 2, got ${o.cv}`);
  const cache = typeof o.cache === 'string' ? loadFeatureCache(o.cache) : o.cache;
  const outDir = resolve(o.out ?? join(cache.dir, 'report'));
  const seed = o.seed ?? 42;
  const classes = cache.classes;
  const K = classes.length;
  const extra = [
    ...(o.extraRows ? normalizeExtraRows(o.extraRows, classes, 'extraRows') : []),
    ...(o.extraRowsFile === null
      ? []
      : readExtraRowsFile(
          o.extraRowsFile ?? join(cache.dir, 'report', EXTRA_ROWS_FILE),
          classes,
          o.extraRowsFile !== undefined,
        )),
  ];

  const splits = prepareSplits(cache, o.valFraction ?? DEFAULT_VAL_FRACTION, seed);
  if (o.tune && o.tune.by === 'val' && !splits.val)
    throw new UserError('--tune needs a validation set: use --val-fraction > 0 or tune by CV');
  // Large caches: the validation split is the hold-out (see HOLDOUT_ABOVE); needs one to exist.
  const holdoutAbove = o.holdoutAbove ?? HOLDOUT_ABOVE;
  const selectionRows = splits.train.y.length + (splits.val?.y.length ?? 0);
  const holdout = holdoutAbove > 0 && selectionRows > holdoutAbove && splits.val !== undefined;
  const holdoutNote = holdout
    ? `${selectionRows} train+val rows > holdoutAbove=${holdoutAbove}: heads chosen on the ${splits.val!.y.length}-row validation split${o.cv ? ` instead of ${o.cv}-fold CV` : ''}, not refitted on train+val (each would cost ${o.cv ? `${o.cv + 1} more fits` : 'one more fit'} of a large head; the hold-out's standard error is ~${(100 * Math.sqrt((0.05 * 0.95) / splits.val!.y.length)).toFixed(2)} pt at 95 % accuracy)`
    : undefined;
  const cvK = holdout ? undefined : o.cv;
  const refit = holdout ? false : (o.refit ?? true);
  const cvData = cvK ? (splits.val ? concatSets(splits.train, splits.val) : splits.train) : undefined;
  log.info(
    `compare: ${names.length} head(s) on ${cache.dir}: train ${splits.train.y.length}, val ${splits.val?.y.length ?? 0} (${splits.valSource}), test ${splits.test?.y.length ?? 0}, D=${cache.manifest.backbone.featureDim}${cvK ? `, ${cvK}-fold CV` : ''}${o.tune ? `, tuning by ${o.tune.by}` : ''}`,
  );
  if (holdoutNote) log.info(`compare: ${holdoutNote}`);

  const rows: ReportRow[] = [];
  const preds = new Map<string, { pred: Int32Array; proba: Matrix }>();
  const runs = new Map<string, HeadRun>();
  for (const [i, name] of names.entries()) {
    const def = COMPARE_ROWS[name]!;
    const tag = `compare: [${i + 1}/${names.length}] ${name}`;
    const rowLog: Logger = { info: (m) => log.info(`${tag}: ${m}`), warn: (m) => log.warn(`${name}: ${m}`) };
    const run = await fitOnSplits(def.kind, def.params, splits, K, {
      classWeight: o.classWeight,
      seed,
      log: rowLog,
      fitLog: silentLogger,
      tune: o.tune,
      refit,
    });
    const modelBytes = await headBytes(run.head);
    if (run.testPred && run.testProba) preds.set(name, { pred: run.testPred, proba: run.testProba });
    runs.set(name, run);
    const row: ReportRow = {
      name,
      kind: def.kind,
      params: run.params,
      source: 'compare',
      testAccuracy: run.test?.accuracy ?? null,
      valAccuracy: run.val?.accuracy ?? null,
      valLogLoss: run.val?.logLoss ?? null,
      ...(run.refit
        ? { refit: { rows: run.refit.rows, ...(run.refit.epochs !== undefined ? { epochs: run.refit.epochs } : {}) } }
        : {}),
      macroF1: run.test?.macroF1 ?? null,
      logLoss: run.test?.logLoss ?? null,
      perClass: run.test ? perClassRecord(classes, run.test.perClass) : null,
      confusion: run.test?.confusion ?? null,
      fitSeconds: run.fitSeconds,
      predictMsPer1000: run.predictMsPer1000,
      modelBytes,
      ...(variantOf(run.head) ? { note: variantOf(run.head) } : {}),
      ...(run.tuning
        ? {
            tuning: {
              by: run.tuning.by,
              ...(run.tuning.folds ? { folds: run.tuning.folds } : {}),
              chosen: run.tuning.best,
              seconds: run.tuning.seconds,
              trials: run.tuning.trials.map((t) => ({ params: t.params, score: t.score })),
            },
          }
        : {}),
    };
    if (row.note) log.info(`${tag}: ${row.note}`);
    log.info(
      `${tag}: fit ${run.fitSeconds.toFixed(2)} s${run.refit ? ` (refit on ${run.refit.rows} rows${run.refit.epochs !== undefined ? `, ${run.refit.epochs} epochs` : ''})` : ''}, val ${pct(row.valAccuracy)}, test ${pct(row.testAccuracy)}, ${(modelBytes / 1024).toFixed(0)} KB${run.tuning ? ` (tuned: ${formatParams(run.tuning.best, def.params)})` : ''}`,
    );
    if (cvData && cvK) {
      // CV uses the row's final params (the tuned ones when tuned), on train+val; test stays untouched.
      const cv = await crossValidate(def.kind, run.params, cvData.X, cvData.y, cvK, seed, K, {
        classWeight: o.classWeight,
        onFold: (f, k, acc) => log.info(`${tag}: CV fold ${f}/${k} accuracy ${pct(acc)}`),
      });
      row.cv = {
        k: cvK,
        mean: cv.accuracy.mean,
        std: cv.accuracy.std,
        folds: cv.folds.map((f) => f.accuracy),
        macroF1: cv.macroF1,
      };
      log.info(
        `${tag}: CV ${cvK}-fold ${(cv.accuracy.mean * 100).toFixed(2)} ± ${(cv.accuracy.std * 100).toFixed(2)}%`,
      );
    }
    rows.push(row);
  }
  // The choice: among the heads trained here, by validation (or CV) only — never by test.
  const selection = chooseHead(
    rows.map((r) => ({
      name: r.name,
      score: cvK ? (r.cv?.mean ?? null) : r.valAccuracy,
      tieBreak: r.valLogLoss ?? null,
    })),
    cvK ? 'cv' : 'val',
  );
  const later = o.laterRows
    ? normalizeExtraRows(await o.laterRows({ rows, cache, seed, log, chosen: selection.chosen }), classes, 'laterRows')
    : [];
  const allRows = [...rows, ...extra, ...later];
  const seen = new Set<string>();
  for (const r of allRows) {
    if (seen.has(r.name))
      throw new UserError(`two report rows are named '${r.name}' (extra rows need names of their own)`);
    seen.add(r.name);
  }
  addIntervals(allRows, splits.test?.y.length ?? 0);
  addPairedTests(allRows, selection.chosen, splits.test?.y, new Map([...preds].map(([n, p]) => [n, p.pred])));
  const verdict = makeVerdict(allRows, selection);
  const chosenRow = rows.find((r) => r.name === selection.chosen);

  // The gallery: the chosen head (per-image predictions exist only for heads trained here).
  const bestTrained = chosenRow && preds.has(chosenRow.name) ? chosenRow : undefined;
  let misclassified: Report['misclassified'] = null;
  let thumbs: Thumbnail[] = [];
  if (bestTrained && splits.test) {
    const p = preds.get(bestTrained.name)!;
    const items = mistakes(splits.test.paths, splits.test.y, p.pred, p.proba, classes);
    misclassified = { head: bestTrained.name, total: items.length, items };
    const shown = items.slice(0, o.maxThumbnails ?? MAX_THUMBNAILS);
    thumbs = [];
    for (const item of shown)
      thumbs.push({ item, dataUri: await thumbnailDataUri(cache.manifest.dataRoot, item.path) });
    const missing = thumbs.filter((t) => !t.dataUri).length;
    if (missing > 0)
      log.warn(
        `${missing} misclassified image(s) could not be read from ${cache.manifest.dataRoot}; placeholders shown`,
      );
  }

  // Keep heads for predict: the chosen one last, so predict's default (the newest head) is it.
  const save = o.saveHeads ?? 'best';
  const winner = chosenRow;
  const toSave =
    save === 'none'
      ? []
      : save === 'all'
        ? [...rows.filter((r) => r !== winner), ...(winner ? [winner] : [])]
        : winner
          ? [winner]
          : [];
  for (const r of toSave) {
    const run = runs.get(r.name)!;
    const saved = await saveTrainedHead(
      {
        head: run.head,
        kind: run.kind,
        params: run.params,
        cache,
        splits,
        seed,
        classWeight: o.classWeight ?? 'none',
        valAccuracy: r.valAccuracy,
        testAccuracy: r.testAccuracy,
        tuning: run.tuning,
        refit: run.refit,
      },
      defaultHeadPath(cache.dir, run.kind, r.name),
    );
    r.headPath = saved.path;
    log.info(`compare: saved ${r.name} head to ${saved.path}`);
  }

  const report: Report = {
    format: REPORT_FORMAT,
    version: REPORT_VERSION,
    createdAt: new Date().toISOString(),
    toolVersion: toolVersion(),
    cache: cacheSummary(cache),
    split: {
      train: splits.train.y.length,
      val: splits.val?.y.length ?? 0,
      test: splits.test?.y.length ?? 0,
      valSource: splits.valSource,
      valFraction: splits.valFraction,
      seed,
      ...(cvK ? { cvOn: 'train+val' } : {}),
    },
    options: {
      heads: names,
      cv: cvK || null,
      ...(holdoutNote ? { note: holdoutNote } : {}),
      tune: o.tune ? { ...o.tune } : false,
      classWeight: o.classWeight ?? 'none',
      seed,
    },
    verdict: verdict.text,
    chosen: verdict.chosen,
    selection: selection.chosen ? selection : null,
    tied: verdict.tied,
    recommended: verdict.recommended,
    best: verdict.chosen,
    heads: allRows,
    misclassified,
    totalSeconds: 0,
  };
  report.totalSeconds = Math.round((performance.now() - t0) / 10) / 100;
  const files = { json: join(outDir, 'report.json'), md: join(outDir, 'report.md'), html: join(outDir, 'report.html') };
  // Each file is written atomically (temp + rename); report.json goes last, so its presence and
  // createdAt mark a complete set.
  writeFileAtomic(files.html, renderHtml(report, thumbs));
  writeFileAtomic(files.md, renderMarkdown(report));
  writeFileAtomic(files.json, JSON.stringify(report, null, 2) + '\n');
  log.info(`compare: wrote ${outDir}/report.{json,md,html} in ${report.totalSeconds.toFixed(1)} s`);
  return { report, outDir, files };
}

/** Heads that can switch solvers (svm → Nyström, knn → IVF) say which one ran and why. */
function variantOf(head: unknown): string | undefined {
  const v = (head as { variant_?: unknown }).variant_;
  return typeof v === 'string' ? v : undefined;
}
