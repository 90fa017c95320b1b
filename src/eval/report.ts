import type { HeadParams } from '../heads/types.ts';
import { UserError } from '../util/errors.ts';
import type { ClassMetrics } from './metrics.ts';
import { pct } from '../util/format.ts';
import type { Selection } from './select.ts';
import type { Interval } from './stats.ts';
import type { PairedTest } from './verdict.ts';

/**
 * The compare report: its JSON shape (report.json), the one-line verdict and the Markdown
 * rendering (report.md). Pure functions of the data; src/pipeline/compare.ts fills it in and
 * src/eval/report-html.ts renders the HTML page.
 */

export const REPORT_FORMAT = 'convcache-report';
/** 2: the head is chosen on validation (`chosen`), rows carry test intervals and paired tests. */
export const REPORT_VERSION = 2;

export interface CvSummary {
  k: number;
  /** Mean and std (ddof 0) of the fold accuracies. */
  mean: number;
  std: number;
  /** Per-fold accuracies. */
  folds: number[];
  macroF1: { mean: number; std: number };
}

export interface ReportRow {
  /** Row name, unique in the report (e.g. 'svm-linear'). */
  name: string;
  /** Head kind ('svm'), or for extra rows whatever produced them (e.g. 'finetune'). */
  kind: string;
  params: HeadParams;
  /** 'compare' rows were trained by this run; 'extra' rows were supplied (see ExtraRow). */
  source: 'compare' | 'extra';
  testAccuracy: number | null;
  /** 95 % Wilson interval of testAccuracy, over n test images. */
  testInterval?: Interval & { n: number };
  valAccuracy: number | null;
  /** Validation log loss (of the head fitted on train): the selection's tie-breaker. */
  valLogLoss?: number | null;
  /** McNemar exact test against the chosen head on the same test images (rows with per-image predictions). */
  vsChosen?: PairedTest;
  /** Set when the head was refitted on train + val after selection. */
  refit?: { rows: number; epochs?: number };
  macroF1: number | null;
  logLoss: number | null;
  perClass: Record<string, ClassMetrics> | null;
  /** Rows = true class, columns = predicted class, classes in the cache's order. */
  confusion: number[][] | null;
  fitSeconds: number | null;
  predictMsPer1000: number | null;
  /** Size of the head as saved (file, or all files of a directory head). */
  modelBytes: number | null;
  cv?: CvSummary;
  /** Where compare saved this head (with its .meta.json sidecar), when it did. */
  headPath?: string;
  tuning?: {
    by: 'val' | 'cv';
    folds?: number;
    chosen: HeadParams;
    seconds: number;
    trials: { params: HeadParams; score: number }[];
  };
  note?: string;
}

/**
 * An extension point for rows produced elsewhere (e.g. fine-tuned models from a later stage),
 * scored on the SAME test split of the same cache. Only `name` is required; missing numbers are
 * shown as "n/a" and excluded from the comparisons they are needed for.
 */
export type ExtraRow = Partial<Omit<ReportRow, 'source'>> & { name: string };

export interface CacheSummary {
  dir: string;
  dataRoot: string;
  model: string;
  weightsHash: string;
  layer: string;
  pooling: string;
  D: number;
  classes: string[];
  counts: Record<string, number>;
  countsPerClass: Record<string, Record<string, number>>;
  skipped: number;
}

export interface Misclassified {
  path: string;
  trueClass: string;
  predictedClass: string;
  /** The best head's probability for the (wrong) predicted class. */
  confidence: number;
}

