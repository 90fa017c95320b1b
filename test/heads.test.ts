import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createHead,
  HEAD_KINDS,
  HEAD_ROWS,
  headParamSpecs,
  loadHead,
  parseOpts,
  quickParams,
  savesDirectory,
  tuneGridOf,
} from '../src/heads/registry.ts';
import type { HeadParams } from '../src/heads/types.ts';
import type { Matrix } from '../src/linalg/types.ts';
import { Rng } from '../src/linalg/random.ts';
import { UserError } from '../src/util/errors.ts';

/** Gaussian blobs from the seeded PRNG: class c centred at centres[c], unit noise. */
function blobs(counts: number[], d: number, spread: number, seed: number): { X: Matrix; y: Int32Array } {
  const rng = new Rng(seed);
  const centres = counts.map(() => Float32Array.from({ length: d }, () => rng.normal() * spread));
  const n = counts.reduce((a, b) => a + b, 0);
  const X = new Float32Array(n * d);
  const y = new Int32Array(n);
  // Interleave classes so any prefix/suffix split keeps all of them.
  const order: number[] = [];
  counts.forEach((c, k) => {
    for (let i = 0; i < c; i++) order.push(k);
  });
  rng.shuffle(order);
  order.forEach((c, i) => {
    y[i] = c;
    for (let j = 0; j < d; j++) X[i * d + j] = centres[c]![j]! + rng.normal();
  });
  return { X: { data: X, rows: n, cols: d }, y };
}

function split(s: { X: Matrix; y: Int32Array }, nTrain: number) {
  const d = s.X.cols;
  const part = (a: number, b: number) => ({
    X: { data: s.X.data.slice(a * d, b * d), rows: b - a, cols: d },
    y: s.y.slice(a, b),
  });
  return { train: part(0, nTrain), test: part(nTrain, s.X.rows) };
}

const accuracy = (p: Int32Array, y: Int32Array) => p.reduce((a, v, i) => a + (v === y[i] ? 1 : 0), 0) / y.length;

/** Each head's registered quick settings so the whole suite stays short; every other param is the default. */
const params = (kind: string, extra: HeadParams = {}): HeadParams => ({ ...quickParams(kind), ...extra });

const D = 12;
const multi = split(blobs([110, 110, 110], D, 1.2, 11), 240); // 3 classes, separable-ish
let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'convcache-heads-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

