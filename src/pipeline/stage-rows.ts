import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { pathBytes } from '../util/disk.ts';
import { basename, join, resolve } from 'node:path';
import type { ExtraRow, ReportRow } from '../eval/report.ts';
import { loadFeatureCache, type FeatureCache } from '../store/read.ts';
import { MANIFEST_FILE, type Manifest } from '../store/manifest.ts';
import { cacheRoot } from '../util/paths.ts';
import type { Logger } from '../util/log.ts';
import { DEFAULT_VAL_FRACTION, fitOnSplits, headBytes, prepareSplits } from './train.ts';
import { COMPARE_ROWS, type LaterRowsContext } from './compare.ts';
import { pct } from '../util/format.ts';
import { HEAD_ROWS } from '../heads/registry.ts';

/**
 * The report's rows for the other paths, so one table compares, on the same test split:
 * fast path (every head, trained by compare), the fast path on an augmented cache (the best head
 * retrained on the cached augmented views), and the slow path's results (frozen base + augmentation,
 * fine-tuned) read from `finetune.json` files.
 */

/** Same dataset, backbone and preprocessing: the test split holds the same images with the same features. */
function sameFeatures(a: Manifest, b: Manifest): boolean {
  return (
    a.dataRoot === b.dataRoot &&
    a.backbone.weightsHash === b.backbone.weightsHash &&
    a.backbone.layer === b.backbone.layer &&
    a.backbone.pooling === b.backbone.pooling &&
    JSON.stringify(a.backbone.preprocessing) === JSON.stringify(b.backbone.preprocessing) &&
    JSON.stringify(a.classes) === JSON.stringify(b.classes) &&
    JSON.stringify(a.split) === JSON.stringify(b.split)
  );
}

/** Augmented caches (extract --augment) of the same data and backbone, newest first. */
export function findAugmentedCaches(cache: FeatureCache, root = join(cacheRoot(), 'cache')): string[] {
  if (!existsSync(root)) return [];
  const out: string[] = [];
  for (const d of readdirSync(root)) {
    const dir = join(root, d);
    const mp = join(dir, MANIFEST_FILE);
    if (resolve(dir) === resolve(cache.dir) || !existsSync(mp)) continue;
    try {
      const m = JSON.parse(readFileSync(mp, 'utf8')) as Manifest;
      if (m.augment && sameFeatures(m, cache.manifest)) out.push(dir);
    } catch {
      /* not a cache */
    }
  }
  return out.sort();
}

/**
 * The best compare row by validation accuracy, ties by each row's registered tieRank (a-priori
 * strength of the family: a 200-image val set ties often): chosen without looking at test.
 */
export function bestByValidation(rows: readonly ReportRow[]): ReportRow | undefined {
  const rank = (n: string) => HEAD_ROWS[n]?.tieRank ?? Number.MAX_SAFE_INTEGER;
  return [...rows]
    .filter((r) => r.source === 'compare' && r.valAccuracy !== null)
    .sort((a, b) => b.valAccuracy! - a.valAccuracy! || rank(a.name) - rank(b.name))[0];
}

export async function augmentedCacheRows(ctx: LaterRowsContext, root?: string): Promise<ExtraRow[]> {
  if (ctx.cache.augmented) return []; // compare is already running on augmented features
  const best = ctx.rows.find((r) => r.name === ctx.chosen) ?? bestByValidation(ctx.rows);
  const dirs = findAugmentedCaches(ctx.cache, root);
  if (!best || dirs.length === 0) return [];
  const out: ExtraRow[] = [];
  for (const dir of dirs) {
    const aug = loadFeatureCache(dir);
    const splits = prepareSplits(aug, DEFAULT_VAL_FRACTION, ctx.seed);
    const def = COMPARE_ROWS[best.name]!;
    const run = await fitOnSplits(def.kind, best.params, splits, aug.classes.length, { seed: ctx.seed, refit: true });
    const a = aug.manifest.augment!;
    const name = `${best.name} +aug x${a.views}`;
    ctx.log.info(
      `compare: ${name} (augmented cache ${dir}): fit ${run.fitSeconds.toFixed(2)} s, test ${pct(run.test?.accuracy)}`,
    );
    out.push({
      name,
      kind: def.kind,
      params: run.params,
      testAccuracy: run.test?.accuracy ?? null,
      valAccuracy: run.val?.accuracy ?? null,
      macroF1: run.test?.macroF1 ?? null,
      logLoss: run.test?.logLoss ?? null,
      confusion: run.test?.confusion ?? null,
      fitSeconds: run.fitSeconds,
      predictMsPer1000: run.predictMsPer1000,
      modelBytes: await headBytes(run.head),
      note: `fast path on the augmented cache (${a.spec}, ${a.views} views per training image, ${splits.train.y.length} training rows; extraction of the views took ${aug.manifest.timings.extractSeconds} s)`,
    });
  }
  return uniqueNames(
    out,
    dirs.map((d) => basename(d)),
  );
}