export interface Report {
  format: typeof REPORT_FORMAT;
  version: number;
  createdAt: string;
  toolVersion: string;
  cache: CacheSummary;
  split: {
    train: number;
    val: number;
    test: number;
    valSource: 'cache' | 'carved' | 'none';
    valFraction: number;
    seed: number;
    cvOn?: string;
  };
  options: {
    heads: string[];
    cv: number | null;
    /** Why the run departed from the requested selection (e.g. hold-out instead of CV on a large cache). */
    note?: string;
    tune: false | { by: 'val' | 'cv'; folds?: number };
    classWeight: string;
    seed: number;
  };
  /** The head chosen on validation, its test accuracy with an interval, ties by McNemar, the cheapest tied head. */
  verdict: string;
  /** Name of the head chosen WITHOUT the test split (validation, or CV with --cv); null when none could be. */
  chosen: string | null;
  /** How it was chosen (candidates best first). */
  selection: Selection | null;
  /** The chosen head and the heads not significantly different from it on test (McNemar exact, α = 0.05). */
  tied: string[];
  /** The cheapest tied head (fit time, predict time, model size). */
  recommended: string | null;
  /** Same as `chosen` (kept for readers of version 1, where it was the best head on test). */
  best: string | null;
  heads: ReportRow[];
  /** Test images the best trained head got wrong, most confident first (all of them; the HTML shows a capped number). */
  misclassified: { head: string; total: number; items: Misclassified[] } | null;
  totalSeconds: number;
}

// ------------------------------------------------------------------------------ formatting

/** Re-exported for the report's callers; defined once in util/format.ts. */
export { pct };

export function formatBytes(b: number | null | undefined): string {
  if (b === null || b === undefined) return 'n/a';
  if (b < 1024) return `${b} B`;
  if (b < 1024 * 1024) return `${(b / 1024).toFixed(1)} KB`;
  return `${(b / 1024 / 1024).toFixed(1)} MB`;
}

export function formatSecs(s: number | null | undefined): string {
  if (s === null || s === undefined) return 'n/a';
  if (s < 0.01) return `${(s * 1000).toFixed(1)} ms`;
  return `${s.toFixed(2)} s`;
}

export function formatCv(cv: CvSummary | undefined): string {
  return cv ? `${(cv.mean * 100).toFixed(2)} ± ${(cv.std * 100).toFixed(2)}%` : '–';
}

// ------------------------------------------------------------------------------ extra rows

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * Validate and normalise extra rows (from a function argument or `extra-rows.json`, which holds a
 * JSON array of ExtraRow or `{ "rows": [...] }`). Accuracies are fractions in [0, 1]; a confusion
 * matrix, if given, must be nClasses × nClasses. Problems → one-line UserError naming `source`.
 */
export function normalizeExtraRows(input: unknown, classes: readonly string[], source: string): ReportRow[] {
  const list = Array.isArray(input) ? input : (input as { rows?: unknown })?.rows;
  if (!Array.isArray(list)) throw new UserError(`${source}: expected a JSON array of rows (or {"rows": [...]})`);
  return list.map((raw, i): ReportRow => {
    const r = raw as ExtraRow;
    const where = `${source}: row ${i}`;
    if (typeof r?.name !== 'string' || r.name === '') throw new UserError(`${where} needs a "name" string`);
    const frac = (k: 'testAccuracy' | 'valAccuracy' | 'macroF1') => {
      const v = r[k];
      if (v === undefined || v === null) return null;
      if (!isNum(v) || v < 0 || v > 1)
        throw new UserError(`${where} (${r.name}): ${k} must be a fraction in [0, 1], got ${JSON.stringify(v)}`);
      return v;
    };
    const num = (k: 'fitSeconds' | 'predictMsPer1000' | 'modelBytes' | 'logLoss') => {
      const v = r[k];
      if (v === undefined || v === null) return null;
      if (!isNum(v) || v < 0)
        throw new UserError(`${where} (${r.name}): ${k} must be a number >= 0, got ${JSON.stringify(v)}`);
      return v;
    };
    const k = classes.length;
    if (
      r.confusion != null &&
      !(
        Array.isArray(r.confusion) &&
        r.confusion.length === k &&
        r.confusion.every((row) => Array.isArray(row) && row.length === k && row.every(isNum))
      )
    ) {
      throw new UserError(`${where} (${r.name}): confusion must be a ${k}×${k} matrix of counts`);
    }
    return {
      name: r.name,
      kind: typeof r.kind === 'string' ? r.kind : 'extra',
      params: r.params && typeof r.params === 'object' ? r.params : {},
      source: 'extra',
      testAccuracy: frac('testAccuracy'),
      valAccuracy: frac('valAccuracy'),
      macroF1: frac('macroF1'),
      logLoss: num('logLoss'),
      perClass: r.perClass ?? null,
      confusion: r.confusion ?? null,
      fitSeconds: num('fitSeconds'),
      predictMsPer1000: num('predictMsPer1000'),
      modelBytes: num('modelBytes'),
      ...(r.cv ? { cv: r.cv } : {}),
      ...(r.note ? { note: r.note } : {}),
    };
  });
}

