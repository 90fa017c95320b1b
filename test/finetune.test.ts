import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, existsSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import { convertKerasGraph } from '../src/backbone/convert.ts';
import { encodeModel } from '../src/onnx/write.ts';
import { OrtFeatureRunner } from '../src/backbone/ort-runner.ts';
import { findBackbone } from '../src/backbone/registry.ts';
import { loadLayersModelFromDir, readWeights } from '../src/backbone/tfjs-model.ts';
import { decodeForModel } from '../src/images/decode.ts';
import { parseAugmentSpec } from '../src/images/augment.ts';
import { Rng } from '../src/linalg/random.ts';
import { initTf } from '../src/util/tf.ts';
import { silentLogger } from '../src/util/log.ts';
import { UserError } from '../src/util/errors.ts';
import {
  blockEnds,
  initialTopParams,
  planTop,
  resolveBoundary,
  type TopPlan,
  type ParamTensor,
} from '../src/finetune/plan.ts';
import { TopModel } from '../src/finetune/top.ts';
import { createTopEngine } from '../src/finetune/engine.ts';
import { predictImages } from '../src/pipeline/predict.ts';
import { FrozenBase } from '../src/finetune/frozen.ts';
import { fromHalf, toHalf } from '../src/linalg/f16.ts';
import { runFinetune, finetuneInputSize, FINETUNE_DEFAULTS, type FinetuneOptions } from '../src/finetune/recipe.ts';
import { selectThenRefit, VALIDATION_DIR } from '../src/finetune/select.ts';
import { VALIDATION_MAXIMA } from '../src/finetune/options.ts';
import { betaSample, cosineLr, cutmixBox, pasteCutmix, phaseLr, softTargets } from '../src/finetune/phases.ts';
import {
  SHARED_DATA,
  SHARED_MODEL,
  makeSubset,
  modelGraph,
  modelWeights,
  removeDir,
  ROOT,
  runCli,
  sharedGraph,
  sharedWeights,
  tempDir,
} from './helpers.ts';
import { decodeNpy } from '../src/store/npy.ts';

const PRE = findBackbone('mobilenet_v1_0.75_224')!.preprocessing;
const CUT = 'conv_pw_13_relu';
const temps: string[] = [];
after(() => {
  for (const d of temps) removeDir(d);
});

function tmp(prefix: string): string {
  const d = tempDir(prefix);
  temps.push(d);
  return d;
}

async function photos(n: number): Promise<Uint8Array> {
  const per = 224 * 224 * 3;
  const out = new Uint8Array(n * per);
  const files = ['cats', 'dogs'].flatMap((c) =>
    readdirSync(join(SHARED_DATA(), 'test', c))
      .sort()
      .slice(0, Math.ceil(n / 2))
      .map((f) => join(SHARED_DATA(), 'test', c, f)),
  );
  for (let i = 0; i < n; i++) out.set(await decodeForModel(readFileSync(files[i]!), PRE, { maxPixels: 1e8 }), i * per);
  return out;
}

function relMaxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0,
    s = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    s = Math.max(s, Math.abs(b[i]!));
  }
  return d / s;
}

test('blocks and boundaries of MobileNet v1: --unfreeze N, --unfreeze-from, refusals', async () => {
  const graph = await sharedGraph();
  const ends = blockEnds(graph, CUT);
  assert.equal(ends.length, 14); // conv1_relu + 13 depthwise-separable blocks
  assert.equal(ends[0], 'conv1_relu');
  assert.equal(resolveBoundary(graph, CUT, { unfreeze: 0 }), CUT);
  assert.equal(resolveBoundary(graph, CUT, { unfreeze: 1 }), 'conv_pw_12_relu');
  assert.equal(resolveBoundary(graph, CUT, { unfreeze: 2 }), 'conv_pw_11_relu');
  assert.equal(resolveBoundary(graph, CUT, { unfreezeFrom: 'conv_dw_13' }), 'conv_pw_12_relu');
  assert.equal(resolveBoundary(graph, CUT, { unfreezeFrom: 'conv_pw_13' }), 'conv_dw_13_relu');
  assert.throws(() => resolveBoundary(graph, CUT, { unfreeze: 14 }), UserError);
  assert.throws(() => resolveBoundary(graph, CUT, { unfreezeFrom: 'nope' }), UserError);
  assert.throws(() => resolveBoundary(graph, CUT, { unfreezeFrom: 'conv_preds' }), UserError);
  const plan = planTop(graph, 'conv_pw_11_relu', CUT);
  assert.equal(plan.blocks, 2);
  assert.deepEqual(
    plan.ops.map((o) => `${o.kind}:${o.layer}>${o.output}`),
    [
      'conv:conv_dw_12>conv_dw_12_relu',
      'conv:conv_pw_12>conv_pw_12_relu',
      'conv:conv_dw_13>conv_dw_13_relu',
      'conv:conv_pw_13>conv_pw_13_relu',
    ],
  );
  assert.deepEqual(plan.inShape, [14, 14, 384]);
  assert.deepEqual(plan.outShape, [7, 7, 768]);
});

test('float16 round trip: exact for halves, ≤ 2^-11 relative otherwise', () => {
  const xs = Float32Array.from([0, -0, 1, -2.5, 6, 65504, 1e-8, 3.14159, 0.1, 5.9999, 1e5, -1e-5]);
  const back = fromHalf(toHalf(xs), new Float32Array(xs.length));
  assert.equal(back[5], 65504);
  assert.equal(back[10], Infinity);
  for (const i of [0, 1, 2, 3, 4, 7, 8, 9])
    assert.ok(Math.abs(back[i]! - xs[i]!) <= Math.abs(xs[i]!) * 2 ** -11, `${xs[i]} → ${back[i]}`);
});

/**
 * A small synthetic top exercising every backward path: 1×1 conv, strided 'valid' depthwise on an
 * even input (its input gradient has a leftover row/column), frozen affine, 3×3 conv.
 */
