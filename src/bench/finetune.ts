import { cpus, loadavg, tmpdir } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_MODEL } from '../backbone/registry.ts';
import { parseAugmentSpec } from '../images/augment.ts';
import { DEFAULT_MAX_PIXELS } from '../images/decode.ts';
import { FINETUNE_DEFAULTS, runFinetune, type FinetuneReport } from '../finetune/recipe.ts';
import { UserError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import { defaultDatasetDir } from '../util/paths.ts';
import { tfBackendInfo } from '../util/tf.ts';
import type { EngineName } from '../finetune/engine.ts';

export interface FinetuneBenchOptions {
  data?: string;
  engine: EngineName;
  log: Logger;
}

/** Best fast-path head on the same test split (sklearn-matching heads on cached MobileNet features). */
export const FAST_PATH_BEST_ACCURACY = 0.982;
export const TARGET_ACCURACY = 0.988;
export const TARGET_SECONDS = 15 * 60;

/**
 * The whole recipe with its defaults on cats-vs-dogs (2000 train incl. a 10 % val carve-out, 1000
 * test): wall time, ORT vs TF.js seconds per phase, test accuracy against the fast path's best.
 * Runs from scratch in a temporary folder (no cache reuse), so the time is what a user waits.
 */
export async function benchFinetune(opts: FinetuneBenchOptions): Promise<Record<string, unknown>> {
  const data = opts.data ?? defaultDatasetDir();
  if (!data) throw new UserError('no dataset found for the benchmark (give --data)');
  const out = mkdtempSync(join(tmpdir(), 'convcache-bench-finetune-'));
  const load0 = loadavg()[0];
  const t0 = performance.now();
  let report: FinetuneReport;
  try {
    ({ report } = await runFinetune({
      data, model: DEFAULT_MODEL, augment: parseAugmentSpec(FINETUNE_DEFAULTS.augment), unfreeze: FINETUNE_DEFAULTS.unfreeze,
      epochsHead: FINETUNE_DEFAULTS.epochsHead, epochsFinetune: FINETUNE_DEFAULTS.epochsFinetune, lr: FINETUNE_DEFAULTS.lr,
      lrHead: FINETUNE_DEFAULTS.lrHead, optimizer: FINETUNE_DEFAULTS.optimizer, batch: FINETUNE_DEFAULTS.batch, seed: FINETUNE_DEFAULTS.seed,
      patience: FINETUNE_DEFAULTS.patience, dropout: FINETUNE_DEFAULTS.dropout, engine: opts.engine, out, resume: false,
      threads: cpus().length, workers: 4, maxPixels: DEFAULT_MAX_PIXELS, quiet: false, tta: true, log: opts.log,
    }));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
  const wall = (performance.now() - t0) / 1000;
  const perPhase = (p: 'head' | 'finetune'): Record<string, unknown> => {
    const r = report.phases[p];
    const trainEpochs = r.epochsRun || 1;
    return {
      epochsRun: r.epochsRun, bestEpoch: r.bestEpoch, bestValAccuracy: r.bestValAccuracy, testAccuracy: r.testAccuracy,
      seconds: r.seconds, ortSeconds: r.ortSeconds, tfjsSeconds: r.tfjsSeconds, augmentSeconds: r.augmentSeconds,
      frozenBaseSeconds: r.baseSeconds, trainableTopSeconds: r.topSeconds,
      topSecondsPerEpoch: Math.round((r.topSeconds / trainEpochs) * 10) / 10,
      secondsPerEpoch: Math.round((r.seconds / trainEpochs) * 10) / 10,
      ortSecondsPerEpoch: Math.round((r.ortSeconds / trainEpochs) * 10) / 10,
      tfjsSecondsPerEpoch: Math.round((r.tfjsSeconds / trainEpochs) * 10) / 10,
    };
  };
  return {
    benchmark: 'finetune',
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, node: process.version, loadAverage1mAtStart: Math.round(load0 * 100) / 100, loadAverage1mAtEnd: Math.round(loadavg()[0] * 100) / 100 },
    tfjsBackend: tfBackendInfo(),
    dataset: data,
    counts: report.data.counts,
    recipe: { ...report.options, boundary: report.network.boundary, cut: report.network.cut, trainableLayers: report.network.trainableLayers.length },
    wallSeconds: Math.round(wall * 10) / 10,
    totalSeconds: report.totalSeconds,
    prepare: report.prepare,
    phases: { head: perPhase('head'), finetune: perPhase('finetune') },
    ortSeconds: report.ortSeconds,
    tfjsSeconds: report.tfjsSeconds,
    topEngine: report.topEngine,
    testAccuracy: report.testAccuracy,
    testAccuracyFlipTTA: report.testAccuracyFlipTTA,
    valAccuracy: report.valAccuracy,
    frozenBaseTestAccuracy: report.phases.head.testAccuracy,
    fastPathBestAccuracy: FAST_PATH_BEST_ACCURACY,
    target: {
      accuracy: TARGET_ACCURACY, seconds: TARGET_SECONDS,
      beatsFastPath: (report.testAccuracy ?? 0) > FAST_PATH_BEST_ACCURACY,
      meetsAccuracyGoal: (report.testAccuracy ?? 0) >= TARGET_ACCURACY,
      meetsTime: wall < TARGET_SECONDS,
    },
    history: report.history,
  };
}
