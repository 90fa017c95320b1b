import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertSpatialSizeFree, parseKerasGraph, withInputSize } from '../src/backbone/keras-graph.ts';
import { atInputSize, loadKerasGraph, prepareBackbone } from '../src/backbone/backbone.ts';
import { silentLogger } from '../src/util/log.ts';
import { convertKerasGraph, type Pooling } from '../src/backbone/convert.ts';
import { encodeModel } from '../src/onnx/write.ts';
import { OrtFeatureRunner } from '../src/backbone/ort-runner.ts';
import { loadLayersModelFromDir, saveLayersModelToDir } from '../src/backbone/tfjs-model.ts';
import { findBackbone } from '../src/backbone/registry.ts';
import { decodeForModel } from '../src/images/decode.ts';
import { catOrDog, loadImagenetLabels, topK } from './imagenet.ts';
import { initTf } from '../src/util/tf.ts';
import { UserError } from '../src/util/errors.ts';
import { SHARED_DATA, SHARED_MODEL, modelGraph, modelWeights, removeDir, tempDir } from './helpers.ts';

const PRE = findBackbone('mobilenet_v1_0.75_224')!.preprocessing;

function photos(): { path: string; kind: 'cat' | 'dog' }[] {
  const out: { path: string; kind: 'cat' | 'dog' }[] = [];
  for (const [cls, kind] of [
    ['cats', 'cat'],
    ['dogs', 'dog'],
  ] as const) {
    const dir = join(SHARED_DATA(), 'test', cls);
    for (const f of readdirSync(dir).sort().slice(0, 4)) out.push({ path: join(dir, f), kind });
  }
  return out;
}

async function decodeAll(paths: string[]): Promise<Uint8Array> {
  const per = 224 * 224 * 3;
  const buf = new Uint8Array(paths.length * per);
  for (let i = 0; i < paths.length; i++)
    buf.set(await decodeForModel(readFileSync(paths[i]!), PRE, { maxPixels: 1e8 }), i * per);
  return buf;
}

async function ortFeatures(
  modelDir: string,
  layer: string,
  pooling: Pooling,
  pixels: Uint8Array,
  n: number,
  input: [number, number, number] = [224, 224, 3],
  pre = PRE,
) {
  const conv = convertKerasGraph(await modelGraph(modelDir), await modelWeights(modelDir), {
    layer,
    pooling,
    preprocessing: pre,
  });
  const runner = await OrtFeatureRunner.create(encodeModel(conv.model), input, conv.featureDim, { threads: 2 });
  try {
    return { feats: await runner.run(pixels, n), dim: conv.featureDim };
  } finally {
    await runner.release();
  }
}

/** max |a-b| relative to the feature scale (max |b|), the parity criterion. */
function relMaxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return d / scale;
}

test('pretrained sanity through ONNX Runtime: cat/dog ImageNet classes in the top-5', async () => {
  const ps = photos();
  const { feats } = await ortFeatures(
    SHARED_MODEL(),
    'reshape_2',
    'none',
    await decodeAll(ps.map((p) => p.path)),
    ps.length,
  );
  const labels = await loadImagenetLabels(SHARED_MODEL());
  let hits = 0;
  ps.forEach((p, i) => {
    const probs = feats.subarray(i * 1000, (i + 1) * 1000);
    const sum = probs.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-4, `softmax output sums to ${sum}`);
    if (topK(probs, 5, labels).some((t) => catOrDog(t.index) === p.kind)) hits++;
  });
  // 8 photos, first 4 of each class; one cat photo in this set is famously dog-like, so require 7 of 8.
  assert.ok(hits >= 7, `only ${hits}/8 photos had their animal in the top-5`);
});