function syntheticPlan(): TopPlan {
  const rng = new Rng(5);
  return {
    boundary: 'in',
    cut: 'out',
    layers: [],
    blocks: 2,
    inShape: [8, 8, 4],
    outShape: [3, 3, 6],
    ops: [
      {
        kind: 'conv',
        layer: 'pw',
        type: 'Conv2D',
        output: 'pw',
        pads: [0, 0, 0, 0],
        strides: [1, 1],
        kernel: [1, 1],
        inShape: [8, 8, 4],
        outShape: [8, 8, 5],
        act: { fn: 'relu' },
        param: 0,
      },
      {
        kind: 'conv',
        layer: 'dw',
        type: 'DepthwiseConv2D',
        output: 'dw',
        pads: [0, 0, 0, 0],
        strides: [2, 2],
        kernel: [3, 3],
        inShape: [8, 8, 5],
        outShape: [3, 3, 5],
        act: { fn: 'relu', max: 6 },
        param: 2,
      },
      {
        kind: 'affine',
        layer: 'bn',
        output: 'bn',
        scale: Float32Array.from({ length: 5 }, () => 0.5 + rng.next()),
        shift: Float32Array.from({ length: 5 }, () => rng.next() - 0.3),
        act: { fn: 'relu' },
        shape: [3, 3, 5],
      },
      {
        kind: 'conv',
        layer: 'c3',
        type: 'Conv2D',
        output: 'c3',
        pads: [1, 1, 1, 1],
        strides: [1, 1],
        kernel: [3, 3],
        inShape: [3, 3, 5],
        outShape: [3, 3, 6],
        act: { fn: 'relu', max: 6 },
        param: 4,
      },
    ],
  };
}

test('hand-written backward pass matches finite differences (directional derivatives per parameter)', async () => {
  const tf = await initTf();
  const rng = new Rng(11);
  const rand = (shape: number[], scale: number, offset = 0): ParamTensor => ({
    name: '',
    shape,
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (rng.next() * 2 - 1) * scale + offset),
  });
  const params = [
    rand([1, 1, 4, 5], 0.6, 0.1),
    rand([5], 0.3, 0.2),
    rand([3, 3, 5, 1], 0.6, 0.1),
    rand([5], 0.3),
    rand([3, 3, 5, 6], 0.3),
    rand([6], 0.3, 0.3),
    rand([6, 3], 0.8),
    rand([3], 0.1),
  ];
  const top = new TopModel(tf, syntheticPlan(), params, 3);
  const x = tf.tensor4d(
    Float32Array.from({ length: 2 * 8 * 8 * 4 }, () => rng.next() * 3),
    [2, 8, 8, 4],
  );
  const labels = Int32Array.from([0, 2]);
  const mask = Float32Array.from({ length: 2 * 6 }, () => (rng.next() < 0.8 ? 1.25 : 0));
  try {
    const { grads } = top.gradients(x, labels, mask, true);
    const eps = 1e-3;
    for (let p = 0; p < params.length; p++) {
      const g = grads[p]!;
      assert.ok(g, `gradient ${p}`);
      const dir = Float32Array.from(g, () => (rng.next() < 0.5 ? -1 : 1));
      const at = (sign: number): number => {
        top.setValues(
          params.map((q, i) => (i === p ? { ...q, data: q.data.map((v, j) => v + sign * eps * dir[j]!) } : q)),
        );
        return top.gradients(x, labels, mask, true).loss;
      };
      const numeric = (at(1) - at(-1)) / (2 * eps);
      const analytic = g.reduce((s, v, j) => s + v * dir[j]!, 0);
      assert.ok(
        Math.abs(numeric - analytic) <= 2e-2 * Math.max(Math.abs(numeric), Math.abs(analytic)) + 2e-4,
        `param ${p}: numeric ${numeric} vs analytic ${analytic}`,
      );
    }
    // head-only gradients leave the top's undefined
    top.setValues(params);
    const pooled = tf.tensor2d(
      Float32Array.from({ length: 12 }, () => rng.next()),
      [2, 6],
    );
    const h = top.gradients(pooled, labels, undefined, false);
    assert.equal(h.grads[0], undefined);
    assert.ok(h.grads[6] && h.grads[7]);
    pooled.dispose();
  } finally {
    x.dispose();
    top.dispose();
  }
});

test('ORT training engine = TF.js engine: same loss, same updated parameters (Adam, RMSprop; top and head-only), same predictions', async () => {
  await initTf();
  const rng = new Rng(3);
  const rand = (shape: number[], scale: number, offset = 0): ParamTensor => ({
    name: '',
    shape,
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (rng.next() * 2 - 1) * scale + offset),
  });
  const params = [
    rand([1, 1, 4, 5], 0.6, 0.1),
    rand([5], 0.3, 0.2),
    rand([3, 3, 5, 1], 0.6, 0.1),
    rand([5], 0.3),
    rand([3, 3, 5, 6], 0.3),
    rand([6], 0.3, 0.3),
    rand([6, 3], 0.8),
    rand([3], 0.1),
  ];
  const names = params.map((_, i) => `p${i}`);
  const plan = syntheticPlan();
  for (const kind of ['adam', 'rmsprop'] as const)
    for (const trainTop of [true, false]) {
      const a = await createTopEngine('tfjs', plan, params, 3, { threads: 1 });
      const b = await createTopEngine('ort', plan, params, 3, { threads: 1 });
      try {
        for (let step = 0; step < 3; step++) {
          const n = 3;
          const x = Float32Array.from({ length: n * (trainTop ? 8 * 8 * 4 : 6) }, () => rng.next() * 3);
          const labels = Int32Array.from([0, 2, 1]);
          const mask = Float32Array.from({ length: n * 6 }, () => (rng.next() < 0.8 ? 1.25 : 0));
          // The last step trains on soft targets (label smoothing + mixup), as phase 2 can.
          const targets =
            step === 2
              ? softTargets(labels, n, 3, 0.1, { lambda: 0.7, partner: Int32Array.from([2, 0, 1]) })
              : undefined;
          const ra = await a.trainStep(x, n, labels, mask, { kind, lr: 0.01 }, trainTop, targets);
          const rb = await b.trainStep(x, n, labels, mask, { kind, lr: 0.01 }, trainTop, targets);
          assert.ok(Math.abs(ra.loss - rb.loss) < 1e-5, `${kind} step ${step}: loss ${ra.loss} vs ${rb.loss}`);
          assert.equal(ra.correct, rb.correct);
          const va = a.values(names),
            vb = b.values(names);
          for (let i = 0; i < va.length; i++) {
            assert.ok(
              relMaxDiff(vb[i]!.data, va[i]!.data) < 1e-5,
              `${kind} trainTop=${trainTop} step ${step} param ${i}`,
            );
            if (!trainTop && i < 6)
              assert.deepEqual(vb[i]!.data, params[i]!.data, 'head-only steps leave the top alone');
          }
        }
        const x = Float32Array.from({ length: 2 * 8 * 8 * 4 }, () => rng.next() * 3);
        assert.ok(relMaxDiff(await b.predict(x, 2, false), await a.predict(x, 2, false)) < 1e-5);
        const pooled = Float32Array.from({ length: 2 * 6 }, () => rng.next());
        assert.ok(relMaxDiff(await b.predict(pooled, 2, true), await a.predict(pooled, 2, true)) < 1e-5);
        assert.equal(a.getOptimizerState().step, 3);
        assert.equal(b.getOptimizerState().step, 3);
      } finally {
        await a.dispose();
        await b.dispose();
      }
    }
});

