import { formatBytes, formatSecs, pct, type ReportRow } from './report.ts';
import { mcnemarPaired, wilsonInterval, type McNemarResult } from './stats.ts';
import type { Selection } from './select.ts';

/**
 * The verdict, made honestly:
 *   - the head is the one chosen WITHOUT the test split (src/eval/select.ts: validation or CV);
 *   - its test accuracy is reported with a 95 % Wilson interval (so are every other head's);
 *   - every other head trained here is compared with it on the same test images by McNemar's
 *     exact test; heads it does not beat significantly are "tied" with it, and the cheapest of
 *     the tied heads (fit time, predict time, model size) is recommended.
 * A one-image difference out of 1000 is never declared a win (its McNemar p-value is 1).
 */

/** Significance level of the paired tests (no multiple-comparison correction: a handful of heads, and "tied" is the cautious outcome). */
export const ALPHA = 0.05;

export interface PairedTest extends McNemarResult {
  /** The chosen head. */
  against: string;
  /** p < ALPHA. */
  significant: boolean;
  /** Which of the two is better on these test images when significant: this row or the chosen head. */
  better: 'chosen' | 'this' | null;
}

/** Test-set size a row was scored on: its confusion matrix total, else the split's. */
function testCount(r: ReportRow, fallback: number): number {
  return r.confusion ? r.confusion.flat().reduce((a, b) => a + b, 0) : fallback;
}

/** Adds the 95 % Wilson interval of every row's test accuracy (rows without one are left alone). */
export function addIntervals(rows: ReportRow[], testRows: number): void {
  for (const r of rows) {
    if (r.testAccuracy === null) continue;
    const n = testCount(r, testRows);
    if (n <= 0) continue;
    r.testInterval = { ...wilsonInterval(Math.round(r.testAccuracy * n), n), n };
  }
}

/** McNemar between the chosen head and every other row with per-image test predictions. */
export function addPairedTests(
  rows: ReportRow[],
  chosen: string | null,
  y: Int32Array | undefined,
  preds: ReadonlyMap<string, Int32Array>,
): void {
  if (!chosen || !y || !preds.has(chosen)) return;
  const pc = preds.get(chosen)!;
  for (const r of rows) {
    const p = preds.get(r.name);
    if (r.name === chosen || !p) continue;
    const t = mcnemarPaired(y, pc, p);
    const significant = t.pValue < ALPHA;
    r.vsChosen = { ...t, against: chosen, significant, better: significant ? (t.b > t.c ? 'chosen' : 'this') : null };
  }
}

/**
 * Among `rows`, the cheapest: the lowest sum over fit time, predict time and model size of
 * log(cost / the lowest such cost among `rows`) — the geometric mean of its cost ratios. Ratios
 * rather than ranks, so timing noise between two heads a few percent apart cannot outweigh a 25×
 * difference in size or predict time. Costs under NEGLIGIBLE_COST count as equal (a 0.2 ms k-NN
 * "fit" is not 1000× cheaper than a 0.2 s one in any way a user feels); a missing cost counts as
 * 1000× the lowest. Ties: smaller model.
 */
export function cheapest(rows: readonly ReportRow[]): ReportRow {
  const keys: ((r: ReportRow) => number | null)[] = [
    (r) => r.fitSeconds,
    (r) => r.predictMsPer1000,
    (r) => r.modelBytes,
  ];
  const negligible = [NEGLIGIBLE_COST.fitSeconds, NEGLIGIBLE_COST.predictMsPer1000, NEGLIGIBLE_COST.modelBytes];
  const floors = keys.map((k, i) =>
    Math.max(negligible[i]!, Math.min(...rows.map((r) => k(r) ?? Infinity).filter(Number.isFinite), Infinity)),
  );
  const score = (r: ReportRow) =>
    keys.reduce((s, k, i) => {
      const v = k(r);
      const f = floors[i]!;
      return s + (Number.isFinite(f) ? (v === null ? Math.log(1000) : Math.log(Math.max(v, f) / f)) : 0);
    }, 0);
  return [...rows].sort((a, b) => score(a) - score(b) || (a.modelBytes ?? Infinity) - (b.modelBytes ?? Infinity))[0]!;
}

