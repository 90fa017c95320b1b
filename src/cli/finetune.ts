import { join } from 'node:path';
import { cacheRootFlag, decodeFlags, defineCommand, onInterrupt } from './command.ts';
import {
  batchSize,
  intInRange,
  maxPixels,
  oneOf,
  optionalInt,
  positive,
  rate,
  seed,
  threads,
  valFraction,
  workers,
} from './validate.ts';
import { consoleLogger } from '../util/log.ts';
import { cacheRoot } from '../util/paths.ts';
import { DEFAULT_MODEL } from '../backbone/registry.ts';
import { parseAugmentSpec } from '../images/augment.ts';
import { FINETUNE_DEFAULTS, runFinetune, type FinetuneOptions, type FinetuneReport } from '../finetune/recipe.ts';
import { selectThenRefit } from '../finetune/select.ts';
import { LR_SCHEDULES, VALIDATION_MAXIMA } from '../finetune/options.ts';
import { parseEngine } from '../finetune/engine.ts';
import { UserError } from '../util/errors.ts';

const D = FINETUNE_DEFAULTS;
const M = VALIDATION_MAXIMA;

/**
 * An epoch count: the one given, else the refit's default (the counts chosen on the default data) or,
 * for a validation run (--no-refit, --select's first run), the maximum it searches up to.
 */
function epochCount(
  flag: 'warmup-epochs' | 'epochs-head' | 'epochs-finetune',
  v: unknown,
  key: keyof typeof VALIDATION_MAXIMA,
  validating: boolean,
): number {
  return v === undefined ? (validating ? M : D)[key] : intInRange(flag, v, 0, 10000);
}

/** --mixup / --cutmix: Beta(α, α)'s α, ≥ 0 (0 = off). */
function mixAlpha(flag: 'mixup' | 'cutmix', v: unknown): number {
  if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v))
    throw new UserError(`--${flag} must be a number >= 0 (0 = off), got '${String(v)}'`);
  return v;
}

function lrWarmup(v: unknown, epochsFinetune: unknown): number {
  if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v))
    throw new UserError(`--lr-warmup must be a number of epochs >= 0 (0 = off), got '${String(v)}'`);
  if (typeof epochsFinetune === 'number' && epochsFinetune > 0 && v > epochsFinetune)
    throw new UserError(`--lr-warmup ${v} is longer than phase 2 (--epochs-finetune ${epochsFinetune})`);
  return v;
}

