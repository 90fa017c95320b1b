import { cpus, loadavg, tmpdir } from 'node:os';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_MODEL } from '../backbone/registry.ts';
import { parseAugmentSpec } from '../images/augment.ts';
import { DEFAULT_MAX_PIXELS } from '../images/decode.ts';
import { FINETUNE_DEFAULTS, finetuneInputSize, runFinetune, type FinetuneReport } from '../finetune/recipe.ts';
import { UserError } from '../util/errors.ts';
import { defaultDatasetDir } from '../util/paths.ts';
import { extractFeatures } from '../pipeline/extract.ts';
import { compareHeads, DEFAULT_SELECTION_CV } from '../pipeline/compare.ts';
import { tfBackendInfo } from '../util/tf.ts';
import { createTopEngine, ENGINES, type EngineName } from '../finetune/engine.ts';
import { atInputSize, defaultCutLayer, loadKerasGraph } from '../backbone/backbone.ts';
import { resolveModel } from '../backbone/resolve.ts';
import { readWeights } from '../backbone/tfjs-model.ts';
import { initialTopParams, planTop, resolveBoundary } from '../finetune/plan.ts';
import { Rng } from '../linalg/random.ts';
import { silentLogger, type Logger } from '../util/log.ts';
import { cacheRoot, modelCacheDir } from '../util/paths.ts';
import { DEFAULT_SPLIT } from '../dataset/split.ts';
import { pct } from '../util/format.ts';

export interface FinetuneBenchOptions {
  data?: string;
  engine: EngineName;
  log: Logger;
}

/** Issue 12's target for the fine-tuned model on the 1000 test images. */
export const TARGET_ACCURACY = 0.99;
export const TARGET_SECONDS = 15 * 60;

/**
 * The fast path as `convcache start` runs it on the same data (features extracted once — reused when
 * cached — then every head compared, the head chosen by 5-fold CV on train+val and refitted on all
 * 2000 training photos): the chosen head's test accuracy is what fine-tuning has to beat (both train
 * on all 2000 training photos: fine-tuning by its default refit). The choice never looks at test;
 * the best head by test is recorded beside it only as a reference (it flatters the fast path).
 */