/**
 * Below these a cost does not matter (see cheapest): a user does not feel 0.1 s vs 0.2 s of fit or
 * 2 vs 6 ms per 1000 predictions, and such small timings swap places from run to run.
 */
export const NEGLIGIBLE_COST = { fitSeconds: 0.5, predictMsPer1000: 10, modelBytes: 64 * 1024 };

export const costText = (r: ReportRow): string =>
  `${formatSecs(r.fitSeconds)} fit, ${r.predictMsPer1000 === null ? 'n/a' : `${r.predictMsPer1000.toFixed(1)} ms`} per 1000 predictions, ${formatBytes(r.modelBytes)}`;

export const intervalText = (r: ReportRow): string =>
  r.testInterval
    ? `95% CI ${(r.testInterval.low * 100).toFixed(1)}–${(r.testInterval.high * 100).toFixed(1)}%`
    : 'no interval';

const pText = (p: number) => (p >= 0.001 ? `p=${p.toFixed(p >= 0.1 ? 2 : 3)}` : 'p<0.001');

export interface Verdict {
  text: string;
  chosen: string | null;
  /** The chosen head and every head not significantly different from it on test (McNemar). */
  tied: string[];
  /** The cheapest of `tied`. */
  recommended: string | null;
}

/**
 * The verdict text. `rows` must already carry intervals and paired tests (addIntervals,
 * addPairedTests); `selection` is how the head was chosen.
 */
export function makeVerdict(rows: readonly ReportRow[], selection: Selection): Verdict {
  const chosen = rows.find((r) => r.name === selection.chosen);
  if (!chosen) {
    return {
      text: 'No head could be chosen: there is no validation set or CV score (use --val-fraction > 0 or --cv K); test accuracies are shown but not used to pick a head.',
      chosen: null,
      tied: [],
      recommended: null,
    };
  }
  const how =
    selection.by === 'cv'
      ? `cross-validation on train+val (${pct(chosen.cv?.mean ?? null)})`
      : `validation accuracy (${pct(chosen.valAccuracy)})`;
  const parts: string[] = [];
  parts.push(
    chosen.testAccuracy === null
      ? `${chosen.name} is chosen by ${how}; there is no test split to report on.`
      : `${chosen.name} is chosen by ${how}: test accuracy ${pct(chosen.testAccuracy)} (${intervalText(chosen)}, n=${chosen.testInterval?.n ?? '?'}).`,
  );
  const tested = rows.filter((r) => r.vsChosen);
  const tiedRows = tested.filter((r) => !r.vsChosen!.significant);
  const worse = tested.filter((r) => r.vsChosen!.better === 'chosen');
  const better = tested.filter((r) => r.vsChosen!.better === 'this');
  if (tested.length === 0 && chosen.testAccuracy !== null)
    parts.push('No other head to compare with on the same test images.');
  if (tiedRows.length > 0) {
    parts.push(
      `Tied with ${tiedRows.map((r) => `${r.name} (${pct(r.testAccuracy)}, ${pText(r.vsChosen!.pValue)})`).join(', ')}: not significantly different on the same test images (McNemar exact, α=${ALPHA}).`,
    );
  }
  if (worse.length > 0)
    parts.push(
      `Significantly better than ${worse.map((r) => `${r.name} (${pct(r.testAccuracy)}, ${pText(r.vsChosen!.pValue)})`).join(', ')}.`,
    );
  if (better.length > 0)
    parts.push(
      `Note: ${better.map((r) => `${r.name} (${pct(r.testAccuracy)}, ${pText(r.vsChosen!.pValue)})`).join(', ')} did significantly better on test, although validation chose ${chosen.name}.`,
    );
  const tied = [chosen, ...tiedRows];
  const cheap = cheapest(tied);
  if (tiedRows.length > 0) {
    parts.push(
      cheap === chosen
        ? `${chosen.name} is also the cheapest of the tied heads (${costText(chosen)}).`
        : `Recommended: ${cheap.name}, the cheapest of the tied heads (${costText(cheap)}; ${chosen.name}: ${costText(chosen)}).`,
    );
  }
  return { text: parts.join(' '), chosen: chosen.name, tied: tied.map((r) => r.name), recommended: cheap.name };
}
