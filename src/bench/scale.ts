import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { writeFileAtomic } from '../util/atomic.ts';
import type { Logger } from '../util/log.ts';
import { cacheRoot, packageRoot } from '../util/paths.ts';
import { resolveHeadList } from '../pipeline/compare.ts';

/**
 * `npm run bench -- scale`: memory and speed at dataset sizes a laptop run never sees.
 *   extract  — synthetic folders of small JPEGs (default 5 000 and 100 000), one `extract` process
 *              each at --input-size 64 (inference is cheap, so the pipeline and the writer show):
 *              peak RSS (from /usr/bin/time -v) and img/s.
 *   shards   — the smallest folder again as 4 concurrent shards (JOB_COMPLETION_INDEX) on one --out,
 *              then merge: wall-clock img/s of the whole, merge seconds.
 *   approx   — accuracy of each approximation (mini-batch logreg and linear SVM, Nyström SVM, IVF
 *              kNN, per-tree row cap of the forest) against the exact head at 10 000 training rows
 *              (the forest: 40 000) of synthetic non-linear features (D = 256), where both run.
 *   compare  — a synthetic feature cache of 200 000 rows: one `compare` process over every head (CLI
 *              defaults), wall seconds and peak RSS of the run; per head fit seconds, accuracy, variant.
 * `--parts compare` (or any subset) runs only those parts; `--heads` narrows compare and approx.
 * Results accumulate in data/bench/scale.json (each part replaces its own entries).
 */
export interface ScaleBenchOptions {
  parts: readonly string[];
  sizes: readonly number[];
  rows: number;
  dim: number;
  heads: readonly string[];
  log: Logger;
  /** Where scale.json accumulates (the bench results folder). */
  resultsDir: string;
}

const INPUT_SIZE = '64';

function benchRoot(): string {
  return join(cacheRoot(), 'bench-data', 'scale');
}

/** Two classes × a few noise templates; every file gets a unique JPEG comment so content hashes differ. */
export async function syntheticImageFolder(n: number, log: Logger): Promise<string> {
  const dir = join(benchRoot(), `images-${n}`);
  if (existsSync(join(dir, '.complete'))) return dir;
  rmSync(dir, { recursive: true, force: true });
  log.info(`scale: generating ${n} synthetic 48x48 JPEGs in ${dir} ...`);
  const templates: Buffer[][] = [];
  for (let c = 0; c < 2; c++) {
    const list: Buffer[] = [];
    for (let t = 0; t < 16; t++) {
      list.push(
        await sharp({
          create: {
            width: 48,
            height: 48,
            channels: 3,
            background: c === 0 ? { r: 200, g: 60 + t * 8, b: 40 } : { r: 40, g: 60 + t * 8, b: 200 },
            noise: { type: 'gaussian', mean: 0, sigma: 40 },
          },
        })
          .jpeg({ quality: 80 })
          .toBuffer(),
      );
    }
    templates.push(list);
  }
  for (const c of [0, 1]) mkdirSync(join(dir, `class${c}`), { recursive: true });
  for (let i = 0; i < n; i++) {
    const c = i % 2;
    const tpl = templates[c]![(i >> 1) % 16]!;
    const text = Buffer.from(`convcache synthetic ${i}`, 'latin1');
    const com = Buffer.alloc(4);
    com[0] = 0xff;
    com[1] = 0xfe;
    com.writeUInt16BE(text.length + 2, 2);
    writeFileSync(
      join(dir, `class${c}`, `img-${String(i).padStart(7, '0')}.jpg`),
      Buffer.concat([tpl.subarray(0, 2), com, text, tpl.subarray(2)]),
    );
  }
  writeFileSync(join(dir, '.complete'), '');
  return dir;
}

interface Measured {
  code: number | null;
  seconds: number;
  peakRssMB: number | null;
  stdout: string;
  stderr: string;
}

/** Run a convcache command under /usr/bin/time -v: wall seconds and peak RSS of the process. */
function runTimed(command: string, args: readonly string[], env: Record<string, string> = {}): Promise<Measured> {
  const t0 = performance.now();
  const useTime = existsSync('/usr/bin/time');
  const cmd = useTime ? '/usr/bin/time' : process.execPath;
  const argv = [
    ...(useTime ? ['-v', process.execPath] : []),
    '--import',
    'tsx',
    join('src', 'cli', 'convcache.ts'),
    command,
    ...args,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, {
      cwd: packageRoot(),
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += String(d);
    });
    child.stderr.on('data', (d) => {
      stderr += String(d);
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      const kb = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr)?.[1];
      resolve({
        code,
        seconds: Math.round(performance.now() - t0) / 1000,
        peakRssMB: kb ? Math.round(Number(kb) / 1024) : null,
        stdout,
        stderr,
      });
    });
  });
}

function failed(what: string, m: Measured): Error {
  return new Error(
    `${what} failed (exit ${m.code}):\n${m.stderr
      .split('\n')
      .filter((l) => !/^\s+\S.*:\s/.test(l))
      .slice(-15)
      .join('\n')}`,
  );
}