test('converter parity: ORT features equal TF.js (wasm) features on real images', async () => {
  const tf = await initTf();
  const ps = photos().slice(2, 6);
  const pixels = await decodeAll(ps.map((p) => p.path));
  const model = await loadLayersModelFromDir(SHARED_MODEL());
  const x = tf.tidy(() => tf.tensor4d(Float32Array.from(pixels), [ps.length, 224, 224, 3]).div(127.5).sub(1));
  try {
    for (const [layer, pooling] of [
      ['conv_pw_13_relu', 'avg'],
      ['conv_pw_13_relu', 'max'],
      ['conv_pw_6_relu', 'none'],
      ['conv_dw_2_relu', 'avg'],
    ] as const) {
      const sub = tf.model({ inputs: model.inputs, outputs: model.getLayer(layer).output as any });
      const ref = tf.tidy(() => {
        const y = sub.predict(x) as any;
        const pooled =
          pooling === 'avg' ? y.mean([1, 2]) : pooling === 'max' ? y.max([1, 2]) : y.reshape([ps.length, -1]);
        return pooled.dataSync() as Float32Array;
      });
      const { feats } = await ortFeatures(SHARED_MODEL(), layer, pooling, pixels, ps.length);
      const rel = relMaxDiff(feats, ref);
      assert.ok(rel <= 1e-4, `${layer}/${pooling}: max |delta| = ${rel} of the feature scale`);
    }
  } finally {
    x.dispose();
    model.dispose();
  }
});