export const command = defineCommand(
  {
    name: 'finetune',
    summary:
      'train a dense head on the frozen conv base (with augmentation), then fine-tune the top conv blocks at a low learning rate',
    usage:
      'convcache finetune [--data DIR] [--augment SPEC] [--unfreeze N | --unfreeze-from LAYER] [--epochs-head N --epochs-finetune N --lr F] [--out DIR] [--resume]',
    flags: {
      data: {
        type: 'string',
        metavar: 'DIR',
        description:
          "data root with class folders (or train/val/test folders); default <cache root>/images/, else the mirror's cats-vs-dogs",
      },
      model: {
        type: 'string',
        metavar: 'MODEL',
        description: 'known name, model folder, model.json, or URL (TF.js layers)',
        default: DEFAULT_MODEL,
      },
      augment: {
        type: 'string',
        metavar: 'SPEC',
        description:
          "training-image augmentation, e.g. flip,rotate=15,zoom=0.1,shift=0.1,brightness=0.2,contrast=0.2 ('none' to cache the base once)",
        default: D.augment,
      },
      unfreeze: {
        type: 'number',
        metavar: 'N',
        description: 'top conv blocks to train in phase 2 (0 = head only)',
        default: D.unfreeze,
      },
      'unfreeze-from': {
        type: 'string',
        metavar: 'LAYER',
        description: 'first trainable layer (instead of --unfreeze)',
      },
      'epochs-head': {
        type: 'number',
        metavar: 'N',
        description: `phase 1: augmented head epochs, base frozen (default: ${D.epochsHead} for a refit; a validation run's maximum: ${M.epochsHead})`,
      },
      'epochs-finetune': {
        type: 'number',
        metavar: 'N',
        description: `phase 2 epochs, top blocks + head (default: ${D.epochsFinetune} for a refit; a validation run's maximum: ${M.epochsFinetune})`,
      },
      lr: { type: 'number', metavar: 'F', description: 'phase 2 learning rate', default: D.lr },
      'lr-head': { type: 'number', metavar: 'F', description: 'phase 1 learning rate', default: D.lrHead },
      'lr-schedule': {
        type: 'string',
        metavar: 'NAME',
        description: 'phase 2 learning rate over its epochs: constant | cosine (decay to 0)',
        default: D.lrSchedule,
      },
      'lr-warmup': {
        type: 'number',
        metavar: 'EPOCHS',
        description:
          'phase 2: linear learning-rate warm-up over the first EPOCHS epochs (fractions allowed), then the schedule (0 = off)',
        default: D.lrWarmup,
      },
      optimizer: { type: 'string', metavar: 'NAME', description: 'adam | rmsprop', default: D.optimizer },
      batch: { type: 'number', metavar: 'N', description: 'minibatch size', default: D.batch },
      patience: {
        type: 'number',
        metavar: 'N',
        description: 'early stopping: epochs without val-loss improvement',
        default: D.patience,
      },
      dropout: { type: 'number', metavar: 'F', description: 'dropout rate before the dense layer', default: D.dropout },
      'label-smoothing': {
        type: 'number',
        metavar: 'F',
        description: 'phase 2: label smoothing (0 = off)',
        default: D.labelSmoothing,
      },
      mixup: {
        type: 'number',
        metavar: 'A',
        description:
          "phase 2: mixup α, the trainable top's inputs (boundary activations) and targets mixed in each batch, λ ~ Beta(α, α) (0 = off)",
        default: D.mixup,
      },
      cutmix: {
        type: 'number',
        metavar: 'A',
        description:
          "phase 2: CutMix α, a box of each training photo replaced by another photo's in the batch, targets weighted by area, λ ~ Beta(α, α) (0 = off)",
        default: D.cutmix,
      },
      'warmup-epochs': {
        type: 'number',
        metavar: 'N',
        description: `with --augment: head epochs on clean cached features before the augmented ones, 0 = off (default: ${D.warmupEpochs} for a refit; a validation run's maximum: ${M.warmupEpochs})`,
      },
      'val-fraction': {
        type: 'number',
        metavar: 'F',
        description:
          'share of train held out for validation (early stopping, phase choice) when the data has no val/ folder',
        default: D.valFraction,
      },
      refit: {
        type: 'boolean',
        description:
          'train the final model on train + val for exactly the given epoch counts (chosen on validation by a --no-refit run) and score it on test; --no-refit: a validation run that holds out val, early-stops on it and reports the epochs it chose (it never reads the test split)',
        default: D.refit,
      },
      select: {
        type: 'boolean',
        description:
          'choose the epoch counts on validation, then refit with them, in one command (GridSearchCV(refit=True)): a --no-refit run in OUT/validation (the epoch options are its maxima), then the refit on train + val scored on test; about twice the time',
      },
      'average-epochs': {
        type: 'boolean',
        description:
          "phase 2: also try the average of the epochs' weights, kept when its val loss is lower; with --refit, the model is that average (use it when the validation run chose it) (--no-average-epochs: off)",
        default: D.averageEpochs,
      },
      'input-size': {
        type: 'number',
        metavar: 'N',
        description:
          "square input size in pixels (default 1.3× the model's own, rounded to 32: 288 for a 224 model); conv bases accept any size",
      },
      engine: {
        type: 'string',
        metavar: 'NAME',
        description: 'where the trainable top trains: ort (ONNX Runtime, fast) | tfjs (TF.js wasm, the reference)',
        default: D.engine,
      },
      seed: {
        type: 'number',
        metavar: 'N',
        description: 'seed for the val split, shuffling, dropout, augmentation and initialisation',
        default: D.seed,
      },
      out: { type: 'string', metavar: 'DIR', description: 'output folder (default <cache root>/finetune/<model>)' },
      'cache-root': cacheRootFlag,
      resume: { type: 'boolean', description: 'continue from the last checkpoint in --out' },
      ...decodeFlags,
      tta: {
        type: 'boolean',
        description:
          'also report horizontal-flip test-time augmentation (on val with --no-refit, on test with --refit)',
      },
      quiet: { type: 'boolean', description: 'no progress output' },
    },
  },
  async ({ flags }) => {
    // Every finished epoch is checkpointed (atomically) in --out (and --select's validation run in its own).
    onInterrupt(
      'finetune: interrupted; finished epochs are checkpointed, re-run the same command with --resume to continue',
    );
    const validating = flags.select === true || flags.refit === false;
    const epochsFinetune = epochCount('epochs-finetune', flags['epochs-finetune'], 'epochsFinetune', validating);
    const model = flags.model;
    const engine = parseEngine(flags.engine);
    const options: FinetuneOptions = {
      data: flags.data,
      model,
      augment: parseAugmentSpec(flags.augment),
      unfreeze: intInRange('unfreeze', flags.unfreeze, 0, 1000),
      unfreezeFrom: flags['unfreeze-from'],
      epochsHead: epochCount('epochs-head', flags['epochs-head'], 'epochsHead', validating),
      epochsFinetune,
      lr: positive('lr', flags.lr),
      lrHead: positive('lr-head', flags['lr-head']),
      lrSchedule: oneOf('lr-schedule', flags['lr-schedule'], LR_SCHEDULES),
      lrWarmup: lrWarmup(flags['lr-warmup'], epochsFinetune),
      optimizer: oneOf('optimizer', flags.optimizer, ['adam', 'rmsprop'] as const),
      batch: batchSize(flags.batch, 4096),
      patience: intInRange('patience', flags.patience, 1, 10000),
      dropout: rate('dropout', flags.dropout),
      labelSmoothing: rate('label-smoothing', flags['label-smoothing']),
      mixup: mixAlpha('mixup', flags.mixup),
      cutmix: mixAlpha('cutmix', flags.cutmix),
      engine,
      valFraction: valFraction(flags['val-fraction'], false),
      averageEpochs: flags['average-epochs'],
      refit: flags.refit,
      warmupEpochs: epochCount('warmup-epochs', flags['warmup-epochs'], 'warmupEpochs', validating),
      inputSize: optionalInt('input-size', flags['input-size'], 32, 1024),
      seed: seed(flags.seed),
      out: flags.out ?? join(cacheRoot(flags['cache-root']), 'finetune', model.replace(/[^A-Za-z0-9._-]+/g, '_')),
      resume: flags.resume,
      workers: workers(flags.workers),
      threads: threads(flags.threads),
      maxPixels: maxPixels(flags['max-pixels']),
      quiet: flags.quiet,
      tta: flags.tta,
      log: consoleLogger(flags.quiet),
    };
    const f = (x: number | null): string => (x === null ? 'n/a' : `${(x * 100).toFixed(2)}%`);
    const valScores = (r: FinetuneReport): string =>
      `val loss ${r.valLoss?.toFixed(4) ?? 'n/a'}, val accuracy ${f(r.valAccuracy)} (${r.data.counts.val} images)`;
    let validationLine: string[] = [];
    let result: { report: FinetuneReport; outDir: string };
    if (flags.select) {
      const r = await selectThenRefit(options);
      const v = r.validation.report;
      validationLine = [
        `validation run (${r.validation.outDir}): ${valScores(v)}, ${v.totalSeconds.toFixed(0)} s; it chose ${v.selection.refitArgs ?? ''}`,
      ];
      result = r;
    } else result = await runFinetune(options);
    const { report, outDir } = result;
    const p = report.phases;
    const engineLabel = report.topEngine === 'ort' ? 'ORT' : 'TF.js';
    process.stdout.write(
      [
        ...validationLine,
        `${
          report.selection.mode === 'validation'
            ? `validation run: ${valScores(report)}${report.valFlipTTA ? ` (flip TTA: loss ${report.valFlipTTA.loss.toFixed(4)}, accuracy ${f(report.valFlipTTA.accuracy)})` : ''} · test split not read (the refit is scored on test)`
            : `test accuracy ${f(report.testAccuracy)}${report.testAccuracyFlipTTA !== null ? ` (flip TTA ${f(report.testAccuracyFlipTTA)})` : ''} · frozen base + head: test ${f(report.phases.head.testAccuracy)}`
        } · ${report.totalSeconds.toFixed(0)} s (ORT ${report.ortSeconds.toFixed(0)} s, TF.js ${report.tfjsSeconds.toFixed(0)} s)`,
        ...(['head', 'finetune'] as const).map(
          (k) =>
            `  ${(k + ':').padEnd(9)} ${p[k].epochsRun} epochs, best val ${f(p[k].bestValAccuracy)}, frozen base ${p[k].baseSeconds.toFixed(1)} s (ORT), trainable ${k === 'head' ? 'head' : 'top'} ${p[k].topSeconds.toFixed(1)} s (${engineLabel}), augment ${p[k].augmentSeconds.toFixed(1)} s`,
        ),
        `  prepare (decode + ORT once): ${report.prepare.seconds.toFixed(1)} s (ORT ${report.prepare.ortSeconds.toFixed(1)} s)`,
        `  epochs ${report.selection.mode === 'refit' ? 'trained (refit on train + val, chosen on validation beforehand)' : 'chosen on validation'}: warm start ${report.selection.epochs.warmup}, head ${report.selection.epochs.head}, finetune ${report.selection.epochs.finetune}${report.selection.refitArgs ? ` — refit: the same options plus ${report.selection.refitArgs}` : ''}`,
        `model: ${join(outDir, 'model')} (TF.js layers), ${join(outDir, 'model.onnx')}; report: ${join(outDir, 'finetune.json')}`,
      ].join('\n') + '\n',
    );
  },
);