test('ORT frozen bottom + trainable top (TF.js and ORT engines) reproduce the full TF.js model before training', async () => {
  const tf = await initTf();
  const graph = await sharedGraph();
  const weights = await sharedWeights();
  const n = 4;
  const pixels = await photos(n);
  const full = await loadLayersModelFromDir(SHARED_MODEL());
  const cutModel = tf.model({ inputs: full.inputs, outputs: full.getLayer(CUT).output as TF.SymbolicTensor });
  const x = tf.tidy(() => tf.sub(tf.div(tf.tensor4d(pixels, [n, 224, 224, 3], 'int32').toFloat(), 127.5), 1));
  const ref = cutModel.predict(x) as TF.Tensor4D;
  const refMap = Float32Array.from(ref.dataSync() as Float32Array);
  const refPooled = tf.tidy(() => Float32Array.from(tf.mean(ref, [1, 2]).dataSync() as Float32Array));
  tf.dispose([x, ref]);
  full.dispose();
  // A random head: class probabilities softmax(pooled·K + b) from the reference features.
  const rng = new Rng(9);
  const K = Float32Array.from({ length: 768 * 2 }, () => (rng.next() - 0.5) * 0.2);
  const bias = Float32Array.of(0.1, -0.1);
  const refProbs = new Float32Array(n * 2);
  for (let i = 0; i < n; i++) {
    const z = [0, 1].map(
      (c) => bias[c]! + refPooled.subarray(i * 768, (i + 1) * 768).reduce((s, v, j) => s + v * K[j * 2 + c]!, 0),
    );
    const m = Math.max(...z);
    const e = z.map((v) => Math.exp(v - m));
    refProbs[i * 2] = e[0]! / (e[0]! + e[1]!);
    refProbs[i * 2 + 1] = e[1]! / (e[0]! + e[1]!);
  }
  for (const unfreeze of [1, 2, 4]) {
    const plan = planTop(graph, resolveBoundary(graph, CUT, { unfreeze }), CUT);
    const base = await FrozenBase.create(graph, weights, plan, PRE, 2);
    const params = initialTopParams(plan, graph, weights);
    params.push({ name: 'k', shape: [768, 2], data: K }, { name: 'b', shape: [2], data: bias });
    const top = new TopModel(tf, plan, params, 2);
    const ortTop = await createTopEngine('ort', plan, params, 2, { threads: 2 });
    try {
      const b = await base.boundary(pixels, n);
      const [h, w, c] = plan.inShape;
      const bt = tf.tensor4d(b, [n, h, w, c]);
      const f = top.features(bt);
      const ours = Float32Array.from(f.dataSync() as Float32Array);
      const oursPooled = tf.tidy(() => Float32Array.from(tf.mean(f, [1, 2]).dataSync() as Float32Array));
      tf.dispose([bt, f]);
      assert.ok(
        relMaxDiff(ours, refMap) <= 1e-4,
        `unfreeze ${unfreeze}: feature map rel diff ${relMaxDiff(ours, refMap)}`,
      );
      assert.ok(
        relMaxDiff(oursPooled, refPooled) <= 1e-4,
        `unfreeze ${unfreeze}: pooled rel diff ${relMaxDiff(oursPooled, refPooled)}`,
      );
      // the ORT top (pretrained weights) used while the head trains agrees too
      assert.ok(relMaxDiff(await base.pooled(b, n), refPooled) <= 1e-4);
      // top + head in each engine: max |Δ probability| ≤ 1e-4
      for (const engine of [ortTop, await createTopEngine('tfjs', plan, params, 2, { threads: 2 })]) {
        const p = await engine.predict(b, n, false);
        for (let i = 0; i < p.length; i++)
          assert.ok(
            Math.abs(p[i]! - refProbs[i]!) <= 1e-4,
            `${engine.name}, unfreeze ${unfreeze}: prob ${p[i]} vs ${refProbs[i]}`,
          );
        if (engine !== ortTop) await engine.dispose();
      }
    } finally {
      top.dispose();
      await ortTop.dispose();
      await base.release();
    }
  }
});

// ------------------------------------------------------------------------------------------------
// The recipe end to end on a tiny dataset.

let dataDir: string | undefined;
function data(): string {
  dataDir ??= makeSubset(tmp('ft-data'), { train: 10, test: 3 });
  return dataDir;
}

function options(out: string, over: Partial<FinetuneOptions> = {}): FinetuneOptions {
  return {
    data: data(),
    model: SHARED_MODEL(),
    augment: parseAugmentSpec(FINETUNE_DEFAULTS.augment),
    unfreeze: 2,
    epochsHead: 1,
    epochsFinetune: 2,
    lr: 1e-4,
    lrHead: 1e-3,
    optimizer: 'adam',
    batch: 8,
    seed: 7,
    patience: 3,
    dropout: 0.2,
    out,
    resume: false,
    threads: 2,
    workers: 4,
    maxPixels: 1e8,
    quiet: true,
    log: silentLogger,
    engine: 'ort',
    warmupEpochs: 2,
    inputSize: 224,
    valFraction: 0.1,
    averageEpochs: true,
    ...over,
  };
}

