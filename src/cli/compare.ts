import { stageRows } from '../pipeline/stage-rows.ts';
import { runCommand } from '../util/cli.ts';
import { intInRange, type CommandSpec } from '../util/args.ts';
import { UserError } from '../util/errors.ts';
import { consoleLogger } from '../util/log.ts';
import { defaultCacheDir } from '../store/read.ts';
import type { TuneMode } from '../eval/tune.ts';
import { COMPARE_ROWS, compareHeads, resolveHeadList } from '../pipeline/compare.ts';
import { DEFAULT_VAL_FRACTION } from '../pipeline/train.ts';

const spec: CommandSpec = {
  name: 'compare',
  summary: 'train every head on the same split of a feature cache and write report.{json,md,html}',
  usage: 'npm run compare -- [--cache DIR] [--out REPORT_DIR] [--heads all|logreg,svm,…] [--cv 5] [--tune] [--seed 42]',
  flags: {
    cache: { type: 'string', metavar: 'DIR', description: 'feature cache (default: the most recent under data/cache/)' },
    out: { type: 'string', metavar: 'DIR', description: 'report folder (default <cache>/report/)' },
    heads: { type: 'list', metavar: 'LIST', description: `heads to train: all, or some of ${Object.keys(COMPARE_ROWS).join(', ')}`, default: 'all' },
    cv: { type: 'number', metavar: 'K', description: 'also run stratified K-fold cross-validation on train+val (mean ± std)' },
    tune: { type: 'boolean', description: 'grid-search each head\'s main hyperparameters on the validation set first (never on test)' },
    'tune-cv': { type: 'number', metavar: 'K', description: 'tune by K-fold CV on train+val instead of on val (implies --tune)' },
    seed: { type: 'number', metavar: 'N', description: 'seed for the validation carve-out, CV folds and the heads', default: 42 },
    'val-fraction': { type: 'number', metavar: 'F', description: 'share of train held out as validation when the cache has no val split (0 = none)', default: DEFAULT_VAL_FRACTION },
    'class-weight': { type: 'string', metavar: 'MODE', description: 'none | balanced', default: 'none' },
    'save-heads': { type: 'string', metavar: 'WHICH', description: 'keep trained heads in <cache>/heads/ for predict: best | all | none', default: 'best' },
    'extra-rows': { type: 'string', metavar: 'FILE', description: 'more report rows (JSON; e.g. fine-tuned models) — default <cache>/report/extra-rows.json when present' },
    quiet: { type: 'boolean', description: 'no progress lines on stderr' },
  },
};

await runCommand(spec, async ({ flags }) => {
  const log = consoleLogger(Boolean(flags.quiet));
  const heads = resolveHeadList(flags.heads === 'all' ? ['all'] : (flags.heads as string[]));
  const classWeight = String(flags['class-weight']);
  if (classWeight !== 'none' && classWeight !== 'balanced') throw new UserError(`--class-weight must be none or balanced, got '${classWeight}'`);
  const valFraction = flags['val-fraction'] as number;
  if (!(valFraction >= 0 && valFraction < 1)) throw new UserError(`--val-fraction must be in [0, 1), got ${valFraction}`);
  const saveHeads = String(flags['save-heads']);
  if (saveHeads !== 'best' && saveHeads !== 'all' && saveHeads !== 'none') throw new UserError(`--save-heads must be best, all or none, got '${saveHeads}'`);
  const cv = flags.cv === undefined ? undefined : intInRange('cv', flags.cv, 2, 50);
  let tune: false | TuneMode = flags.tune ? { by: 'val' } : false;
  if (flags['tune-cv'] !== undefined) tune = { by: 'cv', folds: intInRange('tune-cv', flags['tune-cv'], 2, 50) };
  const { report, outDir } = await compareHeads({
    cache: (flags.cache as string | undefined) ?? defaultCacheDir(),
    out: flags.out as string | undefined,
    heads, cv, tune, classWeight, valFraction,
    seed: intInRange('seed', flags.seed, 0, 2 ** 31 - 1),
    extraRowsFile: flags['extra-rows'] as string | undefined,
    laterRows: stageRows,
    saveHeads,
    log,
  });
  process.stdout.write(`${report.verdict}\n${outDir}\n`);
});