async function fastPathChosen(
  data: string,
  log: Logger,
): Promise<{
  head: string;
  chosenBy: string;
  cvAccuracy: number | null;
  testAccuracy: number;
  bestByTest: { head: string; testAccuracy: number };
  inputSize: number;
}> {
  const { cacheDir, manifest } = await extractFeatures({
    data,
    model: DEFAULT_MODEL,
    split: DEFAULT_SPLIT,
    seed: 42,
    batch: 32,
    workers: cpus().length,
    threads: cpus().length,
    maxPixels: DEFAULT_MAX_PIXELS,
    quiet: true,
    log,
  });
  const out = mkdtempSync(join(tmpdir(), 'convcache-bench-fastpath-'));
  try {
    const { report } = await compareHeads({
      cache: cacheDir,
      out,
      cv: DEFAULT_SELECTION_CV,
      saveHeads: 'none',
      extraRowsFile: null,
      log: silentLogger,
    });
    const chosen = report.heads.find((h) => h.name === report.chosen);
    if (!chosen || chosen.testAccuracy === null)
      throw new UserError('fast path: no head was chosen or it has no test accuracy');
    const best = report.heads
      .filter((r) => r.source === 'compare' && r.testAccuracy !== null)
      .sort((a, b) => b.testAccuracy! - a.testAccuracy!)[0]!;
    return {
      head: chosen.name,
      chosenBy: `${DEFAULT_SELECTION_CV}-fold CV on train+val (as convcache start), never test`,
      cvAccuracy: report.selection?.ranking.find((r) => r.name === report.chosen)?.score ?? null,
      testAccuracy: chosen.testAccuracy,
      bestByTest: { head: best.name, testAccuracy: best.testAccuracy! },
      inputSize: manifest.backbone.preprocessing.size[0],
    };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/**
 * Milliseconds per training step of the trainable top, ORT engine vs TF.js engine, on the same
 * plan and batch (random post-ReLU activations; the step's cost does not depend on their values).
 * This is the measurement behind the ORT default: TF.js's wasm backend runs one thread.
 */
export async function benchTrainStep(opts: { steps: number; log?: Logger }): Promise<Record<string, unknown>[]> {
  const resolved = await resolveModel(DEFAULT_MODEL, { cacheDir: modelCacheDir(), log: silentLogger });
  const loaded = loadKerasGraph(resolved.location);
  const cut = resolved.entry?.defaultLayer ?? defaultCutLayer(loaded.graph);
  // The fine-tuning default: batch and input size of `convcache finetune`.
  const inputSize = finetuneInputSize(loaded.graph.inputShape[0]!);
  const { graph } = atInputSize(loaded, [inputSize, inputSize], cut);
  const weights = await readWeights(resolved.location);
  const B = FINETUNE_DEFAULTS.batch;
  const rng = new Rng(1);
  const rows: Record<string, unknown>[] = [];
  for (const unfreeze of [1, 2, 4]) {
    const plan = planTop(graph, resolveBoundary(graph, cut, { unfreeze }), cut);
    const C = plan.outShape[2];
    const params = [
      ...initialTopParams(plan, graph, weights),
      { name: 'head/kernel', shape: [C, 2], data: Float32Array.from({ length: C * 2 }, () => rng.next() * 0.1 - 0.05) },
      { name: 'head/bias', shape: [2], data: new Float32Array(2) },
    ];
    const x = Float32Array.from({ length: B * plan.inShape.reduce((a, b) => a * b, 1) }, () =>
      Math.max(0, rng.next() * 4 - 2),
    );
    const labels = Int32Array.from({ length: B }, (_, i) => i % 2);
    const mask = Float32Array.from({ length: B * C }, () => (rng.next() < 0.8 ? 1.25 : 0));
    const row: Record<string, unknown> = { unfreeze, inputSize, boundary: plan.boundary, batch: B };
    for (const name of ENGINES) {
      const engine = await createTopEngine(name, plan, params, 2, { threads: cpus().length });
      try {
        await engine.trainStep(x, B, labels, mask, { kind: 'adam', lr: 1e-5 }, true); // warm-up: graph build / kernel selection
        const t = performance.now();
        for (let i = 0; i < opts.steps; i++)
          await engine.trainStep(x, B, labels, mask, { kind: 'adam', lr: 1e-5 }, true);
        row[`${name}MsPerStep`] = Math.round((performance.now() - t) / opts.steps);
      } finally {
        await engine.dispose();
      }
    }
    row.ortSpeedup = Math.round(((row.tfjsMsPerStep as number) / (row.ortMsPerStep as number)) * 10) / 10;
    opts.log?.info(`train step, top ${unfreeze} block(s): ORT ${row.ortMsPerStep} ms, TF.js ${row.tfjsMsPerStep} ms`);
    rows.push(row);
  }
  return rows;
}

/**
 * The whole recipe with its defaults on cats-vs-dogs (refit: all 2000 training photos for the epoch
 * counts chosen on the 1500/500 development split; 1000 test, looked at once): wall time, ORT vs TF.js seconds per phase, test accuracy against the fast path's best.
 * Runs from scratch in a temporary folder (no cache reuse), so the time is what a user waits.
 */
export async function benchFinetune(opts: FinetuneBenchOptions): Promise<Record<string, unknown>> {
  const data = opts.data ?? defaultDatasetDir();
  if (!data) throw new UserError('no dataset found for the benchmark (give --data)');
  const fastPath = await fastPathChosen(data, opts.log);
  opts.log.info(
    `fast path on the same split: ${fastPath.head} chosen by CV, test ${pct(fastPath.testAccuracy)} (best by test, for reference: ${fastPath.bestByTest.head} ${pct(fastPath.bestByTest.testAccuracy)})`,
  );
  const load0 = loadavg()[0];
  const trainStep = await benchTrainStep({ steps: 3, log: opts.log });
  const out = mkdtempSync(join(tmpdir(), 'convcache-bench-finetune-'));
  const t0 = performance.now();
  let report: FinetuneReport;
  try {
    ({ report } = await runFinetune({
      data,
      model: DEFAULT_MODEL,
      augment: parseAugmentSpec(FINETUNE_DEFAULTS.augment),
      unfreeze: FINETUNE_DEFAULTS.unfreeze,
      epochsHead: FINETUNE_DEFAULTS.epochsHead,
      epochsFinetune: FINETUNE_DEFAULTS.epochsFinetune,
      lr: FINETUNE_DEFAULTS.lr,
      lrHead: FINETUNE_DEFAULTS.lrHead,
      lrSchedule: FINETUNE_DEFAULTS.lrSchedule,
      lrWarmup: FINETUNE_DEFAULTS.lrWarmup,
      optimizer: FINETUNE_DEFAULTS.optimizer,
      batch: FINETUNE_DEFAULTS.batch,
      seed: FINETUNE_DEFAULTS.seed,
      patience: FINETUNE_DEFAULTS.patience,
      dropout: FINETUNE_DEFAULTS.dropout,
      engine: opts.engine,
      warmupEpochs: FINETUNE_DEFAULTS.warmupEpochs,
      averageEpochs: FINETUNE_DEFAULTS.averageEpochs,
      valFraction: FINETUNE_DEFAULTS.valFraction,
      refit: FINETUNE_DEFAULTS.refit,
      out,
      resume: false,
      threads: cpus().length,
      workers: 4,
      maxPixels: DEFAULT_MAX_PIXELS,
      quiet: false,
      tta: true,
      log: opts.log,
    }));
    // Keep the benchmarked model where `convcache compare` finds fine-tuning results (its report rows).
    const keep = join(cacheRoot(), 'finetune', `bench-${opts.engine}`);
    rmSync(keep, { recursive: true, force: true });
    cpSync(out, keep, {
      recursive: true,
      filter: (src) => !src.includes(`${join(out, 'checkpoint')}`) && !src.includes(`${join(out, 'cache')}`),
    });
    opts.log.info(`bench: fine-tuned model kept in ${keep}`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
  const wall = (performance.now() - t0) / 1000;
  const perPhase = (p: 'head' | 'finetune'): Record<string, unknown> => {
    const r = report.phases[p];
    const trainEpochs = r.epochsRun || 1;
    return {
      epochsRun: r.epochsRun,
      bestEpoch: r.bestEpoch,
      bestValAccuracy: r.bestValAccuracy,
      testAccuracy: r.testAccuracy,
      seconds: r.seconds,
      ortSeconds: r.ortSeconds,
      tfjsSeconds: r.tfjsSeconds,
      augmentSeconds: r.augmentSeconds,
      frozenBaseSeconds: r.baseSeconds,
      trainableTopSeconds: r.topSeconds,
      topSecondsPerEpoch: Math.round((r.topSeconds / trainEpochs) * 10) / 10,
      ...(p === 'head' ? { warmStart: r.warmStart ?? null } : { averaged: r.averaged ?? null }),
      secondsPerEpoch: Math.round((r.seconds / trainEpochs) * 10) / 10,
      ortSecondsPerEpoch: Math.round((r.ortSeconds / trainEpochs) * 10) / 10,
      tfjsSecondsPerEpoch: Math.round((r.tfjsSeconds / trainEpochs) * 10) / 10,
    };
  };
  return {
    benchmark: 'finetune',
    date: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      node: process.version,
      loadAverage1mAtStart: Math.round(load0 * 100) / 100,
      loadAverage1mAtEnd: Math.round(loadavg()[0] * 100) / 100,
    },
    tfjsBackend: tfBackendInfo(),
    dataset: data,
    counts: report.data.counts,
    selection: report.selection,
    recipe: {
      ...report.options,
      boundary: report.network.boundary,
      cut: report.network.cut,
      trainableLayers: report.network.trainableLayers.length,
    },
    wallSeconds: Math.round(wall * 10) / 10,
    totalSeconds: report.totalSeconds,
    prepare: report.prepare,
    phases: { head: perPhase('head'), finetune: perPhase('finetune') },
    ortSeconds: report.ortSeconds,
    tfjsSeconds: report.tfjsSeconds,
    topEngine: report.topEngine,
    trainStep,
    testAccuracy: report.testAccuracy,
    testAccuracyFlipTTA: report.testAccuracyFlipTTA,
    valAccuracy: report.valAccuracy,
    frozenBaseTestAccuracy: report.phases.head.testAccuracy,
    fastPath,
    target: {
      accuracy: TARGET_ACCURACY,
      seconds: TARGET_SECONDS,
      beatsFastPath: (report.testAccuracy ?? 0) > fastPath.testAccuracy,
      meetsAccuracyGoal: (report.testAccuracy ?? 0) >= TARGET_ACCURACY,
      meetsTime: wall < TARGET_SECONDS,
    },
    history: report.history,
  };
}