// -------------------------------------------------------------------------------- markdown

/** The summary table's columns, shared by report.md and report.html: head, the measured cells, params. */
export function summaryColumns(r: Report): string[] {
  return [
    'head',
    'test acc',
    '95% CI',
    'vs chosen (McNemar p)',
    'val acc',
    'macro F1',
    'log loss',
    ...(r.options.cv ? [`CV ${r.options.cv}-fold`] : []),
    'fit',
    'predict / 1000',
    'model size',
    'params',
  ];
}

/** One head's measured cells (between its name and its params) as plain text; each format escapes them. */
export function summaryCells(r: Report, h: ReportRow): string[] {
  return [
    pct(h.testAccuracy),
    intervalCell(h),
    pairedCell(h, r.chosen),
    pct(h.valAccuracy),
    h.macroF1 === null ? 'n/a' : h.macroF1.toFixed(4),
    h.logLoss === null ? 'n/a' : h.logLoss.toFixed(4),
    ...(r.options.cv ? [formatCv(h.cv)] : []),
    formatSecs(h.fitSeconds),
    h.predictMsPer1000 === null ? 'n/a' : `${h.predictMsPer1000.toFixed(1)} ms`,
    formatBytes(h.modelBytes),
  ];
}

export const paramText = (p: HeadParams) =>
  Object.entries(p)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');

const mdCell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
function mdTable(header: string[], rows: string[][]): string {
  return [
    `| ${header.map(mdCell).join(' | ')} |`,
    `|${header.map((h, i) => (i === 0 || h === 'params' || h === 'class' ? '---' : '---:')).join('|')}|`,
    ...rows.map((r) => `| ${r.map(mdCell).join(' | ')} |`),
  ].join('\n');
}

/** '97.3–98.9%' or 'n/a'. */
export function intervalCell(h: ReportRow): string {
  return h.testInterval ? `${(h.testInterval.low * 100).toFixed(1)}–${(h.testInterval.high * 100).toFixed(1)}%` : 'n/a';
}

/** 'p=0.62 (tied)', 'p=0.003 (worse)', '–' for the chosen head, 'n/a' without per-image predictions. */
export function pairedCell(h: ReportRow, chosen: string | null): string {
  if (h.name === chosen) return '–';
  const t = h.vsChosen;
  if (!t) return 'n/a';
  const p = t.pValue >= 0.001 ? t.pValue.toFixed(t.pValue >= 0.1 ? 2 : 3) : '<0.001';
  return `p=${p} (${t.significant ? (t.better === 'chosen' ? 'worse' : 'better') : 'tied'}; ${t.b}/${t.c})`;
}

