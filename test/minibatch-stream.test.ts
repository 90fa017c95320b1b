import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { syntheticCache } from '../src/bench/scale-compare.ts';
import { arrowBlockIndex, readArrowBlock } from '../src/store/batches.ts';
import { ARROW_FILE } from '../src/store/manifest.ts';
import { loadFeatureCache } from '../src/store/read.ts';
import { cacheRowBatches, trainHead, trainHeadStreaming } from '../src/pipeline/train.ts';
import type { RowBatch } from '../src/heads/types.ts';
import { silentLogger } from '../src/util/log.ts';
import { removeDir, tempDir } from './helpers.ts';

/**
 * Training from disk: a cache larger than one Arrow record batch (8192 rows), read in shuffled
 * blocks, gives the mini-batch heads every training row once per pass, and a model as good as
 * the same solver on the loaded split.
 */
let root: string;
let dir: string;
before(() => {
  root = tempDir('mb-stream');
  // 20 000 rows × 16 (3 record batches; 16 000 train rows, paths sorted by class = long class runs).
  dir = syntheticCache(20000, 16, silentLogger, join(root, 'cache'));
});
after(() => removeDir(root));

async function collect(it: AsyncIterable<RowBatch> | Iterable<RowBatch>) {
  const rows: { y: number; s: number }[] = [];
  for await (const b of it) {
    for (let i = 0; i < b.X.rows; i++) {
      let s = 0;
      for (let j = 0; j < b.X.cols; j++) s += b.X.data[i * b.X.cols + j]! * (j + 1);
      rows.push({ y: b.y[i]!, s });
    }
  }
  return rows;
}

test('arrowBlockIndex / readArrowBlock read any record batch alone, equal to the sequential read', () => {
  const path = join(dir, ARROW_FILE);
  const index = arrowBlockIndex(path);
  assert.equal(index.blocks.length, 3);
  const last = readArrowBlock(path, index, 2);
  assert.equal(last.numRows, 20000 - 2 * 8192);
  assert.throws(() => readArrowBlock(path, index, 3), /no record batch 3/);
});

test('cacheRowBatches: a shuffled pass holds every training row once, in a seeded order that mixes classes', async () => {
  const src = cacheRowBatches(dir, 'train', 1);
  const train = loadFeatureCache(dir).splits.train!;
  assert.equal(src.rows, train.y.length);
  const plain = await collect(src.pass(1000));
  const shuffled = await collect(src.pass(256, { seed: 7 }));
  const again = await collect(src.pass(256, { seed: 7 }));
  const other = await collect(src.pass(256, { seed: 8 }));
  assert.equal(shuffled.length, train.y.length);
  const key = (r: { y: number; s: number }) => `${r.y}:${r.s}`;
  assert.deepEqual(shuffled.map(key).sort(), plain.map(key).sort());
  assert.deepEqual(again, shuffled);
  assert.notDeepEqual(other, shuffled);
  // Row order on disk is by path (here: by class); the first 256 shuffled rows hold 2+ classes.
  assert.equal(new Set(plain.slice(0, 256).map((r) => r.y)).size, 1);
  assert.ok(new Set(shuffled.slice(0, 256).map((r) => r.y)).size >= 2);
});

test('train-head --stream (logreg, linear SVM) matches the loaded mini-batch fit within 1 point', async () => {
  for (const [kind, params] of [
    ['logreg', { solver: 'minibatch' }],
    ['svm', { kernel: 'linear', solver: 'minibatch' }],
  ] as const) {
    const loaded = await trainHead({ cache: dir, kind, params, refit: false, seed: 3 });
    const streamed = await trainHeadStreaming({ dir, kind, params, seed: 3 });
    assert.ok(loaded.testAccuracy! > 0.5, `${kind} learns (${loaded.testAccuracy})`);
    assert.ok(
      Math.abs(streamed.testAccuracy! - loaded.testAccuracy!) <= 0.01,
      `${kind}: streamed ${streamed.testAccuracy} vs loaded ${loaded.testAccuracy}`,
    );
    assert.match((streamed.head as { variant_?: string }).variant_ ?? '', /16000 training rows streamed from disk/);
  }
  await assert.rejects(trainHeadStreaming({ dir, kind: 'rf' }), /rf cannot train from streamed batches/);
});

test('compare above holdoutAbove: chosen on the validation split, no CV, no refit, and the report says why', async () => {
  const { compareHeads } = await import('../src/pipeline/compare.ts');
  const out = join(root, 'report');
  const { report } = await compareHeads({
    cache: dir,
    out,
    heads: ['logreg', 'knn'],
    cv: 5,
    holdoutAbove: 10000,
    saveHeads: 'none',
    extraRowsFile: null,
  });
  assert.equal(report.options.cv, null);
  assert.match(
    report.options.note ?? '',
    /18000 train\+val rows > holdoutAbove=10000: .*2000-row validation split instead of 5-fold CV/,
  );
  assert.equal(report.selection?.by, 'val');
  for (const h of report.heads) {
    assert.equal(h.cv, undefined);
    assert.equal(h.refit, undefined);
  }
  const md = (await import('node:fs')).readFileSync(join(out, 'report.md'), 'utf8');
  assert.match(md, /\*\*selection\*\*: 18000 train\+val rows/);
  // Below the threshold the requested CV runs.
  const small = await compareHeads({
    cache: dir,
    out,
    heads: ['logreg'],
    cv: 2,
    saveHeads: 'none',
    extraRowsFile: null,
  });
  assert.equal(small.report.options.cv, 2);
  assert.equal(small.report.options.note, undefined);
});