for (const kind of HEAD_KINDS) {
  describe(`head conformance: ${kind}`, () => {
    test('multi-class fit → predict/predictProba shapes, rows sum to 1, ≥95% held-out accuracy', async () => {
      const h = createHead(kind, params(kind));
      assert.equal(h.kind, kind);
      await h.fit(multi.train.X, multi.train.y, { nClasses: 3, seed: 1 });
      const p = await h.predict(multi.test.X);
      assert.ok(p instanceof Int32Array);
      assert.equal(p.length, multi.test.X.rows);
      for (const c of p) assert.ok(c >= 0 && c < 3);
      const P = await h.predictProba(multi.test.X);
      assert.equal(P.rows, multi.test.X.rows);
      assert.equal(P.cols, 3);
      assert.equal(P.data.length, P.rows * 3);
      for (let i = 0; i < P.rows; i++) {
        let s = 0;
        for (let c = 0; c < 3; c++) {
          const v = P.data[i * 3 + c]!;
          assert.ok(v >= 0 && v <= 1 + 1e-6, `probability ${v}`);
          s += v;
        }
        assert.ok(Math.abs(s - 1) < 1e-5, `row ${i} sums to ${s}`);
      }
      const acc = accuracy(p, multi.test.y);
      assert.ok(acc >= 0.95, `${kind} held-out accuracy ${acc}`);
      // The one-pass variant (when a head has it) equals the two calls.
      if (h.predictWithProba) {
        const both = await h.predictWithProba(multi.test.X);
        assert.deepEqual(both.pred, p);
        assert.deepEqual(both.proba.data, P.data);
      }
    });

    test('save → loadHead gives identical predictions and probabilities', async () => {
      const h = createHead(kind, params(kind));
      await h.fit(multi.train.X, multi.train.y, { nClasses: 3, seed: 2 });
      const path = join(dir, `${kind}-roundtrip.head`);
      await h.save(path);
      const g = await loadHead(path);
      assert.equal(g.kind, kind);
      assert.deepEqual(g.params, h.params);
      assert.deepEqual(await g.predict(multi.test.X), await h.predict(multi.test.X));
      assert.deepEqual((await g.predictProba(multi.test.X)).data, (await h.predictProba(multi.test.X)).data);
    });

    test('same seed → identical predictions; input not mutated', async () => {
      const before = Float32Array.from(multi.train.X.data);
      const a = createHead(kind, params(kind));
      const b = createHead(kind, params(kind));
      await a.fit(multi.train.X, multi.train.y, { nClasses: 3, seed: 5 });
      await b.fit(multi.train.X, multi.train.y, { nClasses: 3, seed: 5 });
      assert.deepEqual((await a.predictProba(multi.test.X)).data, (await b.predictProba(multi.test.X)).data);
      assert.deepEqual(await a.predict(multi.test.X), await b.predict(multi.test.X));
      assert.deepEqual(multi.train.X.data, before);
    });

    test('refuses bad labels, mismatched width, unknown params (UserError)', async () => {
      const h = createHead(kind, params(kind));
      const bad = Int32Array.from(multi.train.y);
      bad[3] = 3;
      await assert.rejects(h.fit(multi.train.X, bad, { nClasses: 3 }), UserError);
      bad[3] = -1;
      await assert.rejects(h.fit(multi.train.X, bad, { nClasses: 3 }), UserError);
      await assert.rejects(h.predict(multi.test.X), UserError, 'predict before fit');
      await h.fit(multi.train.X, multi.train.y, { nClasses: 3, seed: 1 });
      const wide: Matrix = { data: new Float32Array(4 * (D + 1)), rows: 4, cols: D + 1 };
      await assert.rejects(
        h.predict(wide),
        (e: unknown) => e instanceof UserError && /features/.test(e.message) && !e.message.includes('\n'),
      );
      await assert.rejects(h.predictProba(wide), UserError);
      assert.throws(
        () => createHead(kind, { noSuchParam: 1 }),
        (e: unknown) => e instanceof UserError && /valid:/.test(e.message),
      );
    });

    test("classWeight 'balanced' raises minority recall on an imbalanced set", async () => {
      // 12:1 imbalance with overlapping classes: unweighted heads favour the majority.
      const imb = split(blobs([480, 40, 240, 20], 8, 0.45, 21), 520);
      // Relabel to binary: blobs 0,2 → class 0 (majority), 1,3 → class 1 (minority).
      const relabel = (y: Int32Array) => y.map((c) => c % 2);
      const tr = { X: imb.train.X, y: relabel(imb.train.y) };
      const te = { X: imb.test.X, y: relabel(imb.test.y) };
      // Fully grown trees have pure leaves, which no weighting can change; larger leaves let the
      // weighted class distributions show.
      const extra: HeadParams = kind === 'rf' ? { minSamplesLeaf: 10 } : {};
      const recall = async (cw: 'none' | 'balanced') => {
        const h = createHead(kind, params(kind, extra));
        await h.fit(tr.X, tr.y, { nClasses: 2, seed: 3, classWeight: cw });
        const p = await h.predict(te.X);
        let tp = 0,
          pos = 0;
        for (let i = 0; i < p.length; i++)
          if (te.y[i] === 1) {
            pos++;
            if (p[i] === 1) tp++;
          }
        return tp / pos;
      };
      const none = await recall('none');
      const bal = await recall('balanced');
      assert.ok(bal > none, `${kind}: minority recall none=${none} balanced=${bal}`);
    });
  });
}

