import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { prepareBackbone } from '../src/backbone/backbone.ts';
import { OrtSessionPool } from '../src/backbone/ort-pool.ts';
import { createFeatureRunner, OrtFeatureRunner } from '../src/backbone/ort-runner.ts';
import { decodeForModel } from '../src/images/decode.ts';
import { silentLogger } from '../src/util/log.ts';
import { removeDir, SHARED_DATA, tempDir } from './helpers.ts';

test('session pool: batches run side by side give the features of one session, bit for bit, each to its own caller', async () => {
  const bb = await prepareBackbone({ model: 'mobilenet_v1_0.75_224', featureInputSize: true, log: silentLogger });
  const [h, w] = bb.config.preprocessing.size;
  const per = h * w * 3;
  const D = bb.config.featureDim;
  const dir = join(SHARED_DATA(), 'train', 'dogs');
  const files = readdirSync(dir).sort().slice(0, 7);
  const images = await Promise.all(
    files.map((f) => decodeForModel(readFileSync(join(dir, f)), bb.config.preprocessing, { maxPixels: 100e6 })),
  );
  const single = await OrtFeatureRunner.create(bb.onnxPath, [h, w, 3], D, { threads: 2 });
  const pool = await createFeatureRunner(bb.onnxPath, [h, w, 3], D, { threads: 1, sessions: 2 });
  try {
    assert.ok(pool instanceof OrtSessionPool);
    assert.equal(pool.parallel, 2);
    // Batches of different sizes and images (1, 2, 3, 1 of the 7), all sent at once: more than the
    // sessions, so some wait for a free one.
    const sizes = [1, 2, 3, 1];
    const batches: { buf: Uint8Array; n: number; first: number }[] = [];
    let first = 0;
    for (const n of sizes) {
      const buf = pool.batchBuffer(n) as Uint8Array;
      assert.ok(buf.buffer instanceof SharedArrayBuffer, 'batches are built in shared memory');
      for (let i = 0; i < n; i++) buf.set(images[first + i]!, i * per);
      batches.push({ buf, n, first });
      first += n;
    }
    const pooled = await Promise.all(batches.map((b) => pool.run(b.buf, b.n)));
    const all = new Uint8Array(images.length * per);
    images.forEach((img, i) => all.set(img, i * per));
    const reference = await single.run(all, images.length);
    batches.forEach((b, k) => {
      assert.equal(pooled[k]!.length, b.n * D);
      assert.deepEqual(pooled[k], reference.subarray(b.first * D, (b.first + b.n) * D), `batch ${k}`);
    });
    // A batch outside shared memory is copied; the features are the same.
    const plain = await pool.run(all.slice(0, per), 1);
    assert.deepEqual(plain, reference.subarray(0, D));
    // A batch with the wrong shape fails that run with ORT's message, and the pool keeps working.
    await assert.rejects(pool.run(new Uint8Array(per - 3), 1), /./);
    assert.deepEqual(await pool.run(batches[0]!.buf, 1), pooled[0]);
  } finally {
    await single.release();
    await pool.release();
  }
  await assert.rejects(
    pool.run(new Uint8Array(per), 1),
    /after release/,
    'a released pool refuses work instead of hanging',
  );
});

test('session pool: a model that does not load fails create() with its error, and its threads are ended (the test process exits)', async () => {
  const dir = tempDir('ort-pool');
  try {
    const bad = join(dir, 'broken.onnx');
    writeFileSync(bad, 'not an onnx model');
    await assert.rejects(OrtSessionPool.create(bad, [8, 8, 3], 4, { sessions: 2, threads: 1 }), (e: Error) => {
      assert.ok(e instanceof Error && e.message.length > 0);
      return true;
    });
  } finally {
    removeDir(dir);
  }
});