let straight: string | undefined;

async function ortRun(modelDir: string, layer: string, pixels: Uint8Array, n: number): Promise<Float32Array> {
  const conv = convertKerasGraph(await modelGraph(modelDir), await modelWeights(modelDir), {
    layer,
    pooling: 'none',
    preprocessing: PRE,
  });
  const r = await OrtFeatureRunner.create(encodeModel(conv.model), [224, 224, 3], conv.featureDim, { threads: 2 });
  try {
    return await r.run(pixels, n);
  } finally {
    await r.release();
  }
}

test('finetune recipe: report, frozen weights untouched, top trained, BN statistics kept, export converts and agrees, no leaked tensors', async () => {
  const tf = await initTf();
  const out = tmp('ft-out');
  const before = tf.memory().numTensors;
  const { report } = await runFinetune(options(out));
  assert.equal(tf.memory().numTensors, before, 'tensors leaked');
  straight = out;
  assert.equal(report.phases.head.epochsRun, 1);
  assert.equal(report.phases.finetune.epochsRun, 2);
  for (const k of ['seconds', 'ortSeconds', 'baseSeconds', 'topSeconds'] as const) {
    assert.ok(report.phases.finetune[k] > 0 && report.phases.head[k] >= 0, k);
  }
  assert.ok(report.phases.head.baseSeconds > 0, 'augmented head epochs run the base in ORT');
  assert.equal(report.topEngine, 'ort');
  const avg = report.phases.finetune.averaged;
  assert.ok(
    avg && avg.epochs === 2 && avg.valLoss !== null && avg.valLoss > 0 && typeof avg.chosen === 'boolean',
    'phase 2 weighs the average of its epochs against the best epoch',
  );
  const warm = report.phases.head.warmStart;
  assert.ok(
    warm && warm.bestEpoch >= 1 && warm.bestEpoch <= 2 && warm.valLoss !== null && warm.valLoss > 0,
    'phase 1 starts from a head warmed up on clean features',
  );
  assert.equal(report.tfjsSeconds, 0, 'the ORT engine trains without TF.js');
  assert.equal(report.testAccuracy, null, 'a validation run never reads the test split');
  assert.equal(report.phases.head.testAccuracy, null);
  assert.equal(typeof report.valAccuracy, 'number');
  assert.deepEqual(report.data.counts, { train: 18, val: 2, test: 0 });
  // A validation run reports the epochs its early stopping chose and the refit that reuses them.
  const sel = report.selection;
  assert.equal(sel.mode, 'validation');
  assert.equal(sel.epochs.warmup, warm.bestEpoch);
  assert.equal(sel.epochs.head, report.phases.head.bestEpoch);
  assert.equal(sel.averageEpochs, avg.chosen);
  assert.equal(sel.epochs.finetune, avg.chosen ? avg.epochs : report.phases.finetune.bestEpoch);
  assert.equal(
    sel.refitArgs,
    `--refit --warmup-epochs ${sel.epochs.warmup} --epochs-head ${sel.epochs.head} --epochs-finetune ${sel.epochs.finetune}${avg.chosen ? '' : ' --no-average-epochs'}`,
  );
  assert.deepEqual(
    {
      size: report.preprocessing.size,
      mean: report.preprocessing.mean,
      std: report.preprocessing.std,
      resize: report.preprocessing.resize,
    },
    { size: PRE.size, mean: PRE.mean, std: PRE.std, resize: PRE.resize },
  );
  assert.ok(report.export.checkMaxAbsDiff <= 1e-4, `export check ${report.export.checkMaxAbsDiff}`);
  const saved = JSON.parse(readFileSync(join(out, 'finetune.json'), 'utf8'));
  assert.equal(saved.valLoss, report.valLoss);

  // Weights: below the boundary bit-identical, BN moving statistics all unchanged, top kernels changed.
  const orig = await sharedWeights();
  const exp = await readWeights(join(out, 'model'));
  const graph = await sharedGraph();
  const topLayers = new Set(planTop(graph, 'conv_pw_11_relu', CUT).layers);
  let compared = 0;
  for (const [name, w] of exp) {
    const layer = name.slice(0, name.lastIndexOf('/'));
    if (layer.startsWith('ft_')) continue;
    const o = orig.get(name)!;
    assert.ok(o, name);
    if (!topLayers.has(layer) || /moving_(mean|variance)|gamma/.test(name)) {
      assert.deepEqual(w.data, o.data, `${name} must be unchanged`);
      compared++;
    }
  }
  assert.ok(compared > 100);
  for (const name of [
    'conv_dw_12/depthwise_kernel',
    'conv_pw_12/kernel',
    'conv_dw_13/depthwise_kernel',
    'conv_pw_13/kernel',
    'conv_pw_13_bn/beta',
  ]) {
    assert.notDeepEqual(exp.get(name)!.data, orig.get(name)!.data, `${name} should have been trained`);
  }
  assert.ok(!exp.has('conv_preds/kernel'), 'the ImageNet classifier is replaced by the new head');

  // The bottom ONNX features of fixed images are identical before/after; the exported model's
  // ONNX conversion predicts what the TF.js export predicts.
  const pixels = await photos(2);
  assert.deepEqual(
    await ortRun(join(out, 'model'), 'conv_pw_11_relu', pixels, 2),
    await ortRun(SHARED_MODEL(), 'conv_pw_11_relu', pixels, 2),
  );
  const onnxPath = join(out, 'model.onnx');
  assert.ok(existsSync(onnxPath));
  const r = await OrtFeatureRunner.create(onnxPath, [224, 224, 3], 2, { threads: 2 });
  const pOnnx = await r.run(pixels, 2);
  await r.release();
  const m = await loadLayersModelFromDir(join(out, 'model'));
  const p = tf.tidy(
    () => m.predict(tf.sub(tf.div(tf.tensor4d(pixels, [2, 224, 224, 3], 'int32').toFloat(), 127.5), 1)) as TF.Tensor,
  );
  const pTf = p.dataSync() as Float32Array;
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(pTf[i]! - pOnnx[i]!) <= 1e-4, `prob ${i}: ${pTf[i]} vs ${pOnnx[i]}`);
  tf.dispose(p);
  m.dispose();
  assert.ok(Math.abs(pOnnx[0]! + pOnnx[1]! - 1) < 1e-5);
});