async function benchExtractSizes(o: ScaleBenchOptions): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  for (const n of o.sizes) {
    const data = await syntheticImageFolder(n, o.log);
    const cache = join(benchRoot(), `cache-${n}`);
    rmSync(cache, { recursive: true, force: true });
    o.log.info(`scale: extract ${n} images (--input-size ${INPUT_SIZE}), load ${loadavg()[0]!.toFixed(1)} ...`);
    const m = await runTimed('extract', ['--data', data, '--out', cache, '--input-size', INPUT_SIZE, '--quiet']);
    if (m.code !== 0) throw failed(`extract of ${n} images`, m);
    const manifest = JSON.parse(readFileSync(join(cache, 'manifest.json'), 'utf8'));
    const row = {
      images: n,
      peakRssMB: m.peakRssMB,
      wallSeconds: m.seconds,
      extractImagesPerSecond: manifest.timings.extractImagesPerSecond,
      endToEndImagesPerSecond: Math.round((n / m.seconds) * 10) / 10,
      timings: manifest.timings,
      load1: loadavg()[0],
    };
    o.log.info(
      `scale: ${n} images: peak RSS ${m.peakRssMB} MB, ${row.endToEndImagesPerSecond} img/s end to end (${row.extractImagesPerSecond} img/s extraction)`,
    );
    out.push(row);
    rmSync(cache, { recursive: true, force: true });
  }
  return out;
}

async function benchShards(o: ScaleBenchOptions): Promise<Record<string, unknown>> {
  const n = Math.min(...o.sizes);
  const data = await syntheticImageFolder(n, o.log);
  const out = join(benchRoot(), `shards-${n}`);
  rmSync(out, { recursive: true, force: true });
  const shards = 4;
  const threads = String(Math.max(1, Math.floor(cpus().length / shards)));
  o.log.info(`scale: ${shards} concurrent shards over ${n} images on one --out ...`);
  const t0 = performance.now();
  const runs = await Promise.all(
    Array.from({ length: shards }, (_, k) =>
      runTimed(
        'extract',
        [
          '--data',
          data,
          '--out',
          out,
          '--input-size',
          INPUT_SIZE,
          '--shards',
          String(shards),
          '--threads',
          threads,
          '--workers',
          threads,
          '--quiet',
        ],
        { JOB_COMPLETION_INDEX: String(k) },
      ),
    ),
  );
  const shardSeconds = Math.round(performance.now() - t0) / 1000;
  runs.forEach((m, k) => {
    if (m.code !== 0) throw failed(`shard ${k}`, m);
  });
  const merge = await runTimed('merge', ['--out', out, '--quiet']);
  if (merge.code !== 0) throw failed('merge', merge);
  const row = {
    images: n,
    shards,
    threadsPerShard: Number(threads),
    shardsWallSeconds: shardSeconds,
    imagesPerSecond: Math.round((n / shardSeconds) * 10) / 10,
    shardPeakRssMB: runs.map((m) => m.peakRssMB),
    mergeSeconds: merge.seconds,
    mergePeakRssMB: merge.peakRssMB,
    load1: loadavg()[0],
  };
  o.log.info(
    `scale: shards ${row.imagesPerSecond} img/s over ${shards} processes on ${cpus().length} cores; merge ${merge.seconds} s`,
  );
  rmSync(out, { recursive: true, force: true });
  return row;
}

export async function benchScale(o: ScaleBenchOptions): Promise<Record<string, unknown>> {
  const file = join(o.resultsDir, 'scale.json');
  const read = (): Record<string, unknown> => (existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {});
  // Read-modify-write per part, so parts run separately (or at once) accumulate in one file.
  const save = (key: string, value: unknown): void => {
    const result = read();
    result.benchmark = 'scale';
    result.machine = { cores: cpus().length, note: 'shared machine; load1 recorded per measurement' };
    result[key] = value;
    result.date = new Date().toISOString();
    writeFileAtomic(file, JSON.stringify(result, null, 2) + '\n');
  };
  if (o.parts.includes('extract')) {
    const rows = await benchExtractSizes(o);
    const prev = (read().extract as Record<string, unknown>[] | undefined) ?? [];
    save(
      'extract',
      [...prev.filter((r) => !rows.some((x) => x.images === r.images)), ...rows].sort(
        (a, b) => Number(a.images) - Number(b.images),
      ),
    );
  }
  if (o.parts.includes('shards')) save('shards', await benchShards(o));
  if (o.parts.includes('approx')) {
    const { benchApproximations } = await import('./scale-compare.ts');
    // --heads narrows the pairs (re-measured pairs replace their entries; the others stay).
    const only = o.heads.includes('all') ? undefined : resolveHeadList(o.heads);
    const rows = await benchApproximations({ rows: 10_000, dim: 256, log: o.log, ...(only ? { only } : {}) });
    const prev = (read().approximations as Record<string, unknown>[] | undefined) ?? [];
    save('approximations', [...prev.filter((p) => !rows.some((r) => r.head === p.head)), ...rows]);
  }
  if (o.parts.includes('compare')) {
    const { benchCompareRows } = await import('./scale-compare.ts');
    save(
      'compare',
      await benchCompareRows({
        rows: o.rows,
        dim: o.dim,
        heads: o.heads,
        log: o.log,
        runTimed,
      }),
    );
  }
  return read();
}

export type { Measured };
export { runTimed };
