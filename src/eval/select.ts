import { createHead } from '../heads/registry.ts';
import type { FitOptions, Head, HeadParams, LabelledSet } from '../heads/types.ts';
import { concatSets, usesEarlyStopping } from './cv.ts';

/**
 * Model selection without the test split, then refit — scikit-learn's `GridSearchCV(refit=True)`:
 *   1. every candidate (head, hyper-parameters, number of epochs) is scored on validation (or by
 *      cross-validation on train + val);
 *   2. the chosen configuration is refitted on train + val, so the final model sees every labelled
 *      row that is not test; early-stopped heads are refitted for the number of epochs validation
 *      picked (their best epoch), since there is no held-out set left to stop on;
 *   3. the test split is then used once, to report.
 */

/** The number of epochs a fitted early-stopping head chose on validation (its best epoch), if any. */
export function selectedEpochs(kind: string, head: Head): number | undefined {
  if (!usesEarlyStopping(kind, head.params)) return undefined;
  const best = (head as unknown as { bestEpoch_?: unknown }).bestEpoch_;
  return typeof best === 'number' && Number.isInteger(best) && best > 0 ? best : undefined;
}

/**
 * The parameters to refit with: `params`, plus `epochs` fixed to the selected epoch count for
 * early-stopping heads (patience has nothing to act on without a validation set).
 */
export function refitParams(kind: string, params: HeadParams, fitted: Head): HeadParams {
  const epochs = selectedEpochs(kind, fitted);
  return epochs === undefined ? { ...params } : { ...params, epochs };
}

export interface RefitResult {
  head: Head;
  params: HeadParams;
  fitSeconds: number;
  /** Rows the refitted head was trained on (train + val). */
  rows: number;
  /** For early-stopping heads: the epochs validation selected, used for the refit. */
  epochs?: number;
}

/** Refit the configuration of `fitted` (chosen on `val`) on train + val. */
export async function refitOnTrainVal(
  kind: string,
  params: HeadParams,
  fitted: Head,
  train: LabelledSet,
  val: LabelledSet,
  o: { nClasses: number; classWeight?: FitOptions['classWeight']; seed: number; log?: FitOptions['log'] },
): Promise<RefitResult> {
  const p = refitParams(kind, params, fitted);
  const all = concatSets(train, val);
  const head = createHead(kind, p);
  const t = performance.now();
  await head.fit(all.X, all.y, { nClasses: o.nClasses, classWeight: o.classWeight, seed: o.seed, log: o.log });
  const epochs = selectedEpochs(kind, fitted);
  return {
    head,
    params: head.params,
    fitSeconds: (performance.now() - t) / 1000,
    rows: all.y.length,
    ...(epochs !== undefined ? { epochs } : {}),
  };
}

/** What selection among heads looks at: nothing measured on test. */
export interface SelectionCandidate {
  name: string;
  /** Validation accuracy, or mean CV accuracy on train + val. */
  score: number | null;
  /** Validation log loss: the tie-breaker (lower wins); a 200-image validation set ties often. */
  tieBreak: number | null;
}

export interface Selection {
  by: 'val' | 'cv';
  chosen: string | null;
  /** Candidates best first, as ranked. */
  ranking: { name: string; score: number; tieBreak: number | null }[];
}

/**
 * Choose the head: highest score, then lowest tie-break, then the earlier candidate (the head
 * list's order), so the choice is deterministic and never depends on timings or on test.
 */
export function chooseHead(candidates: readonly SelectionCandidate[], by: 'val' | 'cv'): Selection {
  const scored = candidates
    .map((c, i) => ({ ...c, i }))
    .filter((c): c is typeof c & { score: number } => c.score !== null && Number.isFinite(c.score));
  scored.sort((a, b) => {
    if (Math.abs(b.score - a.score) > 1e-12) return b.score - a.score;
    const ta = a.tieBreak ?? Infinity,
      tb = b.tieBreak ?? Infinity;
    if (ta !== tb) return ta - tb;
    return a.i - b.i;
  });
  return {
    by,
    chosen: scored[0]?.name ?? null,
    ranking: scored.map((c) => ({ name: c.name, score: c.score, tieBreak: c.tieBreak })),
  };
}