/** Options that stop a run after phase 2's first epoch, as a crash would (checkpoint already written). */
const crashAfterFinetuneEpoch1 = {
  onEpoch: (phase: string, epoch: number): void => {
    if (phase === 'finetune' && epoch === 1) throw new Error('simulated crash');
  },
};

test('checkpoint/resume: interrupted after finetune epoch 1 then --resume gives the same weights as a straight run', async () => {
  assert.ok(straight, 'needs the straight run');
  const out = tmp('ft-resume');
  await assert.rejects(runFinetune(options(out, crashAfterFinetuneEpoch1)), /simulated crash/);
  const st = JSON.parse(readFileSync(join(out, 'checkpoint', 'state.json'), 'utf8'));
  assert.equal(st.phase, 'finetune');
  assert.equal(st.phases.finetune.epoch, 1);
  await assert.rejects(
    runFinetune(options(out, { resume: true, lr: 2e-4 })),
    UserError,
    'different options are refused',
  );
  // The data fingerprint is the photos' content: new mtimes (a copied or restored folder) still resume.
  const later = new Date(Date.now() + 60_000);
  for (const split of readdirSync(data()))
    for (const cls of readdirSync(join(data(), split)))
      for (const f of readdirSync(join(data(), split, cls))) utimesSync(join(data(), split, cls, f), later, later);
  const { report } = await runFinetune(options(out, { resume: true }));
  assert.equal(report.resumed, true);
  assert.equal(report.phases.finetune.epochsRun, 2);
  assert.deepEqual(
    readFileSync(join(out, 'model', 'weights.bin')),
    readFileSync(join(straight, 'model', 'weights.bin')),
  );
  const a = JSON.parse(readFileSync(join(straight, 'finetune.json'), 'utf8'));
  assert.deepEqual(
    report.history.map((h) => [h.loss, h.valLoss]),
    a.history.map((h: any) => [h.loss, h.valLoss]),
  );
  assert.equal(report.valLoss, a.valLoss);
});

test('cosine schedule: the full rate at step 0, half at mid-phase, zero at the end, never rising', () => {
  assert.equal(cosineLr(3e-5, 0, 100), 3e-5);
  assert.ok(Math.abs(cosineLr(3e-5, 50, 100) - 1.5e-5) < 1e-12);
  assert.ok(Math.abs(cosineLr(3e-5, 100, 100)) < 1e-15);
  assert.ok(Math.abs(cosineLr(3e-5, 150, 100)) < 1e-15, 'clamped past the end');
  for (let s = 1; s <= 100; s++) assert.ok(cosineLr(1, s, 100) <= cosineLr(1, s - 1, 100));
});

test('warm-up: linear from lr/warmup to lr over the warm-up steps, then cosine over the rest; off = the plain schedule', () => {
  const lr = 6e-5;
  assert.ok(Math.abs(phaseLr(lr, 0, 100, 10, true) - lr / 10) < 1e-15, 'first step: lr/warmup, not 0');
  assert.ok(Math.abs(phaseLr(lr, 4, 100, 10, true) - lr / 2) < 1e-15);
  assert.equal(phaseLr(lr, 10, 100, 10, true), lr, 'the full rate right after warm-up');
  assert.ok(Math.abs(phaseLr(lr, 55, 100, 10, true) - lr / 2) < 1e-15, 'cosine over the 90 remaining steps');
  assert.ok(Math.abs(phaseLr(lr, 100, 100, 10, true)) < 1e-15);
  for (let s = 1; s < 10; s++) assert.ok(phaseLr(1, s, 100, 10, true) > phaseLr(1, s - 1, 100, 10, true));
  for (let s = 11; s <= 100; s++) assert.ok(phaseLr(1, s, 100, 10, true) <= phaseLr(1, s - 1, 100, 10, true));
  assert.equal(phaseLr(lr, 50, 100, 10, false), lr, 'constant after warm-up');
  assert.ok(Math.abs(phaseLr(lr, 4, 100, 10, false) - lr / 2) < 1e-15, 'warm-up before a constant rate too');
  for (const s of [0, 17, 50, 99]) assert.equal(phaseLr(lr, s, 100, 0, true), cosineLr(lr, s, 100), 'off: cosine');
  assert.equal(phaseLr(lr, 7, 100, 0, false), lr, 'off: constant');
});

test('soft targets: label smoothing as Keras, mixup mixes two rows with λ; Beta(α, α) samples in [0, 1] with mean 1/2', () => {
  const labels = Int32Array.from([0, 1, 1]);
  assert.deepEqual(softTargets(labels, 3, 2, 0), Float32Array.from([1, 0, 0, 1, 0, 1]));
  assert.deepEqual(softTargets(labels, 3, 2, 0.1), Float32Array.from([0.95, 0.05, 0.05, 0.95, 0.05, 0.95]));
  const mixed = softTargets(labels, 2, 2, 0, { lambda: 0.7, partner: Int32Array.from([1, 0]) });
  assert.deepEqual(
    Array.from(mixed, (v) => Math.round(v * 1e6) / 1e6),
    [0.7, 0.3, 0.3, 0.7],
  );
  const t = softTargets(Int32Array.from([0, 2, 1]), 3, 3, 0.2, { lambda: 0.4, partner: Int32Array.from([2, 0, 1]) });
  for (let r = 0; r < 3; r++)
    assert.ok(Math.abs(t[r * 3]! + t[r * 3 + 1]! + t[r * 3 + 2]! - 1) < 1e-6, 'rows sum to 1');
  const rng = new Rng(5);
  for (const alpha of [0.2, 1, 2]) {
    let sum = 0;
    for (let i = 0; i < 4000; i++) {
      const l = betaSample(alpha, rng);
      assert.ok(l >= 0 && l <= 1);
      sum += l;
    }
    assert.ok(Math.abs(sum / 4000 - 0.5) < 0.03, `Beta(${alpha}) mean ${sum / 4000}`);
  }
});

