import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BackboneConfig } from '../backbone/backbone.ts';
import { formatTtaSpec, isTta } from '../images/tta.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { UserError } from '../util/errors.ts';
import { computeMissing, planExtraction, type ExtractOptions } from './extract.ts';
import type { Preprocessing } from '../backbone/preprocess.ts';

/**
 * Sharded extraction: N independent processes (a Kubernetes Indexed Job, a Slurm job array, an AWS
 * Batch array job, or N shells) each run the images of one shard into the same --out folder on a
 * shared file system. A shard writes only its own record chunks (atomically), so shards never
 * collide, a killed shard resumes by running again, and `merge` (or a plain extract) assembles the
 * outputs afterwards, byte-identical to a single-machine run.
 */
export interface Shard {
  index: number;
  count: number;
}

/** Written by every shard (identical content): what merge needs to assemble without the flags. */
export const SHARD_RUN_FILE = 'shard-run.json';

/** Stable shard of an image: sha1 of its relative path ('/'-separated, UTF-8), first 32 bits, mod N. */
export function shardOf(relPath: string, count: number): number {
  return createHash('sha1').update(relPath, 'utf8').digest().readUInt32BE(0) % count;
}

export function recordPrefix(shard: Shard): string {
  return `chunk-s${shard.index}of${shard.count}-`;
}

/** `--shard K/N`, K from 0 to N-1. */
export function parseShard(v: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(v.trim());
  if (!m) throw new UserError(`--shard must look like K/N (e.g. 0/4), got '${v}'`);
  return checkShard(Number(m[1]), Number(m[2]), '--shard');
}

function checkShard(index: number, count: number, source: string): Shard {
  if (!Number.isInteger(count) || count < 1 || count > 100000)
    throw new UserError(`${source}: shard count must be an integer from 1 to 100000, got ${count}`);
  if (!Number.isInteger(index) || index < 0 || index >= count)
    throw new UserError(`${source}: shard index must be from 0 to ${count - 1}, got ${index}`);
  return { index, count };
}

/**
 * The shard this process runs: `--shard K/N`, else the job engine's array index with `--shards N`
 * (Kubernetes JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX) or Slurm's SLURM_ARRAY_TASK_ID with
 * SLURM_ARRAY_TASK_COUNT (or --shards; offset by SLURM_ARRAY_TASK_MIN so --array=1-N works too).
 * Undefined: not sharded.
 */
export function resolveShard(
  flags: { shard?: string; shards?: number },
  env: NodeJS.ProcessEnv = process.env,
): Shard | undefined {
  if (flags.shard !== undefined) {
    const s = parseShard(flags.shard);
    if (flags.shards !== undefined && flags.shards !== s.count)
      throw new UserError(`--shard ${flags.shard} disagrees with --shards ${flags.shards}`);
    return s;
  }
  const int = (name: string): number | undefined => {
    const v = env[name];
    if (v === undefined || v === '') return undefined;
    if (!/^\d+$/.test(v)) throw new UserError(`${name} must be a non-negative integer, got '${v}'`);
    return Number(v);
  };
  const k8s = int('JOB_COMPLETION_INDEX');
  const slurm = int('SLURM_ARRAY_TASK_ID');
  const aws = int('AWS_BATCH_JOB_ARRAY_INDEX');
  if (slurm !== undefined && (flags.shards !== undefined || int('SLURM_ARRAY_TASK_COUNT') !== undefined)) {
    const count = flags.shards ?? int('SLURM_ARRAY_TASK_COUNT')!;
    return checkShard(slurm - (int('SLURM_ARRAY_TASK_MIN') ?? 0), count, 'SLURM_ARRAY_TASK_ID');
  }
  if (flags.shards === undefined) return undefined;
  if (k8s !== undefined) return checkShard(k8s, flags.shards, 'JOB_COMPLETION_INDEX');
  if (aws !== undefined) return checkShard(aws, flags.shards, 'AWS_BATCH_JOB_ARRAY_INDEX');
  if (slurm !== undefined) return checkShard(slurm, flags.shards, 'SLURM_ARRAY_TASK_ID');
  throw new UserError(
    `--shards ${flags.shards} needs a shard index: --shard K/${flags.shards}, or JOB_COMPLETION_INDEX / SLURM_ARRAY_TASK_ID / AWS_BATCH_JOB_ARRAY_INDEX in the environment`,
  );
}

