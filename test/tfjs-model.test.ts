import { SHARED_MODEL, SHARED_DATA } from './helpers.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import type * as tfTypes from '@tensorflow/tfjs';
import { initTf, tfBackendInfo, tfBackendName } from '../src/util/tf.ts';
import { fromHalf } from '../src/linalg/f16.ts';
import {
  loadLayersModelFromDir,
  readWeights,
  saveLayersModelToDir,
  type ManifestGroup,
} from '../src/backbone/tfjs-model.ts';
import { catOrDog, isCatOrDogClass, isDogClass, isDomesticCatClass, loadImagenetLabels, topK } from './imagenet.ts';

const MODEL_DIR = SHARED_MODEL();
const PHOTOS = join(SHARED_DATA(), 'test');
// Photos whose top-5 is unambiguous for this model (cat.4002 / cat.4008 get dog breeds in the top-5).
const CAT_PHOTOS = ['cat.4003.jpg', 'cat.4005.jpg', 'cat.4007.jpg'].map((f) => join(PHOTOS, 'cats', f));
const DOG_PHOTOS = ['dog.4001.jpg', 'dog.4003.jpg', 'dog.4005.jpg'].map((f) => join(PHOTOS, 'dogs', f));

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'convcache-tfjs-model-'));
}

async function rgb224(path: string): Promise<Buffer> {
  return sharp(path).rotate().removeAlpha().toColourspace('srgb').resize(224, 224, { fit: 'fill' }).raw().toBuffer();
}

test('initTf picks a fast backend once and leaves no emscripten process listeners behind', async () => {
  const before = [process.listeners('uncaughtException').length, process.listeners('unhandledRejection').length];
  const [tf1, tf2] = await Promise.all([initTf(), initTf()]);
  assert.equal(tf1, tf2);
  const name = tfBackendName();
  assert.ok(name === 'wasm' || name === 'tensorflow', `backend ${name}`);
  assert.equal(tf1.getBackend(), name);
  if (name === 'wasm') assert.equal(tfBackendInfo()?.wasm?.simd, true, 'wasm SIMD build expected on Node 20');
  assert.deepEqual(
    [process.listeners('uncaughtException').length, process.listeners('unhandledRejection').length],
    before,
  );
});

test('readWeights returns every manifest weight with its shape, equal to what TF.js loads', async () => {
  const manifest = JSON.parse(readFileSync(join(MODEL_DIR, 'model.json'), 'utf8')).weightsManifest as ManifestGroup[];
  const entries = manifest.flatMap((g) => g.weights);
  const weights = await readWeights(MODEL_DIR);
  assert.equal(weights.size, entries.length);
  assert.equal(entries.length, 137);
  for (const e of entries) {
    const w = weights.get(e.name);
    assert.ok(w, `missing ${e.name}`);
    assert.deepEqual(w.shape, e.shape, e.name);
    assert.equal(
      w.data.length,
      e.shape.reduce((a, b) => a * b, 1),
      e.name,
    );
    assert.equal(w.dtype, 'float32');
  }
  assert.deepEqual(weights.get('conv1/kernel')!.shape, [3, 3, 3, 24]);
  assert.deepEqual(weights.get('conv_preds/kernel')!.shape, [1, 1, 768, 1000]);

  // Same numbers as TF.js decodes (checks offsets across groups, not just shapes).
  const tf = await initTf();
  const model = await loadLayersModelFromDir(MODEL_DIR);
  try {
    const byName = new Map(model.weights.map((v) => [v.originalName, v]));
    for (const name of [
      'conv1/kernel',
      'conv_dw_7/depthwise_kernel',
      'conv_pw_13_bn/moving_variance',
      'conv_preds/bias',
    ]) {
      const v = byName.get(name);
      assert.ok(v, `TF.js has no weight ${name} (has ${[...byName.keys()].slice(0, 4).join(', ')}…)`);
      const t = v.read();
      assert.deepEqual(Array.from(await t.data()), Array.from(weights.get(name)!.data), name);
    }
  } finally {
    model.dispose();
  }
  assert.equal(tf.memory().numTensors, 0);
});