test('CutMix: the box covers 1 − λ of the grid (clipped at the edges, λ recomputed), and each row gets the box of its partner, the rest its own', () => {
  const rng = new Rng(11);
  for (const lambda of [0, 0.3, 0.5, 0.9, 1]) {
    for (let i = 0; i < 200; i++) {
      const b = cutmixBox(18, 18, lambda, rng);
      assert.ok(b.y0 >= 0 && b.y0 <= b.y1 && b.y1 <= 18 && b.x0 >= 0 && b.x0 <= b.x1 && b.x1 <= 18);
      const share = ((b.y1 - b.y0) * (b.x1 - b.x0)) / (18 * 18);
      assert.ok(Math.abs(b.lambda - (1 - share)) < 1e-12, 'λ is the share the row keeps');
      // Clipping only shrinks the box: the row keeps at least the λ asked for, up to rounding.
      assert.ok(b.lambda >= lambda - 0.12, `λ ${lambda} → ${b.lambda}`);
    }
  }
  assert.deepEqual(cutmixBox(18, 18, 1, rng).lambda, 1, 'λ = 1: no box');
  // 3 rows of 4 × 5 × 2, row r filled with r + 1: row 0 takes row 2's box, row 1 row 0's, row 2 its own.
  const [h, w, c] = [4, 5, 2];
  const per = h * w * c;
  const src = new Uint8Array(3 * per).map((_, i) => Math.floor(i / per) + 1);
  const dst = new Uint8Array(3 * per);
  const box = { y0: 1, y1: 3, x0: 2, x1: 5, lambda: 1 - 6 / 20 };
  pasteCutmix(src, dst, 3, [h, w, c], box, Int32Array.from([2, 0, 2]));
  for (let r = 0; r < 3; r++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let k = 0; k < c; k++) {
          const inBox = y >= 1 && y < 3 && x >= 2 && x < 5;
          const want = inBox ? [3, 1, 3][r]! : r + 1;
          assert.equal(dst[r * per + (y * w + x) * c + k], want, `row ${r} (${y}, ${x})`);
        }
  assert.ok(
    src.every((v, i) => v === Math.floor(i / per) + 1),
    'the source batch is left alone',
  );
  const f = Float32Array.from({ length: 2 * per }, (_, i) => i);
  const g = new Float32Array(2 * per);
  pasteCutmix(f, g, 2, [h, w, c], { y0: 0, y1: 4, x0: 0, x1: 5, lambda: 0 }, Int32Array.from([1, 0]));
  assert.deepEqual(g, Float32Array.from([...f.subarray(per), ...f.subarray(0, per)]), 'a full box swaps rows');
});

test('CutMix on the photos (phase 2): recorded, trains other weights than the same run without it, resumes, and is refused with mixup or without on resume', async () => {
  assert.ok(straight, 'needs the straight run');
  const out = tmp('ft-cutmix');
  await assert.rejects(runFinetune(options(out, { cutmix: 1, ...crashAfterFinetuneEpoch1 })), /simulated crash/);
  await assert.rejects(runFinetune(options(out, { resume: true })), UserError, 'cutmix is in the fingerprint');
  await assert.rejects(runFinetune(options(tmp('ft-mix2'), { cutmix: 1, mixup: 0.2 })), /cannot be combined/);
  const { report } = await runFinetune(options(out, { cutmix: 1, resume: true }));
  assert.equal(report.options.cutmix, 1);
  assert.equal(report.resumed, true);
  assert.equal(report.phases.finetune.epochsRun, 2);
  const straightReport = JSON.parse(readFileSync(join(straight, 'finetune.json'), 'utf8'));
  assert.equal(straightReport.options.cutmix, 0);
  // Phase 1 is untouched by CutMix (phase 2 only), phase 2's training losses are not.
  const losses = (h: { phase: string; loss: number }[], phase: string) =>
    h.filter((e) => e.phase === phase).map((e) => e.loss);
  assert.deepEqual(losses(report.history, 'head'), losses(straightReport.history, 'head'));
  assert.notDeepEqual(losses(report.history, 'finetune'), losses(straightReport.history, 'finetune'));
  assert.notDeepEqual(
    readFileSync(join(out, 'model', 'weights.bin')),
    readFileSync(join(straight, 'model', 'weights.bin')),
  );
});

test('refit: val merged into train, fixed epoch counts, no val evaluated; cosine run with LR warm-up, mixup and label smoothing interrupted and resumed = straight run', async () => {
  const opts = (out: string, over: Partial<FinetuneOptions> = {}) =>
    options(out, {
      refit: true,
      lrSchedule: 'cosine',
      lrWarmup: 0.5,
      unfreeze: 1,
      labelSmoothing: 0.1,
      mixup: 0.2,
      ...over,
    });
  const a = tmp('ft-refit');
  const { report } = await runFinetune(opts(a, { tta: true }));
  assert.deepEqual([report.options.labelSmoothing, report.options.mixup, report.options.lrWarmup], [0.1, 0.2, 0.5]);
  assert.equal(typeof report.testAccuracyFlipTTA, 'number', 'refit: flip TTA scored on test');
  assert.equal(report.valFlipTTA, null);
  assert.deepEqual(report.data.counts, { train: 20, val: 0, test: 6 }, 'the 2 val images are trained on');
  assert.equal(report.valAccuracy, null);
  assert.equal(report.selection.mode, 'refit');
  assert.deepEqual(report.selection.epochs, { warmup: 2, head: 1, finetune: 2 });
  assert.equal(report.phases.head.warmStart?.bestEpoch, 2, 'all warm-up epochs, no early stopping');
  assert.equal(report.phases.head.epochsRun, 1);
  assert.equal(report.phases.finetune.epochsRun, 2);
  assert.deepEqual(
    report.phases.finetune.averaged,
    { epochs: 2, valLoss: null, valAccuracy: null, chosen: true },
    'the average the validation run chose, unweighed',
  );
  assert.ok(report.history.length === 3 && report.history.every((h) => h.valLoss === null && h.valAccuracy === null));
  assert.equal(typeof report.testAccuracy, 'number');
  assert.ok(report.export.checkImages > 0 && report.export.checkMaxAbsDiff <= 1e-4);
  const b = tmp('ft-refit-resume');
  await assert.rejects(runFinetune(opts(b, crashAfterFinetuneEpoch1)), /simulated crash/);
  await assert.rejects(runFinetune(opts(b, { resume: true, refit: false })), UserError, 'refit is in the fingerprint');
  await assert.rejects(runFinetune(opts(b, { resume: true, lrWarmup: 0 })), UserError, 'so is the LR warm-up');
  const resumed = await runFinetune(opts(b, { resume: true }));
  assert.equal(resumed.report.resumed, true);
  assert.deepEqual(readFileSync(join(b, 'model', 'weights.bin')), readFileSync(join(a, 'model', 'weights.bin')));
  assert.deepEqual(
    resumed.report.history.map((h) => h.loss),
    report.history.map((h) => h.loss),
  );
});