test('converter covers the common Keras layer types (synthetic model, TF.js vs ORT)', async () => {
  const tf = await initTf();
  const dir = tempDir('conv');
  try {
    const inp = tf.input({ shape: [20, 20, 3] });
    const L = tf.layers;
    let a = L.zeroPadding2d({
      padding: [
        [1, 0],
        [1, 0],
      ],
    }).apply(inp) as any;
    a = L.conv2d({ filters: 8, kernelSize: 3, strides: 2, padding: 'valid', useBias: false }).apply(a);
    a = L.batchNormalization({ epsilon: 1e-3 }).apply(a);
    a = L.reLU({ maxValue: 6 }).apply(a);
    const b = L.depthwiseConv2d({ kernelSize: 3, padding: 'same', depthMultiplier: 2, activation: 'relu' }).apply(
      a,
    ) as any;
    const c = L.separableConv2d({ filters: 16, kernelSize: 3, padding: 'same', activation: 'tanh' }).apply(a) as any;
    let m = L.add().apply([b, c]) as any;
    m = L.concatenate().apply([m, L.conv2d({ filters: 4, kernelSize: 1, activation: 'sigmoid' }).apply(m) as any]);
    const p1 = L.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same' }).apply(m) as any;
    const p2 = L.averagePooling2d({ poolSize: 2, strides: 2, padding: 'same' }).apply(m) as any;
    let f = L.multiply().apply([p1, p2]) as any;
    f = L.activation({ activation: 'elu' }).apply(f);
    f = L.flatten().apply(f);
    f = L.dropout({ rate: 0.5 }).apply(f);
    f = L.dense({ units: 10, activation: 'softmax' }).apply(f);
    const model = tf.model({ inputs: inp, outputs: f as any });
    // Non-trivial BN statistics so folding is actually exercised.
    for (const w of model.weights) {
      if (w.name.includes('moving_variance')) w.write(tf.randomUniform(w.shape as number[], 0.5, 2, 'float32', 1));
      else if (w.name.includes('moving_mean') || w.name.includes('beta') || w.name.includes('bias'))
        w.write(tf.randomNormal(w.shape as number[], 0, 0.3, 'float32', 2));
    }
    await saveLayersModelToDir(model, dir);
    const pixels = new Uint8Array(3 * 20 * 20 * 3).map((_, i) => (i * 37 + 11) % 256);
    const pre = { ...PRE, size: [20, 20] as [number, number] };
    const graph = parseKerasGraph(JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8')));
    const layers = graph.layers.filter((l) => l.className !== 'InputLayer');
    assert.equal(layers.length, 16, 'every layer of the synthetic model is checked');
    for (const layer of layers) {
      const x = tf.tidy(() => tf.tensor4d(Float32Array.from(pixels), [3, 20, 20, 3]).div(127.5).sub(1));
      const sub = tf.model({ inputs: model.inputs, outputs: model.getLayer(layer.name).output as any });
      const ref = tf.tidy(() => (sub.predict(x) as any).reshape([3, -1]).dataSync() as Float32Array);
      x.dispose();
      const { feats } = await ortFeatures(dir, layer.name, 'none', pixels, 3, [20, 20, 3], pre);
      const rel = relMaxDiff(feats, ref);
      assert.ok(rel <= 1e-4, `${layer.name} (${layer.className}): max |delta| = ${rel}`);
    }
    model.dispose();
  } finally {
    removeDir(dir);
  }
});

test('converter refuses unsupported layers and unknown cut layers by name', () => {
  const json = {
    modelTopology: {
      class_name: 'Sequential',
      config: [
        {
          class_name: 'Conv2D',
          config: { name: 'c', filters: 2, kernel_size: [1, 1], batch_input_shape: [null, 4, 4, 3] },
        },
        { class_name: 'LSTM', config: { name: 'weird' } },
      ],
    },
    weightsManifest: [],
  };
  assert.throws(
    () => parseKerasGraph(json),
    (e: unknown) => e instanceof UserError && /weird.*LSTM/.test(e.message),
  );
  const ok = {
    modelTopology: { class_name: 'Sequential', config: [json.modelTopology.config[0]] },
    weightsManifest: [],
  };
  const g = parseKerasGraph(ok);
  assert.throws(
    () => convertKerasGraph(g, new Map(), { layer: 'nope', pooling: 'avg', preprocessing: { ...PRE, size: [4, 4] } }),
    /no layer named 'nope'/,
  );
});

test('input size of a conv base can change (shapes re-inferred); flattening a feature map refuses it', () => {
  const loaded = loadKerasGraph(SHARED_MODEL());
  const native = loaded.graph;
  const { graph } = atInputSize(loaded, [256, 256], 'conv_pw_13_relu');
  assert.equal(atInputSize(loaded, [224, 224], 'conv_pw_13_relu'), loaded, 'its own size: the model itself');
  assert.deepEqual(graph.inputShape.slice(0, 2), [256, 256]);
  assert.deepEqual(graph.layers.find((l) => l.name === 'conv_pw_13_relu')!.shape, [8, 8, 768]);
  assertSpatialSizeFree(native, graph, 'conv_pw_13_relu');
  assertSpatialSizeFree(native, graph, 'reshape_2'); // GAP first: the ImageNet classifier works at any size
  const seq = {
    modelTopology: {
      class_name: 'Sequential',
      config: [
        {
          class_name: 'Conv2D',
          config: { name: 'c', filters: 2, kernel_size: [1, 1], batch_input_shape: [null, 4, 4, 3] },
        },
        { class_name: 'Flatten', config: { name: 'flat' } },
        { class_name: 'Dense', config: { name: 'd', units: 2 } },
      ],
    },
    weightsManifest: [],
  };
  const small = parseKerasGraph(seq);
  const big = parseKerasGraph(withInputSize(seq, [8, 8]));
  assert.deepEqual(big.layers.find((l) => l.name === 'c')!.shape, [8, 8, 2]);
  assertSpatialSizeFree(small, big, 'c');
  assert.throws(
    () => assertSpatialSizeFree(small, big, 'd'),
    (e: unknown) => e instanceof UserError && /flat/.test(e.message),
  );
});

test('extract --input-size 256 on MobileNet: the converted base takes 256×256 images and pools an 8×8 map', async () => {
  const dir = tempDir('size256');
  try {
    const b = await prepareBackbone({
      model: SHARED_MODEL(),
      preprocessing: { size: [256, 256] },
      modelCacheDir: dir,
      log: silentLogger,
    });
    assert.deepEqual(b.config.featureMapShape, [8, 8, 768]);
    assert.deepEqual(b.config.preprocessing.size, [256, 256]);
    const pre = b.config.preprocessing;
    const files = photos()
      .slice(0, 2)
      .map((p) => p.path);
    const pixels = new Uint8Array(2 * 256 * 256 * 3);
    for (let i = 0; i < 2; i++)
      pixels.set(await decodeForModel(readFileSync(files[i]!), pre, { maxPixels: 1e8 }), i * 256 * 256 * 3);
    const r = await OrtFeatureRunner.create(b.onnxPath, [256, 256, 3], b.config.featureDim, { threads: 2 });
    const f = await r.run(pixels, 2);
    await r.release();
    assert.equal(f.length, 2 * 768);
    assert.ok(f.every((v) => Number.isFinite(v) && v >= 0) && f.some((v) => v > 0), 'pooled ReLU features');
  } finally {
    removeDir(dir);
  }
});
