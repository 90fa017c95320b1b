import { createHead, headParamSpecs, tuneGridOf } from '../heads/registry.ts';
import type { FitOptions, Head, HeadParams, LabelledSet } from '../heads/types.ts';
import { UserError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import { concatSets, crossValidate } from './cv.ts';
import { accuracy, logLoss } from './metrics.ts';
import { pct } from '../util/format.ts';

/**
 * Small built-in hyperparameter grids, searched on the validation set (or by k-fold CV on the
 * training rows) — never on the test split. Parameters the user fixed (e.g. `--opt C=1`) are not
 * searched, and grid entries a head no longer declares in its paramSpecs are dropped, so the grids
 * survive changes to the heads.
 */

/** The candidate parameter sets for a kind: `fixed` merged with every grid point (at least one: `fixed`). */
export function tuneGrid(kind: string, fixed: HeadParams = {}): HeadParams[] {
  const specs = headParamSpecs(kind);
  const axes = Object.entries(tuneGridOf(kind)).filter(([name]) => name in specs && !(name in fixed));
  let grid: HeadParams[] = [{ ...fixed }];
  for (const [name, values] of axes) grid = grid.flatMap((p) => values.map((v) => ({ ...p, [name]: v })));
  return grid;
}

export type TuneMode = { by: 'val' } | { by: 'cv'; folds: number };

export interface TuneTrial {
  params: HeadParams;
  /** Validation accuracy (by: 'val') or mean CV accuracy (by: 'cv'). */
  score: number;
  /** Validation log loss (by: 'val') or CV accuracy std (by: 'cv'): the tie-breaker, lower wins. */
  tieBreak: number;
  seconds: number;
}

export interface TuneResult {
  by: 'val' | 'cv';
  folds?: number;
  best: HeadParams;
  trials: TuneTrial[];
  seconds: number;
  /** by 'val': the best candidate, already fitted on `train` (so the caller need not refit), and its fit time. */
  fitted?: { head: Head; fitSeconds: number };
}

export interface TuneOptions {
  kind: string;
  /** Parameters fixed by the user; the grid varies the others. */
  fixed: HeadParams;
  train: LabelledSet;
  val?: LabelledSet;
  nClasses: number;
  mode: TuneMode;
  classWeight?: FitOptions['classWeight'];
  seed: number;
  log?: Logger;
  /** Passed to each candidate's fit (dense's per-epoch lines); progress lines go to `log`. */
  fitLog?: Logger;
}

/**
 * Grid search. by 'val': each candidate is fitted on `train` (with `val` for early stopping) and
 * scored by val accuracy, ties broken by lower val log loss, then grid order. by 'cv': each
 * candidate is scored by stratified k-fold CV on train + val, ties broken by lower std.
 */
export async function tuneHead(o: TuneOptions): Promise<TuneResult> {
  const t0 = performance.now();
  const grid = tuneGrid(o.kind, o.fixed);
  for (const p of grid) createHead(o.kind, p); // validate every candidate before spending time
  const trials: TuneTrial[] = [];
  let bestIdx = -1;
  let fitted: TuneResult['fitted'];
  const better = (t: TuneTrial, b: TuneTrial | undefined) =>
    !b || t.score > b.score + 1e-12 || (Math.abs(t.score - b.score) <= 1e-12 && t.tieBreak < b.tieBreak - 1e-12);
  for (const [i, params] of grid.entries()) {
    const ts = performance.now();
    let trial: TuneTrial;
    if (o.mode.by === 'val') {
      if (!o.val)
        throw new UserError('tuning on validation needs a validation set (use --val-fraction > 0, or tune by CV)');
      const head = createHead(o.kind, params);
      await head.fit(o.train.X, o.train.y, {
        nClasses: o.nClasses,
        val: o.val,
        classWeight: o.classWeight,
        seed: o.seed,
        log: o.fitLog,
      });
      const fitSeconds = (performance.now() - ts) / 1000;
      const P = await head.predictProba(o.val.X);
      const pred = await head.predict(o.val.X);
      trial = {
        params,
        score: accuracy(o.val.y, pred),
        tieBreak: logLoss(o.val.y, P),
        seconds: (performance.now() - ts) / 1000,
      };
      if (better(trial, trials[bestIdx])) {
        bestIdx = i;
        fitted = { head, fitSeconds };
      }
    } else {
      const all = o.val ? concatSets(o.train, o.val) : o.train;
      const cv = await crossValidate(o.kind, params, all.X, all.y, o.mode.folds, o.seed, o.nClasses, {
        classWeight: o.classWeight,
        log: o.fitLog,
      });
      trial = { params, score: cv.accuracy.mean, tieBreak: cv.accuracy.std, seconds: (performance.now() - ts) / 1000 };
      if (better(trial, trials[bestIdx])) bestIdx = i;
    }
    trials.push(trial);
    o.log?.info(
      `tune ${o.kind} [${i + 1}/${grid.length}] ${formatParams(params, o.fixed)}: ${o.mode.by === 'val' ? 'val' : `${o.mode.folds}-fold CV`} accuracy ${pct(trial.score)} (${trial.seconds.toFixed(2)} s)`,
    );
  }
  return {
    by: o.mode.by,
    ...(o.mode.by === 'cv' ? { folds: o.mode.folds } : {}),
    best: grid[bestIdx]!,
    trials,
    seconds: (performance.now() - t0) / 1000,
    ...(fitted ? { fitted } : {}),
  };
}

/** 'C=1 kernel=rbf' — only the params not in `omit` (or all when the result would be empty). */
export function formatParams(p: HeadParams, omit: HeadParams = {}): string {
  const shown = Object.entries(p).filter(([k]) => !(k in omit));
  return (shown.length ? shown : Object.entries(p)).map(([k, v]) => `${k}=${v}`).join(' ') || '(defaults)';
}