test('--select: a validation run (test never read) chooses the epochs, then the refit with them = the refit its refitArgs describe; --epochs-head 0 after a warm start keeps the warm start', async () => {
  const out = tmp('ft-select');
  const o = options(out, { refit: true, unfreeze: 1, warmupEpochs: 3, epochsHead: 2, epochsFinetune: 2 });
  const r = await selectThenRefit(o);
  const v = r.validation.report;
  assert.equal(r.validation.outDir, join(out, VALIDATION_DIR));
  assert.ok(existsSync(join(out, VALIDATION_DIR, 'finetune.json')) && existsSync(join(out, 'finetune.json')));
  assert.equal(v.selection.mode, 'validation');
  assert.equal(v.testAccuracy, null, 'the validation run never reads test');
  assert.ok(typeof v.valLoss === 'number' && v.data.counts.val > 0);
  const e = v.selection.epochs;
  assert.ok(e.warmup <= 3 && e.head <= 2 && e.finetune <= 2, 'the options are the maxima');
  assert.equal(r.report.selection.mode, 'refit');
  assert.deepEqual(r.report.selection.epochs, e);
  assert.equal(r.report.selection.averageEpochs, v.selection.averageEpochs);
  assert.match(r.report.selection.chosenOn, new RegExp(`validation run in .*${VALIDATION_DIR}`));
  assert.deepEqual(r.report.selection.validationRun, {
    dir: join(out, VALIDATION_DIR),
    seconds: v.totalSeconds,
    valLoss: v.valLoss,
    valAccuracy: v.valAccuracy,
  });
  assert.equal(r.report.data.counts.train, v.data.counts.train + v.data.counts.val);
  assert.equal(typeof r.report.testAccuracy, 'number');
  // The same refit by hand, with the flags the validation run printed.
  const manual = tmp('ft-select-manual');
  await runFinetune({
    ...options(manual, { refit: true, unfreeze: 1 }),
    warmupEpochs: e.warmup,
    epochsHead: e.head,
    epochsFinetune: e.finetune,
    averageEpochs: v.selection.averageEpochs,
  });
  assert.deepEqual(readFileSync(join(out, 'model', 'weights.bin')), readFileSync(join(manual, 'model', 'weights.bin')));
  await assert.rejects(selectThenRefit({ ...o, refit: false }), UserError);
  // A validation run whose augmented head epochs never beat the warm start reports --epochs-head 0;
  // its refit trains the warm start's head, then phase 2 (it used to start phase 2 from a random head).
  const h0 = await runFinetune(options(tmp('ft-head0'), { refit: true, unfreeze: 1, warmupEpochs: 2, epochsHead: 0 }));
  assert.equal(h0.report.phases.head.warmStart?.epochs, 2);
  assert.equal(h0.report.phases.head.epochsRun, 0);
  assert.equal(typeof h0.report.phases.head.testAccuracy, 'number', 'the frozen-base model is scored');
  assert.equal(h0.report.phases.finetune.epochsRun, 2);
});

test('without augmentation the base runs once: boundary activations cached (float16) and reused on resume', async () => {
  const out = tmp('ft-noaug');
  // Also a non-native input size: the same weights on a 256×256 grid, exported at that size.
  const o = options(out, {
    augment: parseAugmentSpec('none'),
    unfreeze: 1,
    epochsFinetune: 1,
    tta: true,
    engine: 'tfjs',
    inputSize: 256,
    // CutMix on the cached boundary activations (their 8 × 8 grid), not on photos.
    cutmix: 1,
  });
  const { report } = await runFinetune(o);
  assert.equal(report.options.cutmix, 1);
  assert.equal(report.topEngine, 'tfjs');
  assert.ok(
    report.phases.finetune.tfjsSeconds > 0 && report.phases.finetune.tfjsSeconds === report.phases.finetune.topSeconds,
  );
  assert.equal(report.testAccuracyFlipTTA, null, 'validation run: flip TTA is scored on val, not test');
  assert.ok(report.valFlipTTA && report.valFlipTTA.loss > 0 && report.valFlipTTA.accuracy >= 0);
  assert.equal(report.phases.finetune.bestEpoch === 0 || report.phases.finetune.bestEpoch === 1, true);
  assert.equal(report.phases.head.baseSeconds, 0);
  assert.equal(report.phases.finetune.baseSeconds, 0);
  assert.equal(report.phases.finetune.ortSeconds, 0, 'TF.js engine: no ORT during the epochs');
  assert.equal(report.network.boundary, 'conv_pw_12_relu');
  // Cached in the feature store's .npy format: float16 boundary activations, one row per kept image.
  const cached = decodeNpy(readFileSync(join(out, 'cache', 'train_boundary.npy')));
  assert.equal(cached.dtype, '<f2');
  assert.deepEqual(cached.shape, [report.data.counts.train, 8 * 8 * 768]);
  assert.deepEqual(decodeNpy(readFileSync(join(out, 'cache', 'train_pooled.npy'))).shape, [
    report.data.counts.train,
    768,
  ]);
  assert.deepEqual(report.preprocessing.size, [256, 256]);
  assert.ok(report.export.checkMaxAbsDiff <= 1e-4, `export at 256: ${report.export.checkMaxAbsDiff}`);
  assert.equal(finetuneInputSize(224), 288, 'default: 1.3× the native size, rounded to 32');
  // predict --head DIR runs the exported 256-px model (its own preprocessing from finetune.json).
  const testImgs = ['cats', 'dogs'].map((c) =>
    join(data(), 'test', c, readdirSync(join(data(), 'test', c)).sort()[0]!),
  );
  const { predictions, failures } = await predictImages({
    head: out,
    inputs: testImgs,
    log: silentLogger,
    batch: 4,
    workers: 2,
    threads: 2,
    maxPixels: 1e8,
  });
  assert.equal(failures.length, 0);
  assert.equal(predictions.length, 2);
  for (const p of predictions) {
    assert.ok(['cats', 'dogs'].includes(p.label));
    assert.ok(Math.abs(Object.values(p.probabilities).reduce((a, b) => a + b, 0) - 1) < 1e-4);
  }
  const again = await runFinetune({ ...o, resume: true });
  assert.equal(again.report.prepare.ortSeconds, 0, 'caches reused');
  assert.equal(again.report.valLoss, report.valLoss);
  assert.deepEqual(readFileSync(join(out, 'model', 'weights.bin')).byteLength > 0, true);
});

