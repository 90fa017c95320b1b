import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  atInputSize,
  defaultCutLayer,
  loadKerasGraph,
  modelSource,
  DEFAULT_PREPROCESSING,
} from '../backbone/backbone.ts';
import type { WeightMap } from '../backbone/convert.ts';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { resolveModel } from '../backbone/resolve.ts';
import { readWeights } from '../backbone/tfjs-model.ts';
import { formatAugmentSpec, isAugmenting } from '../images/augment.ts';
import { Rng } from '../linalg/random.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { UserError } from '../util/errors.ts';
import { defaultDatasetDir, modelCacheDir } from '../util/paths.ts';
import {
  emptyPhase,
  loadCheckpoint,
  type Checkpoint,
  type EpochRecord,
  type PhaseName,
  type PhaseState,
} from './checkpoint.ts';
import { finetuneSplits, type FtImage, type FtSplits } from './data.ts';
import { compareCodePoints } from '../dataset/scan.ts';
import { FrozenBase } from './frozen.ts';
import { initialTopParams, planTop, resolveBoundary, type ParamTensor } from './plan.ts';
import { createTopEngine } from './engine.ts';
import { pct } from '../util/format.ts';
import {
  FINETUNE_DEFAULTS,
  finetuneInputSize,
  type FinetuneOptions,
  type FinetuneReport,
  type PhaseReport,
  type SelectionReport,
} from './options.ts';
import { hashJson, imageContentKeys, imagesKey, prepareSplit, round, type SplitData } from './prepare.ts';
import {
  type PhaseContext,
  addTopSeconds,
  evaluate,
  flipTta,
  runPhase,
  saveCk,
  toParams,
  warmStartHead,
} from './phases.ts';
import { exportAndCheck } from './export-check.ts';

/**
 * The fine-tuning recipe (fastai's fine_tune, Keras's transfer-learning guide):
 *   phase 1 "head": the whole conv base frozen, train GlobalAveragePooling2D → Dropout → Dense;
 *   phase 2 "finetune": unfreeze the top blocks (BN kept in inference mode) and train them jointly
 *   with the head at a low learning rate.
 * The frozen part runs in ONNX Runtime (frozen.ts); the trainable part in ONNX Runtime training-step
 * graphs (ort-top.ts, default) or TF.js (top.ts, `engine: 'tfjs'`), behind one interface (engine.ts).
 * Phase 1 starts from a head warmed up on clean cached features; phase 2 may keep the average of its
 * epochs' weights instead of its best epoch when val loss says so.
 * Without augmentation every image goes through ORT exactly once (boundary activations cached as
 * float16, pooled features as float32, both on disk under OUT/cache); with augmentation training
 * images are decoded once into memory and each epoch's augmented batches go through ORT.
 * Early stopping on val loss (best weights restored), a checkpoint after every epoch, and
 * `resume` continues bit-identically: all randomness derives from (seed, phase, epoch, image).
 * This file orchestrates; options.ts holds the options, defaults and report types, prepare.ts the
 * cached splits, phases.ts the training loop and evaluation, export-check.ts the export and its check.
 */
export {
  FINETUNE_DEFAULTS,
  finetuneInputSize,
  type FinetuneOptions,
  type FinetuneReport,
  type PhaseReport,
} from './options.ts';