test('readWeights decodes int32, uint8/uint16 (scale, min) and float16 like tf.io.decodeWeights', async () => {
  const tf = await initTf();
  const dir = tmp();
  try {
    const f32 = new Float32Array([1.5, -2, 3.25, 0]);
    const i32 = new Int32Array([7, -3, 16777216]);
    const u8 = new Uint8Array([0, 1, 128, 255]);
    const u16 = new Uint16Array([0, 1, 40000, 65535]);
    // float16: 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), -0
    const f16 = new Uint16Array([0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000]);
    const groups: ManifestGroup[] = [
      {
        // one group split over two shard files, cut in the middle of a weight
        paths: ['g1-shard1of2', 'g1-shard2of2'],
        weights: [
          { name: 'a/f32', shape: [2, 2], dtype: 'float32' },
          { name: 'a/i32', shape: [3], dtype: 'int32' },
        ],
      },
      {
        paths: ['g2'],
        weights: [
          { name: 'b/u8', shape: [4], dtype: 'float32', quantization: { dtype: 'uint8', scale: 0.5, min: -1 } },
          { name: 'b/u16', shape: [2, 2], dtype: 'float32', quantization: { dtype: 'uint16', scale: 0.001, min: 2 } },
          { name: 'b/f16', shape: [6], dtype: 'float32', quantization: { dtype: 'float16' } },
          { name: 'b/u8int', shape: [4], dtype: 'int32', quantization: { dtype: 'uint8', scale: 0.3, min: 1 } },
        ],
      },
    ];
    const g1 = Buffer.concat([Buffer.from(f32.buffer), Buffer.from(i32.buffer)]);
    const g2 = Buffer.concat([Buffer.from(u8), Buffer.from(u16.buffer), Buffer.from(f16.buffer), Buffer.from(u8)]);
    writeFileSync(join(dir, 'g1-shard1of2'), g1.subarray(0, 10));
    writeFileSync(join(dir, 'g1-shard2of2'), g1.subarray(10));
    writeFileSync(join(dir, 'g2'), g2);
    writeFileSync(join(dir, 'model.json'), JSON.stringify({ modelTopology: {}, weightsManifest: groups }));

    const w = await readWeights(dir);
    assert.deepEqual([...w.keys()], ['a/f32', 'a/i32', 'b/u8', 'b/u16', 'b/f16', 'b/u8int']);
    assert.deepEqual(Array.from(w.get('a/f32')!.data), Array.from(f32));
    assert.deepEqual(w.get('a/f32')!.shape, [2, 2]);
    assert.deepEqual(Array.from(w.get('a/i32')!.data), [7, -3, 16777216]);
    assert.equal(w.get('a/i32')!.dtype, 'int32');
    assert.deepEqual(Array.from(w.get('b/u8')!.data), [-1, -0.5, 63, 126.5]);
    assert.deepEqual(Array.from(w.get('b/f16')!.data), [1, -2, 0.5, 65504, 2 ** -24, -0]);
    const special = fromHalf(Uint16Array.of(0x7c00, 0xfc00, 0x7e00), new Float32Array(3));
    assert.deepEqual([special[0], special[1]], [Infinity, -Infinity]);
    assert.ok(Number.isNaN(special[2]));

    // Cross-check every weight against TF.js's own decoder on the same bytes.
    for (const [gi, bytes] of [g1, g2].entries()) {
      const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      const decoded = tf.io.decodeWeights(ab, groups[gi]!.weights as tfTypes.io.WeightsManifestEntry[]);
      for (const [name, t] of Object.entries(decoded)) {
        assert.deepEqual(t.shape, w.get(name)!.shape, name);
        const expect = Array.from(await t.data());
        assert.deepEqual(
          Array.from(w.get(name)!.data),
          expect.map((x) => Math.fround(x)),
          name,
        );
        t.dispose();
      }
    }

    // A truncated shard is an error, not silently short weights.
    writeFileSync(join(dir, 'g2'), g2.subarray(0, g2.length - 1));
    await assert.rejects(readWeights(dir), /needs bytes/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ImageNet labels: dog breeds are 151–268, domestic cats 281–285', async () => {
  const labels = await loadImagenetLabels(MODEL_DIR);
  assert.equal(labels.length, 1000);
  assert.equal(labels[150], 'sea lion');
  assert.equal(labels[151], 'Chihuahua');
  assert.equal(labels[268], 'Mexican hairless');
  assert.match(labels[269]!, /^timber wolf/);
  assert.match(labels[280]!, /^grey fox/);
  assert.deepEqual(
    labels.slice(281, 286).map((l) => l.split(',')[0]),
    ['tabby', 'tiger cat', 'Persian cat', 'Siamese cat', 'Egyptian cat'],
  );
  assert.match(labels[286]!, /^cougar/);
  assert.ok(isDogClass(151) && isDogClass(268) && !isDogClass(150) && !isDogClass(269));
  assert.ok(isDomesticCatClass(281) && isDomesticCatClass(285) && !isDomesticCatClass(286) && !isDomesticCatClass(280));
  assert.ok(isCatOrDogClass(200) && isCatOrDogClass(283) && !isCatOrDogClass(0) && !isCatOrDogClass(999));
  assert.equal(catOrDog(282), 'cat');
  assert.equal(catOrDog(207), 'dog');
  assert.equal(catOrDog(500), null);

  const probs = new Float32Array([0.1, 0.4, 0.05, 0.4, 0.05]);
  assert.deepEqual(
    topK(probs, 3, ['a', 'b', 'c', 'd', 'e']).map((e) => [e.index, e.label]),
    [
      [1, 'b'],
      [3, 'd'],
      [0, 'a'],
    ],
  );
  assert.deepEqual(
    topK(probs, 10).map((e) => e.index),
    [1, 3, 0, 2, 4],
  );
  assert.equal(topK(probs, 0).length, 0);
  assert.equal(topK(probs, 1)[0]!.label, '1');
});

test('pretrained MobileNet v1 recognises cats and dogs (and needs the [-1, 1] preprocessing)', async () => {
  const tf = await initTf();
  const labels = await loadImagenetLabels(MODEL_DIR);
  const model = await loadLayersModelFromDir(MODEL_DIR);
  const photos = [...CAT_PHOTOS, ...DOG_PHOTOS];
  const raw = await Promise.all(photos.map(rgb224));
  const px = 224 * 224 * 3;
  const input = (scale: (v: number) => number): tfTypes.Tensor4D => {
    const buf = new Float32Array(photos.length * px);
    raw.forEach((b, i) => {
      for (let j = 0; j < px; j++) buf[i * px + j] = scale(b[j]!);
    });
    return tf.tensor4d(buf, [photos.length, 224, 224, 3]);
  };
  const predict = async (x: tfTypes.Tensor4D): Promise<Float32Array> => {
    const y = model.predict(x) as tfTypes.Tensor;
    try {
      assert.deepEqual(y.shape, [photos.length, 1000]);
      return (await y.data()) as Float32Array;
    } finally {
      x.dispose();
      y.dispose();
    }
  };
  try {
    const right = await predict(input((v) => v / 127.5 - 1));
    const wrong = await predict(input((v) => v)); // raw 0..255
    let wrongHits = 0;
    photos.forEach((p, i) => {
      const want = i < CAT_PHOTOS.length ? 'cat' : 'dog';
      const probs = right.subarray(i * 1000, (i + 1) * 1000);
      let sum = 0;
      for (const v of probs) sum += v;
      assert.ok(Math.abs(sum - 1) < 1e-3, `softmax sums to ${sum}`);
      const top = topK(probs, 5, labels);
      assert.ok(
        top.some((e) => catOrDog(e.index) === want),
        `${p}: no ${want} class in top-5: ${top.map((e) => `${e.label} ${e.prob.toFixed(2)}`).join('; ')}`,
      );
      const wrongTop = topK(wrong.subarray(i * 1000, (i + 1) * 1000), 5);
      if (wrongTop.some((e) => catOrDog(e.index) === want)) wrongHits++;
    });
    // With raw 0..255 inputs the network saturates (every photo becomes 'window screen'); allow one
    // lucky hit. Note that [0, 1] scaling is a subtler mistake: it still gets most photos right.
    assert.ok(wrongHits <= 1, `raw 0..255 input still got ${wrongHits}/${photos.length} right`);
  } finally {
    model.dispose();
  }
  assert.equal(tf.memory().numTensors, 0);
});

test('saveLayersModelToDir → loadLayersModelFromDir round trip gives identical outputs', async () => {
  const tf = await initTf();
  const dir = tmp();
  const out = join(dir, 'nested', 'model');
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape: [8, 8, 3], filters: 4, kernelSize: 3, activation: 'relu', name: 'c1' }),
      tf.layers.batchNormalization({ name: 'bn' }),
      tf.layers.depthwiseConv2d({ kernelSize: 3, name: 'dw' }),
      tf.layers.globalAveragePooling2d({ name: 'gap' }),
      tf.layers.dense({ units: 5, activation: 'softmax', name: 'fc' }),
    ],
  });
  let loaded: tfTypes.LayersModel | undefined;
  try {
    // Non-trivial BN statistics so they must survive the round trip too.
    const bn = model.getLayer('bn');
    tf.tidy(() => {
      const [g, b, m, v] = bn.getWeights();
      bn.setWeights([g!.add(0.5), b!.add(0.1), m!.add(0.2), v!.mul(3)]);
    });

    const res = await saveLayersModelToDir(model, out);
    assert.ok((res.modelArtifactsInfo.weightDataBytes ?? 0) > 0);
    assert.deepEqual(readdirSync(out).sort(), ['model.json', 'weights.bin']); // no temp files left
    const json = JSON.parse(readFileSync(join(out, 'model.json'), 'utf8'));
    assert.deepEqual(
      json.weightsManifest.map((g: ManifestGroup) => g.paths),
      [['weights.bin']],
    );
    assert.equal(json.format, 'layers-model');

    loaded = await loadLayersModelFromDir(out);
    const x = tf.randomUniform([2, 8, 8, 3], -1, 1, 'float32', 42);
    const [y1, y2] = tf.tidy(() => [model.predict(x) as tfTypes.Tensor, loaded!.predict(x) as tfTypes.Tensor]);
    assert.deepEqual(Array.from(await y2!.data()), Array.from(await y1!.data()));
    tf.dispose([x, y1, y2]);

    // readWeights (no TF.js) sees the same values the model holds.
    const weights = await readWeights(out);
    assert.equal(weights.size, model.weights.length);
    for (const v of model.weights) {
      const t = v.read();
      assert.deepEqual(Array.from(weights.get(v.originalName)!.data), Array.from(await t.data()), v.originalName);
    }

    // Saving again over an existing model replaces it.
    await saveLayersModelToDir(loaded, out);
    assert.deepEqual(readdirSync(out).sort(), ['model.json', 'weights.bin']);
  } finally {
    model.dispose();
    loaded?.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(tf.memory().numTensors, 0);
});
