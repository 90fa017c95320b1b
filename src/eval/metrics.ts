import type { Matrix } from '../linalg/types.ts';
import { UserError } from '../util/errors.ts';

/**
 * Classification metrics as small pure functions over label arrays (0..nClasses-1).
 * Conventions follow scikit-learn: confusion rows = true class, columns = predicted class;
 * precision/recall/F1 of a class with a zero denominator are 0 (never NaN); macro F1 is the
 * unweighted mean over classes.
 */

export type Labels = ArrayLike<number>;

export interface ClassMetrics {
  precision: number;
  recall: number;
  f1: number;
  /** Number of true rows of the class. */
  support: number;
}

function checkSameLength(yTrue: Labels, yPred: Labels): void {
  if (yTrue.length !== yPred.length)
    throw new UserError(`metrics: ${yTrue.length} true labels but ${yPred.length} predictions`);
}

/** Fraction of rows predicted correctly (0 for empty input). */
export function accuracy(yTrue: Labels, yPred: Labels): number {
  checkSameLength(yTrue, yPred);
  if (yTrue.length === 0) return 0;
  let ok = 0;
  for (let i = 0; i < yTrue.length; i++) if (yTrue[i] === yPred[i]) ok++;
  return ok / yTrue.length;
}

/** nClasses × nClasses counts, `m[t][p]` = rows of true class t predicted as p. */
export function confusionMatrix(yTrue: Labels, yPred: Labels, nClasses: number): number[][] {
  checkSameLength(yTrue, yPred);
  const m = Array.from({ length: nClasses }, () => new Array<number>(nClasses).fill(0));
  for (let i = 0; i < yTrue.length; i++) {
    const t = yTrue[i]!,
      p = yPred[i]!;
    if (!(t >= 0 && t < nClasses && p >= 0 && p < nClasses))
      throw new UserError(`metrics: label ${t}/${p} at row ${i} is outside 0..${nClasses - 1}`);
    m[t]![p]!++;
  }
  return m;
}

const safeDiv = (a: number, b: number): number => (b > 0 ? a / b : 0);

/** Per-class precision, recall, F1 and support from a confusion matrix. */
export function perClassMetrics(confusion: readonly (readonly number[])[]): ClassMetrics[] {
  const k = confusion.length;
  const out: ClassMetrics[] = [];
  for (let c = 0; c < k; c++) {
    const tp = confusion[c]![c]!;
    let support = 0,
      predicted = 0;
    for (let j = 0; j < k; j++) {
      support += confusion[c]![j]!;
      predicted += confusion[j]![c]!;
    }
    const precision = safeDiv(tp, predicted);
    const recall = safeDiv(tp, support);
    out.push({ precision, recall, f1: safeDiv(2 * precision * recall, precision + recall), support });
  }
  return out;
}

/** Unweighted mean of the per-class F1 scores (every class counts, including ones never predicted). */
export function macroF1(confusion: readonly (readonly number[])[]): number {
  const pc = perClassMetrics(confusion);
  return pc.length === 0 ? 0 : pc.reduce((s, m) => s + m.f1, 0) / pc.length;
}

/**
 * Mean negative log-likelihood of the true class, probabilities clipped to [eps, 1 - eps]
 * (scikit-learn's log_loss with the rows already normalised).
 */
export function logLoss(yTrue: Labels, proba: Matrix, eps = 1e-15): number {
  if (proba.rows !== yTrue.length)
    throw new UserError(`metrics: ${yTrue.length} true labels but ${proba.rows} probability rows`);
  const k = proba.cols;
  for (let i = 0; i < yTrue.length; i++) {
    const t = yTrue[i]!;
    if (!(t >= 0 && t < k)) throw new UserError(`metrics: label ${t} at row ${i} is outside 0..${k - 1}`);
  }
  return meanLogLoss(proba.data, yTrue, k, eps, 1 - eps);
}

/**
 * The one log-loss loop: mean of -log p[i, y_i] over rows of a row-major [n·k] probability array,
 * p clipped to [lo, hi] (0 for no rows). Training loops (dense head, fine-tuning) use lo = 1e-12
 * and no upper clip; the report uses scikit-learn's [eps, 1 - eps].
 */
export function meanLogLoss(
  probs: ArrayLike<number>,
  y: ArrayLike<number>,
  k: number,
  lo = 1e-12,
  hi = Infinity,
): number {
  let s = 0;
  for (let i = 0; i < y.length; i++) s -= Math.log(Math.min(Math.max(probs[i * k + y[i]!]!, lo), hi));
  return s / Math.max(1, y.length);
}

/** Mean and population standard deviation (ddof = 0, as numpy's `std`); {0, 0} for no values. */
export function meanStd(values: readonly number[]): { mean: number; std: number } {
  const n = values.length;
  if (n === 0) return { mean: 0, std: 0 };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const v = values.reduce((a, b) => a + (b - mean) * (b - mean), 0) / n;
  return { mean, std: Math.sqrt(v) };
}

export interface Evaluation {
  accuracy: number;
  macroF1: number;
  confusion: number[][];
  perClass: ClassMetrics[];
  logLoss?: number;
}

/** Everything above at once (logLoss only when probabilities are given). */
export function evaluate(yTrue: Labels, yPred: Labels, nClasses: number, proba?: Matrix): Evaluation {
  const confusion = confusionMatrix(yTrue, yPred, nClasses);
  return {
    accuracy: accuracy(yTrue, yPred),
    macroF1: macroF1(confusion),
    confusion,
    perClass: perClassMetrics(confusion),
    ...(proba ? { logLoss: logLoss(yTrue, proba) } : {}),
  };
}
