import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { extractFeatures, type ExtractOptions } from '../src/pipeline/extract.ts';
import { runBackbone } from '../src/pipeline/run-backbone.ts';
import { prepareBackbone } from '../src/backbone/backbone.ts';
import { loadFeatureCache } from '../src/store/read.ts';
import { augmentImage, IDENTITY_PARAMS, parseAugmentSpec } from '../src/images/augment.ts';
import { parseTtaSpec, ttaViews, meanFeatures } from '../src/images/tta.ts';
import { UserError } from '../src/util/errors.ts';
import { checkHeadMatchesCache, readHeadMeta, saveTrainedHead, trainHead } from '../src/pipeline/train.ts';
import { predictImages } from '../src/pipeline/predict.ts';
import { silentLogger } from '../src/util/log.ts';
import { makeSubset, removeDir, tempDir } from './helpers.ts';

const MODEL = 'mobilenet_v1_0.75_224';

function opts(data: string, out: string, extra: Partial<ExtractOptions> = {}): ExtractOptions {
  return {
    data,
    out,
    model: MODEL,
    split: { train: 0.8, val: 0.1, test: 0.1 },
    seed: 42,
    batch: 8,
    workers: 2,
    threads: 2,
    maxPixels: 100e6,
    quiet: true,
    log: silentLogger,
    ...extra,
  };
}

let dir: string;
let data: string;
before(() => {
  dir = tempDir('tta');
  data = makeSubset(join(dir, 'data'), { train: 2, test: 1 });
});
after(() => removeDir(dir));

const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

test('tta spec: flip = 2 views, crops = 5, both = 10; bad specs are one-line errors', () => {
  assert.deepEqual(
    ttaViews(parseTtaSpec('flip')).map((v) => v.name),
    ['id', 'id-flip'],
  );
  assert.equal(ttaViews(parseTtaSpec('crops')).length, 5);
  assert.equal(ttaViews(parseTtaSpec('flip,crops')).length, 10);
  assert.equal(ttaViews(parseTtaSpec('none')).length, 1);
  assert.throws(
    () => parseTtaSpec('rotate'),
    (e: unknown) => e instanceof UserError && /unknown view set 'rotate'/.test(e.message),
  );
  assert.throws(() => parseTtaSpec('flip,flip'), UserError);
  assert.deepEqual(Array.from(meanFeatures([Float32Array.of(1, 2), Float32Array.of(3, 6)])), [2, 4]);
});

test('tta crops: each corner crop starts at its corner of the image and spans 87.5 % of it', () => {
  // A 64×64 image whose red channel is x·4 and green channel y·4.
  const w = 64,
    h = 64,
    src = new Uint8Array(w * h * 3),
    out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      src[(y * w + x) * 3] = x * 4;
      src[(y * w + x) * 3 + 1] = y * 4;
    }
  const px = (x: number, y: number) => [out[(y * w + x) * 3]! / 4, out[(y * w + x) * 3 + 1]! / 4];
  const views = Object.fromEntries(ttaViews(parseTtaSpec('crops')).map((v) => [v.name, v.params]));
  const span = 0.875 * (w - 1);
  for (const [name, x0, y0] of [
    ['tl', 0, 0],
    ['tr', w - 1 - span, 0],
    ['bl', 0, h - 1 - span],
    ['br', w - 1 - span, h - 1 - span],
  ] as const) {
    augmentImage(src, w, h, views[name]!, out);
    const [ax, ay] = px(0, 0),
      [bx, by] = px(w - 1, h - 1);
    assert.ok(Math.abs(ax! - x0) <= 1 && Math.abs(ay! - y0) <= 1, `${name} top-left ${ax},${ay}`);
    assert.ok(Math.abs(bx! - (x0 + span)) <= 1 && Math.abs(by! - (y0 + span)) <= 1, `${name} bottom-right ${bx},${by}`);
  }
});

