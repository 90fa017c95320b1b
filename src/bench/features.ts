import { loadavg, tmpdir } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { takeRows } from '../eval/cv.ts';
import { Rng } from '../linalg/random.ts';
import { compareHeads, DEFAULT_SELECTION_CV } from '../pipeline/compare.ts';
import { chooseHead } from '../eval/select.ts';
import { loadFeatureCache, type FeatureCache } from '../store/read.ts';
import { UserError } from '../util/errors.ts';
import { silentLogger, type Logger } from '../util/log.ts';

/**
 * Which features help, measured: for each feature cache (plain, --tta flip, --tta crops,
 * --layer a,b, …) of the same images, the full compare — head chosen by 5-fold CV on train+val (and,
 * recorded beside it, by validation alone), refitted on train+val, scored once on test — on all training images and on a small subset (N training images
 * per class, the same images in every cache; the same test images). Prints and writes
 * data/bench/features.json.
 *
 *   npm run bench -- features --caches DIR1,DIR2,… [--per-class 100]
 */

export const SMALL_PER_CLASS = 100;

/** The same N training rows per class in every cache of the same images (seeded, by row order). */
export function smallTrainSubset(c: FeatureCache, perClass: number, seed = 0): FeatureCache {
  const tr = c.splits.train!;
  const rng = new Rng(seed);
  const byClass = new Map<number, number[]>();
  tr.y.forEach((y, i) => {
    if (!byClass.has(y)) byClass.set(y, []);
    byClass.get(y)!.push(i);
  });
  const keep: number[] = [];
  for (const [cls, idx] of [...byClass.entries()].sort((a, b) => a[0] - b[0])) {
    if (idx.length < perClass)
      throw new UserError(`class ${c.classes[cls]} has ${idx.length} training images, fewer than ${perClass}`);
    rng.shuffle(idx);
    keep.push(...idx.slice(0, perClass));
  }
  keep.sort((a, b) => a - b);
  const train = {
    X: takeRows(tr.X, keep),
    y: Int32Array.from(keep, (i) => tr.y[i]!),
    paths: keep.map((i) => tr.paths[i]!),
  };
  return { ...c, splits: { ...c.splits, train }, augmented: undefined };
}

async function score(c: FeatureCache, seed: number) {
  const out = mkdtempSync(join(tmpdir(), 'convcache-bench-features-'));
  try {
    const t0 = performance.now();
    // As the CLIs do by default: the head chosen by 5-fold CV on train+val; the choice the
    // validation split alone would make is recorded beside it.
    const { report } = await compareHeads({
      cache: c,
      out,
      seed,
      cv: DEFAULT_SELECTION_CV,
      saveHeads: 'none',
      extraRowsFile: null,
      log: silentLogger,
    });
    const chosen = report.heads.find((h) => h.name === report.chosen);
    const byVal = chooseHead(
      report.heads.map((h) => ({ name: h.name, score: h.valAccuracy, tieBreak: h.valLogLoss ?? null })),
      'val',
    ).chosen;
    return {
      trainRows: report.split.train,
      valRows: report.split.val,
      testRows: report.split.test,
      chosen: report.chosen,
      // The choice between feature sets is made on this (CV on train+val), never on test.
      chosenCvAccuracy: report.selection?.ranking.find((r) => r.name === report.chosen)?.score ?? null,
      chosenTestAccuracy: chosen?.testAccuracy ?? null,
      chosenInterval: chosen?.testInterval ?? null,
      chosenByValidation: byVal,
      chosenByValidationTestAccuracy: report.heads.find((h) => h.name === byVal)?.testAccuracy ?? null,
      recommended: report.recommended,
      tied: report.tied,
      heads: Object.fromEntries(report.heads.map((h) => [h.name, h.testAccuracy])),
      compareSeconds: Math.round((performance.now() - t0) / 10) / 100,
    };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/** Small-data draws: one draw of 200 images moves a head by ±0.5 points, so the subsets are drawn this many times. */
export const SMALL_DRAWS = 3;

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const headMean = (heads: Record<string, number | null>) =>
  mean(Object.values(heads).filter((v): v is number => v !== null));

export async function benchFeatures(o: {
  caches: string[];
  perClass?: number;
  draws?: number;
  seed?: number;
  log: Logger;
}): Promise<object> {
  if (o.caches.length === 0) throw new UserError('bench features: give --caches DIR1,DIR2,…');
  const perClass = o.perClass ?? SMALL_PER_CLASS;
  const seed = o.seed ?? 42;
  const rows: object[] = [];
  let testPaths: string | undefined;
  for (const dir of o.caches) {
    const c = loadFeatureCache(dir);
    const paths = JSON.stringify(c.splits.test?.paths ?? []);
    if (testPaths !== undefined && paths !== testPaths)
      throw new UserError(`bench features: ${dir} has other test images than ${o.caches[0]}`);
    testPaths = paths;
    const m = c.manifest;
    o.log.info(
      `features: ${dir} (layer ${m.backbone.layer}, pool ${m.backbone.pooling}, TTA ${m.tta?.spec ?? 'none'}, D=${m.backbone.featureDim})`,
    );
    const full = await score(c, seed);
    o.log.info(
      `  all ${full.trainRows + full.valRows} training images: ${full.chosen} ${pctOf(full.chosenTestAccuracy)}`,
    );
    const small = [];
    for (let d = 0; d < (o.draws ?? SMALL_DRAWS); d++) {
      const r = await score(smallTrainSubset(c, perClass, d), seed);
      o.log.info(`  ${perClass} per class, draw ${d}: ${r.chosen} ${pctOf(r.chosenTestAccuracy)}`);
      small.push(r);
    }
    rows.push({
      cache: dir,
      layer: m.backbone.layer,
      pooling: m.backbone.pooling,
      inputSize: m.backbone.preprocessing.size[0],
      tta: m.tta?.spec ?? 'none',
      D: m.backbone.featureDim,
      extractSeconds: m.timings.extractSeconds,
      extractedViews: m.timings.computed + m.timings.reused,
      full: { ...full, headsMean: headMean(full.heads) },
      small,
      smallMean: {
        chosenTestAccuracy: mean(small.map((r) => r.chosenTestAccuracy ?? 0)),
        headsMean: mean(small.map((r) => headMean(r.heads))),
      },
    });
  }
  return {
    benchmark: 'features',
    generatedAt: new Date().toISOString(),
    loadAverage1m: Math.round(loadavg()[0]! * 100) / 100,
    note: `each cache: compare (head chosen by 5-fold CV on train+val, refitted on train+val, scored once on the same test images) on all training images and on ${perClass} per class (${o.draws ?? SMALL_DRAWS} draws, seeds 0.., the same images in every cache)`,
    rows,
  };
}

const pctOf = (a: number | null) => (a === null ? 'n/a' : `${(a * 100).toFixed(2)}%`);