test('CLI: epoch counts default to the counts chosen on the default data for a refit, and to the searched maxima for a validation run', () => {
  const counts = (extra: string[]) => {
    const out = tmp('ft-cli-counts');
    const r = runCli('finetune', [
      '--data',
      data(),
      '--input-size',
      '224',
      '--unfreeze',
      '0',
      '--quiet',
      '--out',
      out,
      ...extra,
    ]);
    assert.equal(r.status, 0, r.stderr);
    const o = JSON.parse(readFileSync(join(out, 'finetune.json'), 'utf8')).options;
    return [o.warmupEpochs, o.epochsHead, o.epochsFinetune];
  };
  const D = FINETUNE_DEFAULTS;
  assert.deepEqual(counts([]), [D.warmupEpochs, D.epochsHead, D.epochsFinetune]);
  assert.deepEqual(counts(['--no-refit']), [
    VALIDATION_MAXIMA.warmupEpochs,
    VALIDATION_MAXIMA.epochsHead,
    VALIDATION_MAXIMA.epochsFinetune,
  ]);
  assert.deepEqual(counts(['--no-refit', '--epochs-head', '1', '--warmup-epochs', '2']), [
    2,
    1,
    VALIDATION_MAXIMA.epochsFinetune,
  ]);
});

test('CLI: Ctrl-C in --select says what is kept in one line, ends by SIGINT, and --resume finishes the run', async () => {
  const out = tmp('ft-cli-ctrlc');
  const args = [
    ...['finetune', '--data', data(), '--input-size', '224', '--unfreeze', '1', '--select', '--quiet'],
    ...['--epochs-finetune', '40', '--patience', '100', '--out', out],
  ];
  const state = join(out, 'validation', 'checkpoint', 'state.json');
  const interrupted = await new Promise<{ signal: NodeJS.Signals | null; stderr: string }>((res, rej) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'convcache.ts'), ...args], {
      cwd: ROOT,
    });
    let stderr = '';
    p.stderr.on('data', (b) => (stderr += b));
    // Interrupt once the validation run has checkpointed a phase-2 epoch (mid-run: 40 are asked for).
    const poll = setInterval(() => {
      try {
        const st = JSON.parse(readFileSync(state, 'utf8'));
        if (st.phase === 'finetune' && st.phases.finetune.epoch >= 1) {
          clearInterval(poll);
          p.kill('SIGINT');
        }
      } catch {
        // not written yet
      }
    }, 20);
    p.on('error', rej);
    p.on('close', (_status, signal) => {
      clearInterval(poll);
      res({ signal, stderr });
    });
  });
  assert.equal(interrupted.signal, 'SIGINT', interrupted.stderr);
  const lines = interrupted.stderr.split('\n').filter((l) => l.trim());
  assert.deepEqual(lines, [
    'finetune: interrupted; finished epochs are checkpointed, re-run the same command with --resume to continue',
  ]);
  assert.ok(!existsSync(join(out, 'finetune.json')), 'stopped inside the validation run');
  const resumed = runCli(args[0]!, [...args.slice(1), '--resume']);
  assert.equal(resumed.status, 0, resumed.stderr);
  const v = JSON.parse(readFileSync(join(out, 'validation', 'finetune.json'), 'utf8'));
  assert.equal(v.resumed, true);
  assert.equal(JSON.parse(readFileSync(join(out, 'finetune.json'), 'utf8')).selection.mode, 'refit');
});

test('CLI: bad finetune arguments give one line and exit 2, no stack trace', () => {
  const run = (args: string[]) => runCli('finetune', args);
  for (const args of [
    ['--engine', 'gpu'],
    ['--val-fraction', '1.5'],
    ['--input-size', '5'],
    ['--warmup-epochs', '-1'],
    ['--optimizer', 'sgd'],
    ['--lr', '0'],
    ['--lr-schedule', 'step'],
    ['--mixup', '-1'],
    ['--cutmix', 'x'],
    ['--mixup', '0.2', '--cutmix', '1'],
    ['--select', '--no-refit'],
    ['--label-smoothing', '1'],
    ['--lr-warmup', '-1'],
    ['--lr-warmup', '3', '--epochs-finetune', '2'],
  ]) {
    const r = run(args);
    assert.equal(r.status, 2, `${args.join(' ')} should exit 2`);
    const lines = r.stderr.split('\n').filter((l) => l.trim());
    assert.equal(lines.length, 1, `one line for ${args.join(' ')}, got:\n${r.stderr}`);
    assert.match(lines[0]!, /^finetune: error: /);
  }
  assert.match(run(['--help']).stdout, /--engine NAME/);
});
