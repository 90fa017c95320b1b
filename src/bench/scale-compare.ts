import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type { BackboneConfig } from '../backbone/backbone.ts';
import type { ImageEntry, SplitName } from '../dataset/scan.ts';
import { createHead } from '../heads/registry.ts';
import { assembleCache } from '../pipeline/assemble.ts';
import { COMPARE_ROWS, resolveHeadList } from '../pipeline/compare.ts';
import { MANIFEST_FILE } from '../store/manifest.ts';
import { RecordStore } from '../store/records.ts';
import type { HeadParams } from '../heads/types.ts';
import { silentLogger, type Logger } from '../util/log.ts';
import { cacheRoot } from '../util/paths.ts';
import type { Measured } from './scale.ts';
import { sliceRows, syntheticFeatures } from './synthetic-features.ts';

type RunTimed = (script: string, args: readonly string[], env?: Record<string, string>) => Promise<Measured>;

const CLASSES = 3;

/**
 * A synthetic feature cache written through the real cache writer (record store → assembleCache),
 * so compare reads it exactly as it reads an extracted one. Split 80/10/10 by row number.
 */
export function syntheticCache(
  rows: number,
  dim: number,
  log: Logger,
  dir = join(cacheRoot(), 'bench-data', 'scale', `features-${rows}x${dim}`),
): string {
  if (existsSync(join(dir, MANIFEST_FILE))) return dir;
  rmSync(dir, { recursive: true, force: true });
  log.info(`scale: writing a synthetic ${rows} × ${dim} feature cache in ${dir} ...`);
  const { X, y } = syntheticFeatures(rows, dim, CLASSES, 11);
  const store = RecordStore.open(join(dir, 'records'), dim, silentLogger);
  for (let s = 0; s < rows; s += 5000) {
    const e = Math.min(rows, s + 5000);
    const entries = [];
    for (let i = s; i < e; i++) entries.push({ key: `r${i}`, value: X.data.subarray(i * dim, (i + 1) * dim) });
    store.add(entries);
  }
  const split = (i: number): SplitName => (i % 10 < 8 ? 'train' : i % 10 === 8 ? 'val' : 'test');
  const images: ImageEntry[] = Array.from({ length: rows }, (_, i) => ({
    path: `c${y[i]}/row-${String(i).padStart(8, '0')}.jpg`,
    absPath: '',
    className: `c${y[i]}`,
    split: split(i),
  }));
  const backbone = {
    modelId: 'synthetic',
    weightsHash: 'synthetic',
    layer: 'synthetic',
    pooling: 'avg',
    featureDim: dim,
    preprocessing: { size: [64, 64] },
  } as unknown as BackboneConfig;
  const manifest = assembleCache({
    cacheDir: dir,
    images,
    plans: images.map((_, i) => ({ viewKeys: [`r${i}`] })),
    classes: Array.from({ length: CLASSES }, (_, c) => `c${c}`),
    scanSkipped: [],
    store: RecordStore.open(join(dir, 'records'), dim, silentLogger),
    backbone,
    dataRoot: dir,
    presplit: true,
    split: { train: 0.8, val: 0.1, test: 0.1 },
    seed: 0,
    augment: undefined,
    log: silentLogger,
  });
  rmSync(join(dir, 'records'), { recursive: true, force: true });
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
  return dir;
}

/**
 * `compare` on the big cache as a user runs it: one process, every requested head, the CLI's
 * defaults (--cv 5, which compare replaces by the validation hold-out above holdoutAbove rows).
 * Wall seconds and peak RSS are the whole run's (the target: < 5 min, < 4 GB); fit
 * seconds, accuracy and the variant per head come from report.json.
 */
export async function benchCompareRows(o: {
  rows: number;
  dim: number;
  heads: readonly string[];
  log: Logger;
  runTimed: RunTimed;
}): Promise<Record<string, unknown>> {
  const cache = syntheticCache(o.rows, o.dim, o.log);
  const names = resolveHeadList(o.heads);
  const out = join(cache, 'report');
  const load1 = loadavg()[0]!;
  o.log.info(
    `scale: compare --heads ${names.join(',')} on ${o.rows} rows in one process, load ${load1.toFixed(1)} ...`,
  );
  const m = await o.runTimed('compare', [
    '--cache',
    cache,
    '--heads',
    names.join(','),
    '--out',
    out,
    '--save-heads',
    'none',
    '--quiet',
  ]);
  if (m.code !== 0)
    throw new Error(
      `compare on ${o.rows} rows failed (exit ${m.code}): ${m.stderr
        .split('\n')
        .filter((l) => l.trim() && !/^\s+\S.*:\s/.test(l))
        .slice(-3)
        .join(' | ')}`,
    );
  const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
  const heads = names.map((name) => {
    const row = report.heads.find((h: { name: string }) => h.name === name);
    return {
      name,
      fitSeconds: Math.round(row.fitSeconds * 10) / 10,
      predictMsPer1000: Math.round(row.predictMsPer1000 * 10) / 10,
      valAccuracy: row.valAccuracy,
      testAccuracy: row.testAccuracy,
      variant: row.note ?? 'exact',
    };
  });
  for (const h of heads)
    o.log.info(`scale: ${h.name}: fit ${h.fitSeconds} s, test ${(h.testAccuracy * 100).toFixed(2)}% — ${h.variant}`);
  const result = {
    rows: o.rows,
    dim: o.dim,
    trainRows: report.split.train,
    valRows: report.split.val,
    testRows: report.split.test,
    process: 'one compare process, all heads (CLI defaults: --cv 5)',
    selection: report.options.note ?? `cv ${report.options.cv}`,
    chosen: report.chosen,
    heads,
    totalWallSeconds: m.seconds,
    reportTotalSeconds: report.totalSeconds,
    peakRssMB: m.peakRssMB,
    targets: {
      under300s: m.seconds < 300,
      under4GB: m.peakRssMB !== null && m.peakRssMB < 4096,
    },
    load1Before: load1,
    load1After: loadavg()[0],
  };
  o.log.info(
    `scale: compare on ${o.rows} rows: ${m.seconds} s wall, peak RSS ${m.peakRssMB} MB (targets < 300 s: ${result.targets.under300s}, < 4 GB: ${result.targets.under4GB})`,
  );
  return result;
}

