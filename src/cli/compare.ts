import { stageRows } from '../pipeline/stage-rows.ts';
import { cacheRootFlag, defineCommand, loadLimitFlags, tuneFlags } from './command.ts';
import { classWeight, intInRange, loadLimits, oneOf, optionalInt, seed, tuneMode, valFraction } from './validate.ts';
import { consoleLogger } from '../util/log.ts';
import { cacheRoot } from '../util/paths.ts';
import { defaultCacheDir, loadFeatureCache } from '../store/read.ts';
import {
  COMPARE_ROWS,
  compareHeads,
  DEFAULT_SELECTION_CV,
  HOLDOUT_ABOVE,
  resolveHeadList,
} from '../pipeline/compare.ts';
import { DEFAULT_VAL_FRACTION } from '../pipeline/train.ts';

export const command = defineCommand(
  {
    name: 'compare',
    summary:
      'train every head on the same split of a feature cache, choose one without test (CV or validation), refit it on train+val, and write report.{json,md,html} with test intervals and paired tests',
    usage:
      'convcache compare [--cache DIR] [--out REPORT_DIR] [--heads all|logreg,svm,…] [--cv 5] [--tune] [--seed 42]',
    flags: {
      cache: {
        type: 'string',
        metavar: 'DIR',
        description: 'feature cache (default: the most recent under <cache root>/cache/)',
      },
      'cache-root': cacheRootFlag,
      out: { type: 'string', metavar: 'DIR', description: 'report folder (default <cache>/report/)' },
      heads: {
        type: 'list',
        metavar: 'LIST',
        description: `heads to train: all, or some of ${Object.keys(COMPARE_ROWS).join(', ')}`,
        default: 'all',
      },
      cv: {
        type: 'number',
        metavar: 'K',
        description:
          'stratified K-fold cross-validation on train+val (mean ± std), which also chooses the head (0 = choose on the validation split alone: noisier)',
        default: DEFAULT_SELECTION_CV,
      },
      'holdout-above': {
        type: 'number',
        metavar: 'ROWS',
        description:
          'above this many train+val rows, choose on the validation split alone: no CV, no refit (0 = never)',
        default: HOLDOUT_ABOVE,
      },
      ...tuneFlags,
      refit: {
        type: 'boolean',
        description:
          "refit each head's validated configuration on train+val before scoring test (--no-refit: keep the train-only fits)",
        default: true,
      },
      seed: {
        type: 'number',
        metavar: 'N',
        description: 'seed for the validation carve-out, CV folds and the heads',
        default: 42,
      },
      'val-fraction': {
        type: 'number',
        metavar: 'F',
        description: 'share of train held out as validation when the cache has no val split (0 = none)',
        default: DEFAULT_VAL_FRACTION,
      },
      'class-weight': { type: 'string', metavar: 'MODE', description: 'none | balanced', default: 'none' },
      'save-heads': {
        type: 'string',
        metavar: 'WHICH',
        description: 'keep trained heads in <cache>/heads/ for predict: best | all | none',
        default: 'best',
      },
      'extra-rows': {
        type: 'string',
        metavar: 'FILE',
        description:
          'more report rows (JSON; e.g. fine-tuned models) — default <cache>/report/extra-rows.json when present',
      },
      ...loadLimitFlags,
      quiet: { type: 'boolean', description: 'no progress lines on stderr' },
    },
  },
  async ({ flags }) => {
    const log = consoleLogger(flags.quiet);
    const root = cacheRoot(flags['cache-root']);
    const heads = resolveHeadList(flags.heads);
    const limits = loadLimits(flags);
    const tune = tuneMode(flags);
    const { report, outDir } = await compareHeads({
      cache: loadFeatureCache(flags.cache ?? defaultCacheDir(root), limits),
      out: flags.out,
      heads,
      cv: flags.cv === 0 ? undefined : optionalInt('cv', flags.cv, 2, 50),
      refit: flags.refit !== false,
      holdoutAbove: intInRange('holdout-above', flags['holdout-above'], 0, 2 ** 31 - 1),
      tune,
      classWeight: classWeight(flags['class-weight']),
      valFraction: valFraction(flags['val-fraction']),
      seed: seed(flags.seed),
      extraRowsFile: flags['extra-rows'],
      laterRows: (ctx) => stageRows(ctx, root),
      saveHeads: oneOf('save-heads', flags['save-heads'], ['best', 'all', 'none'] as const),
      log,
    });
    process.stdout.write(`${report.verdict}\n${outDir}\n`);
  },
);