export async function runFinetune(opts: FinetuneOptions): Promise<{ outDir: string; report: FinetuneReport }> {
  const t0 = performance.now();
  const log = opts.log;
  const outDir = resolve(opts.out);
  mkdirSync(outDir, { recursive: true });
  const dataArg = opts.data ?? defaultDatasetDir();
  if (!dataArg)
    throw new UserError(
      'no --data given, no images/ folder in the cache root, and no offline mirror with datasets/cats-vs-dogs',
    );
  if (opts.batch < 1) throw new UserError('--batch must be at least 1');
  // Both mix a batch's rows; one at a time, so each run says which one it measured.
  if ((opts.mixup ?? 0) > 0 && (opts.cutmix ?? 0) > 0)
    throw new UserError('--mixup and --cutmix cannot be combined; choose one');

  // ---- model, split, plan
  const resolved = await resolveModel(opts.model, { cacheDir: opts.modelCacheDir ?? modelCacheDir(), log });
  const notFinetunable = modelSource(resolved).notFinetunable;
  if (notFinetunable) throw new UserError(notFinetunable);
  const loaded = loadKerasGraph(resolved.location);
  const native = loaded.graph;
  const nativePre: Preprocessing = resolved.entry?.preprocessing ?? {
    ...DEFAULT_PREPROCESSING,
    size: [native.inputShape[0]!, native.inputShape[1]!],
  };
  const size = opts.inputSize ?? finetuneInputSize(nativePre.size[0]);
  const preprocessing: Preprocessing = { ...nativePre, size: [size, size] };
  const cut = resolved.entry?.defaultLayer ?? defaultCutLayer(native);
  // A larger input (e.g. 288 for a 224 model) is the same network on a larger grid; the exported model takes that size.
  const { graph, modelJson } = atInputSize(loaded, preprocessing.size, cut);
  const weights: WeightMap = await readWeights(resolved.location);
  const boundary = resolveBoundary(graph, cut, {
    unfreeze: opts.unfreezeFrom ? undefined : opts.unfreeze,
    unfreezeFrom: opts.unfreezeFrom,
  });
  const plan = planTop(graph, boundary, cut);
  const valFraction = opts.valFraction ?? FINETUNE_DEFAULTS.valFraction;
  const refit = Boolean(opts.refit);
  const dev = finetuneSplits(dataArg, opts.seed, log, valFraction);
  // Refit (GridSearchCV(refit=True)): the epoch counts were chosen on the development split's
  // validation images; the final model then learns from those images too.
  const splits = refit
    ? {
        ...dev,
        train: [...dev.train, ...dev.val].sort((a, b) => compareCodePoints(a.path, b.path)),
        val: [],
        valSource: `none: refit on train + val (the epoch counts were chosen on ${dev.valSource})`,
      }
    : dev;
  const K = splits.classes.length;
  const augmenting = isAugmenting(opts.augment);
  const finetuning = plan.ops.some((o) => o.kind === 'conv') && opts.epochsFinetune > 0;
  // The warm start is epoch 0 of phase 1, so it also runs with --epochs-head 0: a validation run whose
  // augmented head epochs never beat it reports `--epochs-head 0` with the warm start's epochs, and
  // the refit must then train that same head (not start phase 2 from a random one).
  const warmStart = augmenting && opts.warmupEpochs > 0;
  if (opts.epochsHead === 0 && finetuning && !warmStart)
    log.warn(
      '--epochs-head 0: fine-tuning starts from a random head, whose large gradients can wreck the pretrained features',
    );
  log.info(
    `finetune: ${resolved.id}, cut ${cut}, boundary ${boundary} (${plan.ops.filter((o) => o.kind === 'conv').length} trainable convs in ${plan.blocks} block(s)); ` +
      `${splits.train.length} train / ${splits.val.length} val (${splits.valSource}) / ${splits.test.length} test; augment ${formatAugmentSpec(opts.augment)}`,
  );

  const allImages = [...splits.train, ...splits.val, ...splits.test];
  const contentKeys = await imageContentKeys(allImages, join(outDir, 'cache'));
  const fingerprint = {
    model: resolved.weightsHash,
    data: imagesKey(allImages, contentKeys),
    cut,
    boundary,
    augment: formatAugmentSpec(opts.augment),
    lr: opts.lr,
    lrHead: opts.lrHead,
    lrSchedule: opts.lrSchedule ?? 'constant',
    optimizer: opts.optimizer,
    batch: opts.batch,
    seed: opts.seed,
    patience: opts.patience,
    dropout: opts.dropout,
    engine: opts.engine,
    inputSize: preprocessing.size,
    warmupEpochs: opts.warmupEpochs,
    averageEpochs: Boolean(opts.averageEpochs),
    valFraction,
    refit,
    epochs: [opts.warmupEpochs, opts.epochsHead, opts.epochsFinetune],
    // Only when set, so checkpoints made before these options existed still resume.
    ...(opts.labelSmoothing ? { labelSmoothing: opts.labelSmoothing } : {}),
    ...(opts.mixup ? { mixup: opts.mixup } : {}),
    ...(opts.cutmix ? { cutmix: opts.cutmix } : {}),
    ...(opts.lrWarmup ? { lrWarmup: opts.lrWarmup } : {}),
  };
  const ckDir = join(outDir, 'checkpoint');
  let ck: Checkpoint | undefined;
  if (opts.resume) {
    ck = loadCheckpoint(ckDir);
    if (!ck) log.info(`finetune: no checkpoint in ${ckDir}; starting from the beginning`);
    else {
      // Keys of both sides: an option recorded only when set (mixup, warm-up…) must also be refused
      // when the checkpoint has it and this run does not.
      const diff = [...new Set([...Object.keys(fingerprint), ...Object.keys(ck.fingerprint)])].filter(
        (k) => JSON.stringify((fingerprint as any)[k]) !== JSON.stringify(ck!.fingerprint[k]),
      );
      if (diff.length)
        throw new UserError(
          `--resume: the checkpoint in ${ckDir} was made with different ${diff.join(', ')}; use the same options or another --out`,
        );
      log.info(`finetune: resuming from ${ck.phase} epoch ${ck.phases[ck.phase].epoch}`);
    }
  } else if (existsSync(join(ckDir, 'state.json'))) {
    log.info(`finetune: starting over in ${outDir} (its checkpoint is replaced; pass --resume to continue it instead)`);
  }

  // ---- ORT frozen part + data
  const base = await FrozenBase.create(graph, weights, plan, preprocessing, opts.threads);
  const tPrep = performance.now();
  const cacheDir = join(outDir, 'cache');
  const skipped: { path: string; reason: string }[] = [];
  const load = async (
    name: 'train' | 'val' | 'test',
    images: FtImage[],
    want: { pooled: boolean; boundary: boolean; pixels: boolean },
  ): Promise<SplitData> =>
    prepareSplit(name, images, want, {
      base,
      preprocessing,
      opts,
      cacheDir,
      skipped,
      key: hashJson({
        fingerprint: fingerprint.model,
        cut,
        boundary,
        preprocessing,
        images: imagesKey(images, contentKeys),
        v: 2,
      }),
    });
  const train = await load('train', splits.train, {
    pooled: !augmenting || warmStart,
    boundary: !augmenting && finetuning,
    pixels: augmenting,
  });
  const val: SplitData = refit
    ? { images: [], labels: new Int32Array(0) }
    : await load('val', splits.val, { pooled: true, boundary: finetuning, pixels: false });
  // A validation run (no refit) chooses epoch counts and is compared with other validation runs:
  // it never reads the test split, so nothing chosen from it can have seen test. Refit runs (the
  // final model) are the ones scored on test.
  const test: SplitData = refit
    ? await load('test', splits.test, { pooled: true, boundary: finetuning, pixels: false })
    : { images: [], labels: new Int32Array(0) };
  const prepSeconds = (performance.now() - tPrep) / 1000;
  const prepOrt = base.seconds;
  if (train.images.length === 0) throw new UserError('no usable training images');

  // ---- trainable part
  const topParams = initialTopParams(plan, graph, weights);
  const C = plan.outShape[2];
  const names = [...topParams.map((p) => p.name), 'head/kernel', 'head/bias'];
  const initRng = new Rng(opts.seed);
  const lim = Math.sqrt(6 / (C + K));
  const headKernel = Float32Array.from({ length: C * K }, () => (initRng.next() * 2 - 1) * lim);
  const initial: ParamTensor[] = [
    ...topParams,
    { name: 'head/kernel', shape: [C, K], data: headKernel },
    { name: 'head/bias', shape: [K], data: new Float32Array(K) },
  ];
  const shapes = initial.map((p) => [...p.shape]);
  const top = await createTopEngine(opts.engine, plan, initial, K, { threads: opts.threads });
  const phases: Record<PhaseName, PhaseState> = ck?.phases ?? { head: emptyPhase(), finetune: emptyPhase() };
  const history: EpochRecord[] = ck?.history ?? [];
  let bestParams: Float32Array[] | null = null;
  if (ck) {
    top.setValues(ck.params.map((d, i) => ({ name: names[i]!, shape: initial[i]!.shape, data: d })));
    bestParams = ck.best;
    const from = ck.phase === 'head' ? top.headIndex : 0;
    top.setOptimizerState({ step: ck.optimizerStep, m: ck.m, v: ck.v }, from);
  }
  let phase: PhaseName = ck?.phase ?? 'head';
  const ctx: PhaseContext = {
    top,
    shapes,
    base,
    plan,
    opts,
    train,
    val,
    names,
    augmenting,
    preprocessing,
    fingerprint,
    ckDir,
    phases,
    history,
    avgSum: ck?.avgSum ?? null,
    refit,
  };

  try {
    if (phase === 'head') {
      if (warmStart && !ck) {
        // Epoch 0 of phase 1: the head fitted on clean features; augmented epochs must beat it on val loss.
        phases.head.warmStart = await warmStartHead(ctx);
        const w = phases.head.warmStart;
        if (w.valLoss !== null && w.valAccuracy !== null) {
          phases.head.best = { valLoss: w.valLoss, valAccuracy: w.valAccuracy, epoch: 0 };
          bestParams = top.values(names).map((p) => p.data);
        }
        phases.head.timings.seconds += w.seconds;
        addTopSeconds(phases.head.timings, w.seconds, top.name);
        top.resetOptimizer();
      }
      if (!phases.head.done) bestParams = await runPhase(ctx, 'head', bestParams);
      else if (bestParams) top.setValues(toParams(bestParams, shapes, names));
      // The frozen-base model's test accuracy, for the report's comparison rows only.
      if (test.images.length > 0 && (phases.head.epoch > 0 || phases.head.warmStart))
        phases.head.testAccuracy = round((await evaluate(ctx, test, false)).accuracy, 4);
      phase = 'finetune';
      top.resetOptimizer();
      bestParams = null;
      if (finetuning && !refit) {
        // Phase 2 must beat where it starts: the frozen-base model is epoch 0 of its early stopping,
        // so fine-tuning that never improves val loss leaves the phase-1 model in place.
        const t = performance.now();
        const start = await evaluate(ctx, val, true);
        const sec = (performance.now() - t) / 1000;
        phases.finetune.timings.seconds += sec;
        addTopSeconds(phases.finetune.timings, sec, top.name);
        phases.finetune.best = { valLoss: start.loss, valAccuracy: start.accuracy, epoch: 0 };
        bestParams = top.values(names).map((p) => p.data);
        saveCk(ctx, 'finetune', bestParams);
      }
    }
    if (finetuning && !phases.finetune.done) await runPhase(ctx, 'finetune', bestParams);
    else if (finetuning && bestParams) top.setValues(toParams(bestParams, shapes, names));

    // ---- final evaluation, export
    const tEval = performance.now();
    const baseSecondsBeforeEval = base.seconds;
    const useTop = finetuning && phases.finetune.epoch > 0;
    const tTf0 = performance.now();
    const v = refit ? null : await evaluate(ctx, val, useTop);
    const te = test.images.length > 0 ? await evaluate(ctx, test, useTop) : null;
    let evalTop = (performance.now() - tTf0) / 1000;
    // Flip TTA on the split this run reports: val in a validation run (where it can be chosen), test in a refit.
    let tta: { loss: number; accuracy: number } | null = null;
    const ttaOn = v ? { split: val, probs: v.probs } : te ? { split: test, probs: te.probs } : null;
    if (opts.tta && ttaOn) {
      const o0 = base.seconds;
      const t1 = performance.now();
      tta = await flipTta(ctx, ttaOn.split, ttaOn.probs, useTop);
      evalTop += (performance.now() - t1) / 1000 - (base.seconds - o0);
      log.info(
        `finetune: ${v ? 'val' : 'test'} with flip TTA: loss ${tta.loss.toFixed(4)}, accuracy ${pct(tta.accuracy)}${v ? ` (without: loss ${v.loss.toFixed(4)}, accuracy ${pct(v.accuracy)})` : ''}`,
      );
    }
    log.info(
      `finetune: ${v ? `val loss ${v.loss.toFixed(4)}, val accuracy ${pct(v.accuracy)} (${val.images.length} images; validation run: the test split is not read)` : 'refit (no val)'}${te ? `, test accuracy ${pct(te.accuracy)} (${test.images.length} images)` : ''}`,
    );
    const params = top.values(names);
    const exported = await exportAndCheck(outDir, {
      modelJson,
      graph,
      weights,
      plan,
      params,
      dropout: opts.dropout,
      preprocessing,
      base,
      top,
      // The export check needs a few images the model was not necessarily trained on; when
      // refitting every non-test image was trained on, which is fine for a numerical check.
      check: refit ? train : val,
      opts,
    });
    const evalSeconds = (performance.now() - tEval) / 1000;
    const phaseReport = (p: PhaseName): PhaseReport => {
      const s = phases[p];
      return {
        epochsRun: s.epoch,
        bestEpoch: s.best?.epoch ?? null,
        bestValAccuracy: s.best ? round(s.best.valAccuracy, 4) : null,
        bestValLoss: s.best ? round(s.best.valLoss, 5) : null,
        stoppedEarly: s.done && s.epoch < (p === 'head' ? opts.epochsHead : opts.epochsFinetune),
        seconds: round(s.timings.seconds),
        ortSeconds: round(s.timings.ortSeconds),
        tfjsSeconds: round(s.timings.tfjsSeconds),
        augmentSeconds: round(s.timings.augmentSeconds),
        baseSeconds: round(s.timings.baseSeconds ?? 0),
        topSeconds: round(s.timings.topSeconds ?? 0),
        learningRate: p === 'head' ? opts.lrHead : opts.lr,
        trainable: p === 'head' ? 'head' : `${plan.layers[0]} … ${plan.cut} + head`,
        testAccuracy: p === 'head' ? (s.testAccuracy ?? null) : useTop && te ? round(te.accuracy, 4) : null,
        ...(p === 'head' ? { warmStart: s.warmStart ?? null } : { averaged: s.averaged ?? null }),
      };
    };
    const report: FinetuneReport = {
      formatVersion: 1,
      model: { id: resolved.id, source: resolved.source, weightsHash: resolved.weightsHash },
      classes: splits.classes,
      preprocessing: {
        ...preprocessing,
        input: 'uint8 RGB pixels NHWC, scaled in-graph: (x/255 - mean)/std',
        decode:
          'any format by content, EXIF orientation applied, sRGB, alpha dropped, resized per `resize`/`kernel` (same as extract)',
      },
      data: {
        root: splits.root,
        valSource: splits.valSource,
        counts: { train: train.images.length, val: val.images.length, test: test.images.length },
        skipped,
      },
      network: {
        cut,
        boundary,
        unfreeze: plan.blocks,
        trainableLayers: plan.layers,
        batchNorm:
          'inference mode with the pretrained moving statistics: each BN is folded into the preceding conv while training (trainable: folded kernel + bias ≡ kernel + beta), unfolded on export (moving mean/variance and gamma unchanged)',
        head: `GlobalAveragePooling2D → Dropout(${opts.dropout}) → Dense(${K}, softmax)`,
      },
      options: {
        augment: formatAugmentSpec(opts.augment),
        epochsHead: opts.epochsHead,
        epochsFinetune: opts.epochsFinetune,
        lr: opts.lr,
        lrHead: opts.lrHead,
        lrSchedule: opts.lrSchedule ?? 'constant',
        lrWarmup: opts.lrWarmup ?? 0,
        optimizer: opts.optimizer,
        batch: opts.batch,
        seed: opts.seed,
        patience: opts.patience,
        dropout: opts.dropout,
        engine: opts.engine,
        inputSize: preprocessing.size[0],
        warmupEpochs: warmStart ? opts.warmupEpochs : 0,
        averageEpochs: Boolean(opts.averageEpochs),
        labelSmoothing: opts.labelSmoothing ?? 0,
        mixup: opts.mixup ?? 0,
        cutmix: opts.cutmix ?? 0,
        refit,
      },
      valAccuracy: v ? round(v.accuracy, 4) : null,
      valLoss: v ? round(v.loss, 5) : null,
      selection: selectionReport(opts, refit, dev, phases),
      testAccuracy: te ? round(te.accuracy, 4) : null,
      testLoss: te ? round(te.loss, 5) : null,
      testAccuracyFlipTTA: tta && !v ? round(tta.accuracy, 4) : null,
      valFlipTTA: tta && v ? { loss: round(tta.loss, 5), accuracy: round(tta.accuracy, 4) } : null,
      phases: { head: phaseReport('head'), finetune: phaseReport('finetune') },
      prepare: { seconds: round(prepSeconds), ortSeconds: round(prepOrt) },
      totalSeconds: 0,
      ortSeconds: round(
        prepOrt +
          phases.head.timings.ortSeconds +
          phases.finetune.timings.ortSeconds +
          (base.seconds - baseSecondsBeforeEval) +
          exported.ortSeconds +
          (top.name === 'ort' ? evalTop : 0),
      ),
      topEngine: top.name,
      tfjsSeconds: round(
        phases.head.timings.tfjsSeconds + phases.finetune.timings.tfjsSeconds + (top.name === 'tfjs' ? evalTop : 0),
      ),
      history,
      export: {
        tfjs: 'model/',
        onnx: 'model.onnx',
        outputLayer: exported.outputLayer,
        checkImages: exported.checkImages,
        checkMaxAbsDiff: exported.maxAbsDiff,
      },
      resumed: ck !== undefined,
    };
    const setupSeconds = (tPrep - t0) / 1000;
    report.totalSeconds = round(
      setupSeconds + prepSeconds + phases.head.timings.seconds + phases.finetune.timings.seconds + evalSeconds,
    );
    writeFileAtomic(join(outDir, 'finetune.json'), JSON.stringify(report, null, 2) + '\n');
    return { outDir, report };
  } finally {
    await top.dispose();
    await base.release();
  }
}

