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

/** Every compare head on the big cache, one process each (peak RSS per head). */
export async function benchCompareRows(o: {
  rows: number;
  dim: number;
  heads: readonly string[];
  log: Logger;
  runTimed: RunTimed;
  previous?: { rows: number; dim: number; heads: Record<string, unknown>[] };
}): Promise<Record<string, unknown>> {
  const cache = syntheticCache(o.rows, o.dim, o.log);
  const names = resolveHeadList(o.heads);
  const heads: Record<string, unknown>[] = [];
  for (const name of names) {
    o.log.info(`scale: compare --heads ${name} on ${o.rows} rows, load ${loadavg()[0]!.toFixed(1)} ...`);
    const out = join(cache, `report-${name}`);
    const m = await o.runTimed('compare', [
      '--cache',
      cache,
      '--heads',
      name,
      '--out',
      out,
      '--save-heads',
      'none',
      '--quiet',
    ]);
    if (m.code !== 0) {
      heads.push({
        name,
        error: m.stderr
          .split('\n')
          .filter((l) => l.trim() && !/^\s+\S.*:\s/.test(l))
          .slice(-3)
          .join(' | '),
        wallSeconds: m.seconds,
        peakRssMB: m.peakRssMB,
      });
      o.log.warn(`scale: ${name} failed: ${String(heads.at(-1)!.error)}`);
      continue;
    }
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    const row = report.heads.find((h: { name: string }) => h.name === name);
    heads.push({
      name,
      fitSeconds: row.fitSeconds,
      testAccuracy: row.testAccuracy,
      variant: row.note ?? 'exact',
      wallSeconds: m.seconds,
      peakRssMB: m.peakRssMB,
      load1: loadavg()[0],
    });
    o.log.info(
      `scale: ${name}: fit ${row.fitSeconds.toFixed(1)} s, wall ${m.seconds} s, peak RSS ${m.peakRssMB} MB, test ${(row.testAccuracy * 100).toFixed(2)}%${row.note ? ` — ${row.note}` : ''}`,
    );
  }
  // Heads measured in an earlier run with the same rows/dim stay unless re-measured now.
  const prev =
    o.previous && o.previous.rows === o.rows && o.previous.dim === o.dim
      ? o.previous.heads.filter((h) => !names.includes(String(h.name)))
      : [];
  const merged = [...prev, ...heads].sort(
    (a, b) => Object.keys(COMPARE_ROWS).indexOf(String(a.name)) - Object.keys(COMPARE_ROWS).indexOf(String(b.name)),
  );
  const wall = merged.reduce((a, h) => a + Number(h.wallSeconds ?? 0), 0);
  return {
    rows: o.rows,
    dim: o.dim,
    trainRows: Math.round(o.rows * 0.8),
    heads: merged,
    totalWallSeconds: Math.round(wall * 10) / 10,
    maxPeakRssMB: Math.max(...merged.map((h) => Number(h.peakRssMB ?? 0))),
  };
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