describe('registry', () => {
  test('the registry is consistent: every kind has rows, a tune grid over its own params, valid quick params; rows map to kinds', () => {
    assert.ok(HEAD_KINDS.length >= 5);
    const rowKinds = new Set(Object.values(HEAD_ROWS).map((r) => r.kind));
    for (const kind of HEAD_KINDS) {
      assert.ok(rowKinds.has(kind), `${kind} has at least one compare row`);
      const specs = headParamSpecs(kind);
      for (const name of Object.keys(tuneGridOf(kind)))
        assert.ok(name in specs, `${kind}: tune grid parameter ${name} is declared`);
      assert.doesNotThrow(() => createHead(kind, quickParams(kind)), `${kind}: quick params validate`);
      assert.equal(typeof savesDirectory(kind), 'boolean');
    }
    for (const [name, row] of Object.entries(HEAD_ROWS))
      assert.doesNotThrow(() => createHead(row.kind, row.params), `row ${name} validates`);
    const ranks = Object.values(HEAD_ROWS).map((r) => r.tieRank);
    assert.equal(new Set(ranks).size, ranks.length, 'tie ranks are distinct, so validation ties have one winner');
  });

  test('parseOpts parses numbers, booleans and strings', () => {
    assert.deepEqual(parseOpts(['C=1', 'kernel=rbf', 'bootstrap=false', 'gamma=0.5', 'lr=1e-3']), {
      C: 1,
      kernel: 'rbf',
      bootstrap: false,
      gamma: 0.5,
      lr: 0.001,
    });
    assert.throws(() => parseOpts(['C']), UserError);
    assert.throws(() => parseOpts(['C=']), UserError);
  });

  test('createHead validates kind and values with one-line messages', () => {
    assert.throws(
      () => createHead('nope', {}),
      (e: unknown) => e instanceof UserError && /valid: logreg, svm/.test(e.message),
    );
    assert.throws(
      () => createHead('svm', { kernel: 'poly' }),
      (e: unknown) => e instanceof UserError && /'rbf' \| 'linear'/.test(e.message),
    );
    assert.throws(() => createHead('logreg', { C: -1 }), UserError);
    assert.throws(() => createHead('rf', { nTrees: 2.5 }), UserError);
    assert.throws(() => createHead('knn', { k: '5' }), UserError);
    assert.equal(createHead('svm', { gamma: 0.1 }).params.gamma, 0.1);
    assert.equal(createHead('svm', {}).params.gamma, 'scale');
    assert.equal(createHead('rf', { maxFeatures: 5 }).params.maxFeatures, 5);
  });

  test('loadHead refuses missing, foreign and future-version files', async () => {
    const d = mkdtempSync(join(tmpdir(), 'convcache-reg-'));
    try {
      await assert.rejects(loadHead(join(d, 'missing.json')), UserError);
      writeFileSync(join(d, 'foreign.json'), JSON.stringify({ hello: 1 }));
      await assert.rejects(loadHead(join(d, 'foreign.json')), UserError);
      writeFileSync(join(d, 'future.json'), JSON.stringify({ format: 'convcache-head', version: 99, kind: 'logreg' }));
      await assert.rejects(loadHead(join(d, 'future.json')), /version 99/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test('svm linear kernel and one-vs-rest rbf also handle 3 classes', async () => {
    for (const p of [
      { kernel: 'linear' },
      { kernel: 'linear', loss: 'hinge' },
      { multiClass: 'ovr' },
    ] as HeadParams[]) {
      const h = createHead('svm', p);
      await h.fit(multi.train.X, multi.train.y, { nClasses: 3, seed: 1, val: multi.test });
      const acc = accuracy(await h.predict(multi.test.X), multi.test.y);
      assert.ok(acc >= 0.95, `svm ${JSON.stringify(p)} accuracy ${acc}`);
      const P = await h.predictProba(multi.test.X);
      for (let i = 0; i < P.rows; i++)
        assert.ok(Math.abs(P.data[i * 3]! + P.data[i * 3 + 1]! + P.data[i * 3 + 2]! - 1) < 1e-5);
    }
  });

  test('knn cosine/distance and dense early stopping on val', async () => {
    const k = createHead('knn', { metric: 'cosine', weights: 'distance' });
    await k.fit(multi.train.X, multi.train.y, { nClasses: 3 });
    assert.ok(accuracy(await k.predict(multi.test.X), multi.test.y) >= 0.95);
    const h = createHead('dense', { ...quickParams('dense'), epochs: 200, patience: 2 }) as unknown as {
      epochsRun_: number;
      bestEpoch_: number;
    } & ReturnType<typeof createHead>;
    await h.fit(multi.train.X, multi.train.y, { nClasses: 3, seed: 1, val: multi.test });
    assert.ok(h.epochsRun_ < 200, `early stopping should trigger, ran ${h.epochsRun_}`);
    assert.ok(h.bestEpoch_ <= h.epochsRun_ - 2);
  });
});
