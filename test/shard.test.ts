import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { extractFeatures } from '../src/pipeline/extract.ts';
import { resolveShard, shardOf } from '../src/pipeline/shard.ts';
import { silentLogger } from '../src/util/log.ts';
import { makeSubset, removeDir, tempDir } from './helpers.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const SIZE = '64';

test("shard index: --shard K/N and the job engines' environment variables; stable path hash", () => {
  assert.deepEqual(resolveShard({ shard: '2/4' }, {}), { index: 2, count: 4 });
  assert.deepEqual(resolveShard({ shards: 4 }, { JOB_COMPLETION_INDEX: '3' }), { index: 3, count: 4 });
  assert.deepEqual(resolveShard({}, { SLURM_ARRAY_TASK_ID: '5', SLURM_ARRAY_TASK_COUNT: '8' }), { index: 5, count: 8 });
  assert.deepEqual(
    resolveShard({}, { SLURM_ARRAY_TASK_ID: '8', SLURM_ARRAY_TASK_COUNT: '8', SLURM_ARRAY_TASK_MIN: '1' }),
    { index: 7, count: 8 },
  );
  assert.deepEqual(resolveShard({ shards: 10 }, { AWS_BATCH_JOB_ARRAY_INDEX: '9' }), { index: 9, count: 10 });
  assert.equal(resolveShard({}, { JOB_COMPLETION_INDEX: '1' }), undefined, 'an index without a count does not shard');
  assert.throws(() => resolveShard({ shard: '4/4' }, {}), /index must be from 0 to 3/);
  assert.throws(() => resolveShard({ shard: 'x' }, {}), /K\/N/);
  assert.throws(() => resolveShard({ shards: 4 }, {}), /needs a shard index/);
  assert.throws(() => resolveShard({ shards: 4 }, { JOB_COMPLETION_INDEX: '-1' }), /non-negative integer/);
  // The hash is part of the contract (shards of one run may run different builds): pin it.
  assert.deepEqual(
    ['cats/cat.1.jpg', 'dogs/dog.2.jpg', 'ünïcode/ä.jpg'].map((p) => shardOf(p, 1000)),
    [102, 481, 33],
  );
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 4000; i++) counts[shardOf(`c/${i}.jpg`, 4)]! += 1;
  for (const c of counts) assert.ok(c > 850 && c < 1150, `balanced shards: ${counts}`);
});

function extractCli(args: string[], env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', 'src/cli/convcache.ts', 'extract', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  let stderr = '';
  child.stderr?.on('data', (d) => {
    stderr += String(d);
  });
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stderr })));
}

const OUTPUTS = ['features.arrow', 'train_features.npy', 'train_labels.npy', 'test_features.npy', 'test_labels.npy'];