/** One approximation and the exact head it stands in for, compared at `rows` training rows. */
interface ApproxPair {
  /** Compare row name (its params are the base). */
  row: string;
  exact: HeadParams;
  approx: HeadParams;
  /** Training rows for this pair (default: the bench's rows). */
  rows?: number;
  why: string;
}

/**
 * Every large-n variant compare can switch to, forced at a size where the exact head still runs.
 * The mini-batch and Nyström pairs force the variants that run at 160 000 rows (Nyström's linear
 * solver is the mini-batch one there). The forest is compared at 40 000 rows, where maxSamples
 * (20 000 rows per tree) engages with the exact forest still affordable.
 */
export const APPROX_PAIRS: readonly ApproxPair[] = [
  { row: 'logreg', exact: { solver: 'lbfgs' }, approx: { solver: 'minibatch' }, why: 'mini-batch Adam vs L-BFGS' },
  {
    row: 'svm-linear',
    exact: { solver: 'dual' },
    approx: { solver: 'minibatch' },
    why: 'mini-batch Adam vs dual coordinate descent',
  },
  {
    row: 'svm',
    exact: { approx: 'exact' },
    approx: { approx: 'nystroem', solver: 'minibatch' },
    why: 'Nyström + mini-batch linear solver vs exact SMO',
  },
  { row: 'knn', exact: { approx: 'exact' }, approx: { approx: 'ivf' }, why: 'IVF index vs brute force' },
  {
    row: 'rf',
    exact: { maxSamples: 0 },
    approx: { maxSamples: 20000 },
    rows: 40_000,
    why: '20 000 bootstrap rows per tree vs all rows',
  },
  {
    row: 'dense',
    exact: { maxSteps: 0 },
    approx: {},
    rows: 40_000,
    why: 'epochs cut by maxSteps=4000 (20 of 30 at 40 000 rows) vs all 30 epochs',
  },
];

/**
 * Accuracy of each approximation against the exact head where both run (default 10 000 training
 * rows, 5 000 test rows of synthetic non-linear features).
 */
export async function benchApproximations(o: {
  rows: number;
  dim: number;
  log: Logger;
  only?: readonly string[];
}): Promise<Record<string, unknown>[]> {
  const test = 5000;
  const out: Record<string, unknown>[] = [];
  for (const pair of APPROX_PAIRS) {
    if (o.only && !o.only.includes(pair.row)) continue;
    const rows = pair.rows ?? o.rows;
    const all = syntheticFeatures(rows + test, o.dim, CLASSES, 23);
    const tr = sliceRows(all, 0, rows);
    const te = sliceRows(all, rows, rows + test);
    const def = COMPARE_ROWS[pair.row]!;
    const r: Record<string, unknown> = {
      head: pair.row,
      compared: pair.why,
      trainRows: rows,
      testRows: test,
      dim: o.dim,
    };
    for (const [label, extra] of [
      ['exact', pair.exact],
      ['approx', pair.approx],
    ] as const) {
      const params = { ...def.params, ...extra };
      const h = createHead(def.kind, params);
      const t0 = performance.now();
      await h.fit(tr.X, tr.y, { nClasses: CLASSES, seed: 1 });
      const t1 = performance.now();
      const p = await h.predict(te.X);
      const t2 = performance.now();
      let ok = 0;
      for (let i = 0; i < test; i++) if (p[i] === te.y[i]) ok++;
      r[label] = {
        params,
        accuracy: ok / test,
        fitSeconds: Math.round(t1 - t0) / 1000,
        predictSeconds: Math.round(t2 - t1) / 1000,
        variant: (h as { variant_?: string }).variant_ ?? 'exact',
      };
    }
    const a = r.approx as { accuracy: number };
    const e = r.exact as { accuracy: number };
    r.deltaPoints = Math.round((a.accuracy - e.accuracy) * 10000) / 100;
    r.withinHalfPoint = Math.abs(a.accuracy - e.accuracy) <= 0.005;
    r.load1 = loadavg()[0];
    o.log.info(
      `scale: ${pair.row} at ${rows} rows: exact ${(e.accuracy * 100).toFixed(2)}%, approximate ${(a.accuracy * 100).toFixed(2)}% (${r.deltaPoints} pt)`,
    );
    out.push(r);
  }
  return out;
}