/** report.md: the verdict on the first line, then summary, per-class and confusion tables. */
export function renderMarkdown(r: Report): string {
  const c = r.cache;
  const out: string[] = [];
  out.push(`**Verdict:** ${r.verdict}`, '');
  out.push(`# Head comparison — ${c.model} / ${c.layer} / ${c.pooling} (D=${c.D})`, '');
  out.push(
    `Cache \`${c.dir}\` · classes ${c.classes.join(', ')} · ${Object.entries(c.counts)
      .map(([s, n]) => `${s} ${n}`)
      .join(', ')} · ${c.skipped} skipped image(s).`,
  );
  const valDesc =
    r.split.valSource === 'cache'
      ? "the cache's val split"
      : r.split.valSource === 'carved'
        ? `${(r.split.valFraction * 100).toFixed(0)}% of train carved out (stratified, seed ${r.split.seed})`
        : 'none';
  out.push(
    `Heads trained on ${r.split.train} rows; validation: ${r.split.val} rows (${valDesc}); test: ${r.split.test} rows, used only for the final score.`,
  );
  if (r.options.cv)
    out.push(`Cross-validation: stratified ${r.options.cv}-fold on train+val (${r.split.train + r.split.val} rows).`);
  if (r.options.tune)
    out.push(
      `Hyperparameters tuned by ${r.options.tune.by === 'val' ? 'validation accuracy' : `${r.options.tune.folds}-fold CV on train+val`} (never on test).`,
    );
  out.push(
    `Selection: ${r.selection ? (r.selection.by === 'cv' ? `by ${r.options.cv}-fold CV accuracy on train+val` : 'by validation accuracy (ties: lower validation log loss)') : 'none possible (no validation set)'}; test is used once, to report.${r.heads.some((h) => h.refit) ? ` Heads trained here were then refitted on train+val (${r.heads.find((h) => h.refit)!.refit!.rows} rows; early-stopped heads for the epochs validation chose).` : ''}`,
  );
  out.push(
    'Test accuracy with its 95% Wilson interval; McNemar p: exact paired test against the chosen head on the same test images (p >= 0.05: tied; b/c = images only the chosen head / only this head got right).',
  );
  out.push('', '## Summary', '');
  out.push(
    mdTable(
      summaryColumns(r),
      r.heads.map((h) => [
        h.name +
          (h.name === r.chosen ? ' (chosen)' : '') +
          (h.name === r.recommended && h.name !== r.chosen ? ' (recommended)' : '') +
          (h.source === 'extra' ? ' (extra)' : ''),
        ...summaryCells(r, h),
        paramText(h.params),
      ]),
    ),
  );
  // Which solver variant ran and why (e.g. an approximate RBF SVM or kNN search on a large cache).
  if (r.options.note) out.push('', `- **selection**: ${r.options.note}`);
  for (const h of r.heads) if (h.source === 'compare' && h.note) out.push('', `- **${h.name}**: ${h.note}`);
  out.push('', '## Per class (test)', '');
  const pcRows: string[][] = [];
  for (const h of r.heads) {
    if (!h.perClass) continue;
    for (const cls of c.classes) {
      const m = h.perClass[cls];
      if (m)
        pcRows.push([h.name, cls, m.precision.toFixed(4), m.recall.toFixed(4), m.f1.toFixed(4), String(m.support)]);
    }
  }
  out.push(
    pcRows.length
      ? mdTable(['head', 'class', 'precision', 'recall', 'F1', 'support'], pcRows)
      : '_no per-class scores_',
  );
  out.push('', '## Confusion matrices (test; rows = true, columns = predicted)');
  for (const h of r.heads) {
    if (!h.confusion) continue;
    out.push('', `### ${h.name}`, '');
    out.push(
      mdTable(
        ['true \\ predicted', ...c.classes],
        h.confusion.map((row, i) => [c.classes[i]!, ...row.map(String)]),
      ),
    );
  }
  if (r.misclassified)
    out.push(
      '',
      `${r.misclassified.total} test image(s) misclassified by ${r.misclassified.head}; thumbnails in report.html.`,
    );
  out.push('', `_Generated by convcache ${r.toolVersion} at ${r.createdAt} in ${r.totalSeconds.toFixed(1)} s._`, '');
  return out.join('\n');
}
