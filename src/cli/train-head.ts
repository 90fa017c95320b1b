import { pct } from '../util/format.ts';
import { cacheRootFlag, defineCommand, loadLimitFlags, tuneFlags } from './command.ts';
import { classWeight, loadLimits, tuneMode, valFraction } from './validate.ts';
import { UserError } from '../util/errors.ts';
import { consoleLogger, silentLogger } from '../util/log.ts';
import { HEAD_KINDS, createHead, parseOpts } from '../heads/registry.ts';
import { defaultCacheDir, loadFeatureCache } from '../store/read.ts';
import { formatParams } from '../eval/tune.ts';
import {
  DEFAULT_VAL_FRACTION,
  evaluateSavedHead,
  saveTrainedHead,
  trainHead,
  trainHeadStreaming,
} from '../pipeline/train.ts';

export const command = defineCommand(
  {
    name: 'train-head',
    summary:
      'train one classifier head on a feature cache (val for early stopping/tuning, test only for the final score) and save it',
    usage:
      'convcache train-head --head KIND [--cache DIR] [--opt NAME=VALUE …] [--class-weight none|balanced] [--seed N] [--tune] [--out PATH]\n       convcache train-head --eval HEAD [--cache DIR]',
    flags: {
      head: { type: 'string', metavar: 'KIND', description: `head kind: ${HEAD_KINDS.join(', ')}` },
      cache: {
        type: 'string',
        metavar: 'DIR',
        description: 'feature cache (default: the most recent under <cache root>/cache/)',
      },
      'cache-root': cacheRootFlag,
      opt: {
        type: 'string',
        repeatable: true,
        metavar: 'NAME=VALUE',
        description: 'head hyperparameter, repeatable (e.g. --opt C=1 --opt kernel=rbf)',
      },
      'class-weight': { type: 'string', metavar: 'MODE', description: 'none | balanced', default: 'none' },
      seed: {
        type: 'number',
        metavar: 'N',
        description: 'seed for the validation carve-out and the head',
        default: 42,
      },
      'val-fraction': {
        type: 'number',
        metavar: 'F',
        description: 'share of train held out as validation when the cache has no val split (0 = none)',
        default: DEFAULT_VAL_FRACTION,
      },
      ...tuneFlags,
      refit: {
        type: 'boolean',
        description:
          'refit the validated configuration on train+val before the test score (--no-refit: keep the train-only fit)',
        default: true,
      },
      out: {
        type: 'string',
        metavar: 'PATH',
        description:
          'where to save the head (default <cache>/heads/<kind>.json, or <cache>/heads/dense/); sidecar <PATH>.meta.json',
      },
      eval: {
        type: 'string',
        metavar: 'HEAD',
        description:
          "instead of training: score a saved head on --cache's test split (refused if the cache has other features)",
      },
      verbose: { type: 'boolean', description: 'per-epoch lines from heads that train in epochs' },
      ...loadLimitFlags,
      stream: {
        type: 'boolean',
        description:
          'train from the training split read from disk in shuffled blocks, never loaded (logreg, svm kernel=linear: mini-batches; for caches past --max-memory)',
      },
      quiet: { type: 'boolean', description: 'no progress lines on stderr' },
    },
  },
  async ({ flags }) => {
    const log = consoleLogger(flags.quiet);
    const cacheDir = (): string => flags.cache ?? defaultCacheDir(flags['cache-root']);
    if (flags.eval !== undefined) {
      if (flags.head !== undefined) throw new UserError('--eval scores a saved head; do not combine it with --head');
      const r = await evaluateSavedHead(flags.eval, cacheDir());
      process.stdout.write(`head: ${r.meta?.kind ?? '?'} ${flags.eval}\n`);
      process.stdout.write(
        `test accuracy: ${pct(r.test?.accuracy)}${r.test ? ` (macro F1 ${r.test.macroF1.toFixed(4)})` : ' (cache has no test split)'}\n`,
      );
      return;
    }
    const kind = flags.head;
    if (kind === undefined) throw new UserError(`--head is required (one of: ${HEAD_KINDS.join(', ')})`);
    const params = parseOpts(flags.opt ?? []);
    createHead(kind, params); // unknown head / bad --opt: one line, before loading anything
    const cw = classWeight(flags['class-weight']);
    const vf = valFraction(flags['val-fraction']);
    const tune = tuneMode(flags);
    if (tune && tune.by === 'val' && vf === 0)
      throw new UserError('--tune needs a validation set: use --val-fraction > 0 or --tune-cv K');
    const limits = loadLimits(flags);

    const dir = cacheDir();
    log.info(`train-head: ${kind} on ${dir}`);
    if (flags.stream && (tune || flags['max-rows'] !== undefined))
      throw new UserError('--stream trains on every training row once per epoch: drop --tune/--tune-cv/--max-rows');
    const r = flags.stream
      ? await trainHeadStreaming({ dir, kind, params, classWeight: cw, log, ...limits })
      : await trainHead({
          cache: loadFeatureCache(dir, limits),
          kind,
          params,
          classWeight: cw,
          valFraction: vf,
          tune,
          refit: flags.refit !== false,
          seed: limits.seed,
          log,
          fitLog: flags.verbose ? log : silentLogger,
        });
    const s = r.splits;
    const valDesc =
      s.valSource === 'cache'
        ? "the cache's val split"
        : s.valSource === 'carved'
          ? `${(s.valFraction * 100).toFixed(0)}% carved from train, seed ${r.seed}`
          : 'none';
    process.stdout.write(`head: ${kind} (${formatParams(r.params)})\n`);
    process.stdout.write(`val accuracy: ${pct(r.valAccuracy)} (${s.val?.y.length ?? 0} rows; ${valDesc})\n`);
    process.stdout.write(
      r.refit
        ? `selected on val (fitted on ${s.train.y.length} train rows), then refitted on train+val: ${r.refit.rows} rows${r.refit.epochs !== undefined ? `, ${r.refit.epochs} epochs (chosen on val)` : ''} in ${r.fitSeconds.toFixed(2)} s\n`
        : `trained on ${s.train.y.length} rows${flags.stream ? ' (streamed from disk)' : ''} in ${r.fitSeconds.toFixed(2)} s\n`,
    );
    process.stdout.write(`test accuracy: ${pct(r.testAccuracy)} (${s.test?.y.length ?? 0} rows)\n`);
    const saved = await saveTrainedHead(r, flags.out);
    process.stdout.write(`saved: ${saved.path} (${saved.bytes} bytes; meta ${saved.metaPath})\n`);
  },
);
