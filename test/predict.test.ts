import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { extractFeatures } from '../src/pipeline/extract.ts';
import { trainHead, saveTrainedHead } from '../src/pipeline/train.ts';
import { predictImages } from '../src/pipeline/predict.ts';
import { loadFeatureCache } from '../src/store/read.ts';
import { silentLogger } from '../src/util/log.ts';
import { makeSubset, removeDir, runCli, tempDir } from './helpers.ts';
import { DEFAULT_SPLIT } from '../src/dataset/split.ts';

test('predict reproduces the cache: same label and probability as the head on the cached features', async () => {
  const dir = tempDir('predict');
  try {
    const data = makeSubset(join(dir, 'data'), { train: 12, test: 4 });
    const cacheDir = join(dir, 'cache');
    await extractFeatures({
      data,
      out: cacheDir,
      model: 'mobilenet_v1_0.75_224',
      split: DEFAULT_SPLIT,
      seed: 42,
      batch: 8,
      workers: 4,
      threads: 2,
      maxPixels: 1e8,
      quiet: true,
      log: silentLogger,
    });
    const trained = await trainHead({ cache: cacheDir, kind: 'logreg', valFraction: 0 });
    const { path: headPath } = await saveTrainedHead(trained);
    const cache = loadFeatureCache(cacheDir);
    const test = cache.splits.test!;
    const P = await trained.head.predictProba(test.X);
    const files = test.paths.map((p) => join(data, p));
    writeFileSync(join(dir, 'notes.txt.jpg'), 'not an image');
    const { predictions, failures } = await predictImages({
      head: headPath,
      inputs: [...files, join(dir, 'notes.txt.jpg'), join(dir, 'missing.jpg')],
      batch: 4,
      workers: 2,
      threads: 2,
      maxPixels: 1e8,
      log: silentLogger,
    });
    assert.equal(predictions.length, files.length);
    assert.deepEqual(failures.map((f) => f.path).sort(), [join(dir, 'missing.jpg'), join(dir, 'notes.txt.jpg')].sort());
    predictions.forEach((p, i) => {
      const row = P.data.subarray(i * 2, i * 2 + 2);
      const best = row[1]! > row[0]! ? 1 : 0;
      assert.equal(p.label, cache.classes[best], `${p.path}`);
      assert.ok(Math.abs(p.probability - row[best]!) < 1e-5, `${p.path}: ${p.probability} vs ${row[best]}`);
    });
    // The CLI prints CSV and reports bad inputs on stderr without failing.
    const r = runCli('predict', ['--head', headPath, files[0]!, join(dir, 'missing.jpg')]);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines[0], 'path,label,probability');
    assert.equal(lines[1]!.split(',')[1], predictions[0]!.label);
    assert.match(r.stderr, /missing\.jpg: no such file/);
    const bad = runCli('predict', ['--head', join(dir, 'nohead.json'), files[0]!]);
    assert.equal(bad.status, 2);
    assert.equal(bad.stderr.trim().split('\n').length, 1);
  } finally {
    removeDir(dir);
  }
});

test('predict refuses a broken fine-tuned model folder with one line', () => {
  const dir = tempDir('badft');
  try {
    for (const body of ['{oops', '{"classes":["a"]}']) {
      writeFileSync(join(dir, 'finetune.json'), body);
      const r = runCli('predict', ['--head', dir, join(dir, 'x.jpg')]);
      assert.equal(r.status, 2);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /^predict: error: .*finetune\.json/);
    }
  } finally {
    removeDir(dir);
  }
});
