import { join } from 'node:path';
import { UserError } from '../util/errors.ts';
import type { FinetuneOptions, FinetuneReport } from './options.ts';
import { runFinetune } from './recipe.ts';

/** Where `selectThenRefit` keeps its validation run, inside the final model's `--out`. */
export const VALIDATION_DIR = 'validation';

export interface SelectThenRefitResult {
  outDir: string;
  /** The final model's report (the refit, scored on test). */
  report: FinetuneReport;
  /** The validation run that chose the refit's epoch counts (it never read the test split). */
  validation: { outDir: string; report: FinetuneReport };
}

/**
 * GridSearchCV(refit=True) in one call: a validation run (train minus val, early stopping on val,
 * the test split never read) chooses the epoch counts, then the final model is trained on train + val
 * for exactly those counts and scored on test. The options' epoch counts are the validation run's
 * maxima. Both runs checkpoint, so `resume` continues whichever was interrupted.
 */
export async function selectThenRefit(opts: FinetuneOptions): Promise<SelectThenRefitResult> {
  if (opts.refit === false)
    throw new UserError('--select runs the validation run and the refit itself; drop --no-refit');
  const validationOut = join(opts.out, VALIDATION_DIR);
  opts.log.info(`finetune --select: 1/2, the validation run (${validationOut})`);
  const validation = await runFinetune({ ...opts, refit: false, out: validationOut });
  const chosen = validation.report.selection;
  const v = validation.report;
  opts.log.info(`finetune --select: 2/2, the refit on train + val with ${chosen.refitArgs ?? ''}`);
  const final = await runFinetune({
    ...opts,
    refit: true,
    warmupEpochs: chosen.epochs.warmup,
    epochsHead: chosen.epochs.head,
    epochsFinetune: chosen.epochs.finetune,
    averageEpochs: chosen.averageEpochs,
    validationRun: { dir: validation.outDir, seconds: v.totalSeconds, valLoss: v.valLoss, valAccuracy: v.valAccuracy },
  });
  return { ...final, validation };
}