test('cluster simulation: 4 shards at once on one --out (one SIGKILLed and restarted), merge → byte-identical to one process; missing shard fails cleanly', async () => {
  const dir = tempDir('shards');
  try {
    const data = makeSubset(join(dir, 'data'), { train: 80, test: 20 }); // 200 images
    const single = join(dir, 'single');
    // The single-process reference (also converts the model once, so the shards find it cached).
    await extractFeatures({
      data,
      out: single,
      model: 'mobilenet_v1_0.75_224',
      split: { train: 0.8, val: 0.1, test: 0.1 },
      seed: 42,
      batch: 8,
      workers: 2,
      threads: 1,
      maxPixels: 100e6,
      quiet: true,
      log: silentLogger,
      preprocessing: { size: [64, 64] },
    });

    const out = join(dir, 'cluster');
    const args = [
      '--data',
      data,
      '--out',
      out,
      '--input-size',
      SIZE,
      '--shards',
      '4',
      '--batch',
      '2',
      '--threads',
      '1',
      '--workers',
      '1',
      '--quiet',
    ];
    // Shard 1 is killed with SIGKILL right after committing its 2nd record chunk (the store's test
    // hook: certain, not a race with a timer); the others run to the end beside it.
    const children = [0, 1, 2, 3].map((k) =>
      extractCli(args, {
        JOB_COMPLETION_INDEX: String(k),
        ...(k === 1 ? { CONVCACHE_TEST_CRASH_AFTER_CHUNKS: '2' } : {}),
      }),
    );
    const results = children.map(exited);
    const recs = join(out, 'records');
    const mine = () =>
      existsSync(recs) ? readdirSync(recs).filter((f) => f.startsWith('chunk-s1of4-') && f.endsWith('.rec')).length : 0;
    const killed = await results[1]!;
    assert.equal(killed.signal, 'SIGKILL', `shard 1 died of SIGKILL (${killed.code}: ${killed.stderr})`);
    assert.equal(mine(), 2, 'shard 1 committed exactly the chunks before the kill');
    for (const k of [0, 2, 3]) {
      const r = await results[k]!;
      assert.equal(r.code, 0, `shard ${k}: ${r.stderr}`);
    }

    // Merge now: shard 1 is incomplete → one line naming it, nothing written.
    const merge = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'src/cli/convcache.ts', 'merge', '--out', out, '--quiet'],
      { cwd: ROOT, encoding: 'utf8' },
    );
    assert.equal(merge.status, 2, merge.stderr);
    const lines = merge.stderr.split('\n').filter((l) => l.trim() && !l.startsWith('npm warn'));
    assert.equal(lines.length, 1, merge.stderr);
    assert.match(lines[0]!, /^merge: error: \d+ images \(\d+ records\) have no features yet, from shard 1 of 4;/);
    for (const f of [...OUTPUTS, 'manifest.json'])
      assert.ok(!existsSync(join(out, f)), `${f} not written by a failed merge`);

    // Restart the killed shard: it resumes (its committed chunks are reused).
    const again = await exited(extractCli(args, { JOB_COMPLETION_INDEX: '1' }));
    assert.equal(again.code, 0, again.stderr);
    assert.ok(
      existsSync(join(recs, 'chunk-s1of4-00000000.rec')) && existsSync(join(recs, 'chunk-s1of4-00000002.rec')),
      'the restarted shard kept its chunks and continued after them',
    );
    const merged = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'src/cli/convcache.ts', 'merge', '--out', out, '--quiet'],
      { cwd: ROOT, encoding: 'utf8' },
    );
    assert.equal(merged.status, 0, merged.stderr);
    for (const f of OUTPUTS)
      assert.ok(
        readFileSync(join(out, f)).equals(readFileSync(join(single, f))),
        `${f} differs from the single-process run`,
      );
    const manifestOf = (d: string) => {
      const m = JSON.parse(readFileSync(join(d, 'manifest.json'), 'utf8'));
      delete m.timings;
      return JSON.stringify(m, null, 2);
    };
    assert.equal(manifestOf(out), manifestOf(single), 'manifest.json equal apart from timings');
    const mt = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    assert.equal(mt.timings.computed, 0, 'merge computed nothing');
    assert.equal(mt.timings.reused, 200);

    // A plain extract with the same options after all shards finished: computes nothing, same files.
    for (const f of OUTPUTS) rmSync(join(out, f));
    const plain = await extractFeatures({
      data,
      out,
      model: 'mobilenet_v1_0.75_224',
      split: { train: 0.8, val: 0.1, test: 0.1 },
      seed: 42,
      batch: 8,
      workers: 2,
      threads: 1,
      maxPixels: 100e6,
      quiet: true,
      log: silentLogger,
      preprocessing: { size: [64, 64] },
    });
    assert.equal(plain.manifest.timings.computed, 0);
    for (const f of OUTPUTS)
      assert.ok(readFileSync(join(out, f)).equals(readFileSync(join(single, f))), `${f} differs after a plain extract`);
  } finally {
    removeDir(dir);
  }
});