/** One line for a merge that finds images without records. */
export function describeMissing(shardOfEachMissingImage: readonly number[], views: number, count: number): string {
  const shards = [...new Set(shardOfEachMissingImage)].sort((a, b) => a - b);
  const list =
    shards.length > 12 ? `${shards.slice(0, 12).join(', ')}, … (${shards.length} shards)` : shards.join(', ');
  return (
    `${shardOfEachMissingImage.length} images (${views} records) have no features yet, from shard${shards.length === 1 ? '' : 's'} ${list} of ${count}; ` +
    `run (or re-run) those shards with 'extract --shard K/${count}' on the same --out, then merge again (nothing was written)`
  );
}

/** What merge needs: the extract options every shard ran with (minus per-process ones) and the backbone. */
export interface ShardRun {
  shards: number;
  options: {
    data: string;
    model: string;
    layer?: string;
    pooling?: string;
    preprocessing?: Partial<Preprocessing>;
    onnxLayout?: 'nchw' | 'nhwc';
    split: ExtractOptions['split'];
    seed: number;
    augment?: { spec: string; views: number };
    tta?: string;
  };
  backbone: BackboneConfig;
}

export function readShardRun(out: string): ShardRun {
  const path = join(out, SHARD_RUN_FILE);
  if (!existsSync(path))
    throw new UserError(
      `${out} has no ${SHARD_RUN_FILE}: no sharded extraction ran there (run 'extract --shard K/N --out ${out}' first)`,
    );
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as ShardRun;
  } catch {
    throw new UserError(`${path} is not valid JSON`);
  }
}

export interface ShardResult {
  cacheDir: string;
  shard: Shard;
  /** Images in this shard / in the whole dataset. */
  images: number;
  totalImages: number;
  computed: number;
  reused: number;
  seconds: number;
  imagesPerSecond: number | null;
}

/**
 * Run one shard: the same scan and split as a single-machine run, only this shard's images through
 * the conv base, each finished batch committed as one of this shard's record chunks. No outputs are
 * assembled (other shards may still be running); `merge` does that.
 */
export async function extractShard(options: ExtractOptions, shard: Shard): Promise<ShardResult> {
  if (!options.out) throw new UserError('sharded extraction needs --out DIR on a file system every shard can reach');
  const t0 = performance.now();
  const p = await planExtraction(options, (img) => shardOf(img.path, shard.count) === shard.index, recordPrefix(shard));
  const opts = p.opts;
  const run: ShardRun = {
    shards: shard.count,
    options: {
      data: p.scan.root,
      model: opts.model,
      ...(opts.layer ? { layer: opts.layer } : {}),
      ...(opts.pooling ? { pooling: opts.pooling } : {}),
      ...(opts.preprocessing ? { preprocessing: opts.preprocessing } : {}),
      ...(opts.onnxLayout ? { onnxLayout: opts.onnxLayout } : {}),
      split: opts.split,
      seed: opts.seed,
      ...(p.augmentInfo ? { augment: { spec: p.augmentInfo.spec, views: p.augmentInfo.views } } : {}),
      ...(isTta(opts.tta) ? { tta: formatTtaSpec(opts.tta) } : {}),
    },
    backbone: p.cfg,
  };
  const runPath = join(p.cacheDir, SHARD_RUN_FILE);
  const text = JSON.stringify(run, null, 2) + '\n';
  if (existsSync(runPath)) {
    const prev = readShardRun(p.cacheDir);
    if (
      prev.shards !== run.shards ||
      JSON.stringify(prev.backbone) !== JSON.stringify(run.backbone) ||
      JSON.stringify(prev.options) !== JSON.stringify(run.options)
    ) {
      throw new UserError(
        `${runPath} records a different sharded run (shard count, data, model or options differ); use another --out, or delete it to start over`,
      );
    }
  } else {
    writeFileAtomic(runPath, text);
  }
  opts.log.info(
    `shard ${shard.index}/${shard.count}: ${p.selected.length} of ${p.images.length} images; ${p.totalViews - p.missing} cached, ${p.missing} to extract`,
  );
  let seconds = 0;
  if (p.jobs.length > 0) {
    const tx = performance.now();
    await computeMissing(p.jobs, p.missing, p.onnxPath!, p.cfg, p.store, opts);
    seconds = (performance.now() - tx) / 1000;
  }
  p.store.close();
  return {
    cacheDir: p.cacheDir,
    shard,
    images: p.selected.length,
    totalImages: p.images.length,
    computed: p.missing,
    reused: p.totalViews - p.missing,
    seconds: Math.round(performance.now() - t0) / 1000,
    imagesPerSecond: seconds > 0 ? Math.round((p.missing / seconds) * 10) / 10 : null,
  };
}