/** Rows from several caches or runs may share a name: then each gets its folder appended. */
function uniqueNames(rows: ExtraRow[], origins: readonly string[]): ExtraRow[] {
  const count = new Map<string, number>();
  for (const r of rows) count.set(r.name, (count.get(r.name) ?? 0) + 1);
  return rows.map((r, i) => (count.get(r.name)! > 1 ? { ...r, name: `${r.name} [${origins[i]}]` } : r));
}

/** Every later row compare adds by default: augmented-cache rows, then the slow path's. */
export async function stageRows(ctx: LaterRowsContext, root = cacheRoot()): Promise<ExtraRow[]> {
  return [
    ...(await augmentedCacheRows(ctx, join(root, 'cache'))),
    ...finetuneRows(ctx.cache, ctx.log, join(root, 'finetune')),
  ];
}

/** The parts of finetune.json (src/finetune/recipe.ts FinetuneReport) the report needs. */
interface FinetuneSummary {
  model: { id: string; weightsHash: string };
  classes: string[];
  data: { root: string; counts: { test: number } };
  network: { unfreeze: number; trainableLayers: string[] };
  options: Record<string, unknown>;
  /** null after a refit on train+val (no validation split left). */
  valAccuracy: number | null;
  testAccuracy: number | null;
  totalSeconds: number;
  ortSeconds: number;
  tfjsSeconds: number;
  prepare: { seconds: number; ortSeconds: number };
  preprocessing?: { size?: number[] };
  topEngine?: string;
  /** `finetune --select`: the validation run that chose the refit's epochs (older reports have none). */
  selection?: { validationRun?: { dir: string; seconds: number } };
  phases: Record<
    'head' | 'finetune',
    {
      epochsRun: number;
      seconds: number;
      ortSeconds: number;
      tfjsSeconds: number;
      bestValAccuracy: number | null;
      testAccuracy: number | null;
    }
  >;
}

/**
 * Rows from `convcache finetune` results (<cache root>/finetune/<name>/finetune.json) on the same dataset,
 * weights and test split: frozen base + augmentation (phase 1) and fine-tuned (phase 2).
 */
export function finetuneRows(cache: FeatureCache, log: Logger, root = join(cacheRoot(), 'finetune')): ExtraRow[] {
  if (!existsSync(root)) return [];
  const m = cache.manifest;
  const out: ExtraRow[] = [];
  const origins: string[] = [];
  for (const d of readdirSync(root).sort()) {
    const file = join(root, d, 'finetune.json');
    if (!existsSync(file)) continue;
    let f: FinetuneSummary;
    try {
      f = JSON.parse(readFileSync(file, 'utf8'));
    } catch {
      continue;
    }
    if (
      resolve(f.data?.root ?? '') !== resolve(m.dataRoot) ||
      f.model?.weightsHash !== m.backbone.weightsHash ||
      JSON.stringify(f.classes) !== JSON.stringify(m.classes) ||
      f.data.counts.test !== (m.counts.test?.total ?? 0)
    )
      continue;
    const aug = String(f.options.augment ?? 'none');
    const h = f.phases.head;
    const ft = f.phases.finetune;
    const selected = f.selection?.validationRun;
    const px = f.preprocessing?.size?.[0] ? ` at ${f.preprocessing.size[0]} px` : '';
    const top =
      f.topEngine === 'ort' ? ', trainable part in ORT' : f.topEngine === 'tfjs' ? ', trainable part in TF.js' : '';
    log.info(`compare: adding finetune results from ${file}`);
    origins.push(d, d);
    out.push({
      name: `frozen base + head${aug !== 'none' ? ' (aug)' : ''}`,
      kind: 'finetune',
      testAccuracy: h.testAccuracy,
      valAccuracy: h.bestValAccuracy,
      fitSeconds: f.prepare.seconds + h.seconds,
      note: `slow path phase 1: dense head on the frozen base${px}, augmentation ${aug}; ${h.epochsRun} epochs, wall ${(f.prepare.seconds + h.seconds).toFixed(0)} s (ORT ${(f.prepare.ortSeconds + h.ortSeconds).toFixed(0)} s, TF.js ${h.tfjsSeconds.toFixed(0)} s)`,
    });
    out.push({
      name: `fine-tuned top ${f.network.unfreeze}`,
      kind: 'finetune',
      testAccuracy: f.testAccuracy,
      valAccuracy: f.valAccuracy,
      // With --select the validation run that chose the epochs is part of what this model cost.
      fitSeconds: f.totalSeconds + (selected?.seconds ?? 0),
      modelBytes: existsSync(join(root, d, 'model')) ? pathBytes(join(root, d, 'model')) : null,
      note: `slow path phase 2: top ${f.network.unfreeze} block(s) unfrozen (${f.network.trainableLayers.length} layers)${px}, ${ft.epochsRun} epochs; whole run ${f.totalSeconds.toFixed(0)} s wall (ORT ${f.ortSeconds.toFixed(0)} s, TF.js ${f.tfjsSeconds.toFixed(0)} s${top})${selected ? `, plus ${selected.seconds.toFixed(0)} s for the validation run that chose its epochs (--select)` : ''}`,
    });
  }
  return uniqueNames(out, origins);
}