test("extract --tta flip: every image (train and test) stores the mean of its own and its mirror image's features", async () => {
  const plain = loadFeatureCache((await extractFeatures(opts(data, join(dir, 'plain')))).cacheDir);
  const { cacheDir, manifest } = await extractFeatures(opts(data, join(dir, 'flip'), { tta: parseTtaSpec('flip') }));
  assert.deepEqual(manifest.tta, { spec: 'flip', views: ['id', 'id-flip'] });
  const flip = loadFeatureCache(cacheDir);
  assert.deepEqual(flip.splits.test!.paths, plain.splits.test!.paths);
  // The mirror image's features, computed independently through the same base.
  const bb = await prepareBackbone({ model: MODEL, featureInputSize: true, log: silentLogger }); // as extract does
  const items = plain.splits.test!.paths.map((p) => ({
    absPath: join(data, p),
    views: [{ ...IDENTITY_PARAMS, flip: true }],
  }));
  const mirrored: Float32Array[] = [];
  for await (const batch of runBackbone(items, bb.onnxPath, bb.config, {
    batch: 8,
    workers: 2,
    threads: 2,
    maxPixels: 100e6,
  })) {
    for (const r of batch) mirrored.push(Float32Array.from((r as { features: Float32Array }).features));
  }
  const D = plain.manifest.backbone.featureDim;
  for (const [i] of plain.splits.test!.paths.entries()) {
    const own = plain.splits.test!.X.data.subarray(i * D, (i + 1) * D);
    const expected = meanFeatures([own, mirrored[i]!]);
    const got = flip.splits.test!.X.data.subarray(i * D, (i + 1) * D);
    assert.ok(maxAbsDiff(got, expected) < 1e-4, `test image ${i}`);
    assert.ok(maxAbsDiff(got, own) > 1e-3, 'the flipped view changed the feature');
  }
  // Same inputs → same bytes; and TTA cannot be mixed with augmented training rows.
  const again = await extractFeatures(opts(data, join(dir, 'flip'), { tta: parseTtaSpec('flip') }));
  assert.equal(again.manifest.files.arrowSha256, manifest.files.arrowSha256);
  assert.equal(again.manifest.timings.computed, 0);
  await assert.rejects(
    extractFeatures(
      opts(data, join(dir, 'bad'), {
        tta: parseTtaSpec('flip'),
        augment: { spec: parseAugmentSpec('flip'), views: 1 },
      }),
    ),
    /cannot be combined/,
  );

  // A head trained on TTA features predicts new images from the same averaged views.
  const trained = await trainHead({ cache: flip, kind: 'logreg', log: silentLogger });
  const saved = await saveTrainedHead(trained, join(dir, 'heads', 'lr.json'));
  assert.equal(readHeadMeta(saved.path).tta?.spec, 'flip');
  const first = flip.splits.test!.paths[0]!;
  const { predictions } = await predictImages({
    head: saved.path,
    inputs: [join(data, first)],
    batch: 4,
    workers: 2,
    threads: 2,
    maxPixels: 100e6,
    log: silentLogger,
  });
  const P = await trained.head.predictProba({ data: flip.splits.test!.X.data.slice(0, D), rows: 1, cols: D });
  assert.ok(
    Math.abs(predictions[0]!.probabilities.cats! - P.data[0]!) < 1e-4,
    'same probabilities as from the cached TTA feature',
  );
  // …and refuses a cache without TTA.
  assert.throws(() => checkHeadMatchesCache(readHeadMeta(saved.path), plain.manifest, plain.dir), /TTA flip vs none/);
});

test('extract --layer a,b: the pooled features of both cuts, concatenated; avg-l2 normalises each block', async () => {
  const a = loadFeatureCache(
    (await extractFeatures(opts(data, join(dir, 'l11'), { layer: 'conv_pw_11_relu' }))).cacheDir,
  );
  const b = loadFeatureCache(
    (await extractFeatures(opts(data, join(dir, 'l13'), { layer: 'conv_pw_13_relu' }))).cacheDir,
  );
  const ab = loadFeatureCache(
    (await extractFeatures(opts(data, join(dir, 'l11+13'), { layer: 'conv_pw_11_relu,conv_pw_13_relu' }))).cacheDir,
  );
  const da = a.manifest.backbone.featureDim,
    db = b.manifest.backbone.featureDim;
  assert.equal(ab.manifest.backbone.featureDim, da + db);
  assert.equal(ab.manifest.backbone.layer, 'conv_pw_11_relu,conv_pw_13_relu');
  const n = ab.splits.train!.y.length;
  for (let i = 0; i < n; i++) {
    const row = ab.splits.train!.X.data.subarray(i * (da + db), (i + 1) * (da + db));
    assert.ok(maxAbsDiff(row.subarray(0, da), a.splits.train!.X.data.subarray(i * da, (i + 1) * da)) < 1e-4);
    assert.ok(maxAbsDiff(row.subarray(da), b.splits.train!.X.data.subarray(i * db, (i + 1) * db)) < 1e-4);
  }
  const l2 = loadFeatureCache(
    (
      await extractFeatures(
        opts(data, join(dir, 'l2'), { layer: 'conv_pw_11_relu,conv_pw_13_relu', pooling: 'avg-l2' }),
      )
    ).cacheDir,
  );
  const row = l2.splits.test!.X.data.subarray(0, da + db);
  const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  assert.ok(Math.abs(norm(row.subarray(0, da)) - 1) < 1e-4 && Math.abs(norm(row.subarray(da)) - 1) < 1e-4);
  await assert.rejects(
    extractFeatures(opts(data, join(dir, 'none'), { layer: 'conv_pw_11_relu,conv_pw_13_relu', pooling: 'none' })),
    /need a pooling/,
  );
  await assert.rejects(
    extractFeatures(opts(data, join(dir, 'dup'), { layer: 'conv_pw_13_relu,conv_pw_13_relu' })),
    /given twice/,
  );
});