/**
 * How the epoch counts were chosen. A validation run reports the epochs its early stopping picked
 * and the refit command that uses them; a refit run records the counts it trained for and that
 * they come from such a run on the development split (never from the test split).
 */
function selectionReport(
  opts: FinetuneOptions,
  refit: boolean,
  dev: FtSplits,
  phases: Record<PhaseName, PhaseState>,
): SelectionReport {
  const devSplit = `${dev.train.length} train / ${dev.val.length} val (${dev.valSource})`;
  if (refit) {
    const run = opts.validationRun;
    return {
      mode: 'refit',
      trainedOn: `train + val: ${dev.train.length + dev.val.length} images, no early stopping`,
      epochs: { warmup: opts.warmupEpochs, head: opts.epochsHead, finetune: opts.epochsFinetune },
      averageEpochs: Boolean(opts.averageEpochs),
      chosenOn: run
        ? `the validation run in ${run.dir} on the development split ${devSplit} (val loss ${run.valLoss ?? 'n/a'}, val accuracy ${run.valAccuracy ?? 'n/a'})`
        : `a validation run (--no-refit) on the development split ${devSplit}`,
      ...(run ? { validationRun: run } : {}),
    };
  }
  const warmup = phases.head.warmStart?.bestEpoch ?? 0;
  const head = phases.head.best?.epoch ?? phases.head.epoch;
  // Phase 2's model is either the average of all its epochs (when val loss chose it) or its best epoch.
  const averaged = phases.finetune.averaged?.chosen === true;
  const finetune = averaged ? phases.finetune.averaged!.epochs : (phases.finetune.best?.epoch ?? phases.finetune.epoch);
  return {
    mode: 'validation',
    trainedOn: `${devSplit}; epochs chosen by validation loss`,
    epochs: { warmup, head, finetune },
    averageEpochs: averaged,
    chosenOn: devSplit,
    refitArgs: `--refit --warmup-epochs ${warmup} --epochs-head ${head} --epochs-finetune ${finetune}${averaged ? '' : ' --no-average-epochs'}`,
  };
}
