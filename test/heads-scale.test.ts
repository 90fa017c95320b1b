import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { sliceRows, syntheticFeatures } from '../src/bench/synthetic-features.ts';
import { createHead, loadHead } from '../src/heads/registry.ts';
import type { HeadParams } from '../src/heads/types.ts';
import { removeDir, tempDir } from './helpers.ts';

/**
 * The large-n variants (RBF SVM → Nyström + linear solver, kNN → IVF index) agree with the exact
 * heads on held-out rows, say which variant ran, and survive save → load. Small n here (forced
 * with approx=…); the 10k-row accuracy comparison is in `npm run bench -- scale --parts approx`.
 */
const all = syntheticFeatures(3000, 32, 3, 5);
const train = sliceRows(all, 0, 2000);
const test_ = sliceRows(all, 2000, 3000);
const accuracy = (p: Int32Array): number => p.reduce((a, v, i) => a + (v === test_.y[i] ? 1 : 0), 0) / p.length;

for (const [kind, exact, approx, pattern] of [
  [
    'svm',
    { kernel: 'rbf', approx: 'exact' },
    { kernel: 'rbf', approx: 'nystroem', components: 400 },
    /Nyström, 400 landmarks/,
  ],
  ['knn', { approx: 'exact' }, { approx: 'ivf' }, /IVF index, 45 cells, 8 scanned/],
  [
    'svm',
    { kernel: 'linear', solver: 'dual' },
    { kernel: 'linear', solver: 'primal' },
    /primal \(L-BFGS, squared hinge\)/,
  ],
  [
    'svm',
    { kernel: 'linear', solver: 'dual' },
    { kernel: 'linear', solver: 'minibatch' },
    /trained by mini-batches \(Adam, 10 epochs of 256 rows.*solver=minibatch/,
  ],
  ['logreg', { solver: 'lbfgs' }, { solver: 'minibatch' }, /trained by mini-batches .*solver=minibatch/],
  ['rf', { maxSamples: 0 }, { maxSamples: 1000 }, /bootstrap sample of 1000 of 2000 rows/],
] as [string, HeadParams, HeadParams, RegExp][]) {
  test(`${kind}: approximate variant within 2 points of exact on held-out rows; reports itself; save → load identical`, async () => {
    const e = createHead(kind, exact);
    await e.fit(train.X, train.y, { nClasses: 3, seed: 1 });
    const a = createHead(kind, approx);
    await a.fit(train.X, train.y, { nClasses: 3, seed: 1 });
    const accE = accuracy(await e.predict(test_.X));
    const accA = accuracy(await a.predict(test_.X));
    assert.ok(accE > 0.6, `exact ${kind} learns something (${accE})`);
    assert.ok(Math.abs(accA - accE) <= 0.02, `${kind}: approximate ${accA} vs exact ${accE}`);
    assert.match((a as { variant_?: string }).variant_ ?? '', pattern);
    assert.equal((e as { variant_?: string }).variant_, undefined);
    const dir = tempDir('approx');
    try {
      await a.save(join(dir, 'h.json'));
      const b = await loadHead(join(dir, 'h.json'));
      assert.deepEqual(await b.predict(test_.X), await a.predict(test_.X));
      assert.deepEqual((await b.predictProba(test_.X)).data, (await a.predictProba(test_.X)).data);
      assert.equal((b as { variant_?: string }).variant_, (a as { variant_?: string }).variant_);
    } finally {
      removeDir(dir);
    }
  });
}

test('auto: exact below approxAbove, approximate above', async () => {
  const svm = createHead('svm', { kernel: 'rbf', approxAbove: 1500, components: 200 });
  await svm.fit(train.X, train.y, { nClasses: 3, seed: 1 });
  assert.match((svm as { variant_?: string }).variant_ ?? '', /2000 training rows > approxAbove=1500/);
  const knn = createHead('knn', {});
  await knn.fit(train.X, train.y, { nClasses: 3, seed: 1 });
  assert.equal((knn as { variant_?: string }).variant_, undefined, 'default kNN threshold (50k) keeps 2000 rows exact');
});

test('mini-batch linear solver: same objective as the exact one, memory one batch', async () => {
  // Two classes (one score) and three (multinomial / one-vs-rest): mini-batch predictions agree
  // with L-BFGS on almost every held-out row, not just in accuracy.
  for (const K of [2, 3]) {
    const sub = (s: { X: { data: Float32Array; rows: number; cols: number }; y: Int32Array }) => {
      const keep: number[] = [];
      for (let i = 0; i < s.y.length; i++) if (s.y[i]! < K) keep.push(i);
      const d = s.X.cols;
      const X = new Float32Array(keep.length * d);
      keep.forEach((i, t) => X.set(s.X.data.subarray(i * d, (i + 1) * d), t * d));
      return { X: { data: X, rows: keep.length, cols: d }, y: Int32Array.from(keep, (i) => s.y[i]!) };
    };
    const tr = sub(train),
      te = sub(test_);
    for (const kind of ['logreg', 'svm']) {
      const base: HeadParams = kind === 'svm' ? { kernel: 'linear' } : {};
      const e = createHead(kind, { ...base, solver: kind === 'svm' ? 'primal' : 'lbfgs' });
      const m = createHead(kind, { ...base, solver: 'minibatch' });
      await e.fit(tr.X, tr.y, { nClasses: K, seed: 3 });
      await m.fit(tr.X, tr.y, { nClasses: K, seed: 3 });
      const pe = await e.predict(te.X),
        pm = await m.predict(te.X);
      let agree = 0;
      for (let i = 0; i < pe.length; i++) if (pe[i] === pm[i]) agree++;
      assert.ok(agree / pe.length >= 0.97, `${kind} K=${K}: mini-batch agrees with exact on ${agree}/${pe.length}`);
      // Seeded: the same seed gives the same model; another seed shuffles differently.
      const m2 = createHead(kind, { ...base, solver: 'minibatch' });
      await m2.fit(tr.X, tr.y, { nClasses: K, seed: 3 });
      assert.deepEqual((await m2.predictProba(te.X)).data, (await m.predictProba(te.X)).data);
    }
  }
});

test('auto: logreg and linear SVM switch to mini-batches above minibatchAbove', async () => {
  const lr = createHead('logreg', { minibatchAbove: 1500 });
  await lr.fit(train.X, train.y, { nClasses: 3, seed: 1 });
  assert.match((lr as { variant_?: string }).variant_ ?? '', /2000 training rows > minibatchAbove=1500/);
  const svm = createHead('svm', { kernel: 'linear', minibatchAbove: 1500 });
  await svm.fit(train.X, train.y, { nClasses: 3, seed: 1 });
  assert.match((svm as { variant_?: string }).variant_ ?? '', /2000 training rows > minibatchAbove=1500/);
  const exact = createHead('logreg', {});
  await exact.fit(train.X, train.y, { nClasses: 3, seed: 1 });
  assert.equal((exact as { variant_?: string }).variant_, undefined);
});

test('rf: the forest is the same grown on 1 or 2 threads (a tree depends on its seed alone)', async () => {
  const one = createHead('rf', { nTrees: 6, nJobs: 1 });
  const two = createHead('rf', { nTrees: 6, nJobs: 2 });
  await one.fit(train.X, train.y, { nClasses: 3, seed: 4 });
  await two.fit(train.X, train.y, { nClasses: 3, seed: 4 });
  assert.deepEqual((await two.predictProba(test_.X)).data, (await one.predictProba(test_.X)).data);
  const other = createHead('rf', { nTrees: 6, nJobs: 1 });
  await other.fit(train.X, train.y, { nClasses: 3, seed: 5 });
  assert.notDeepEqual((await other.predictProba(test_.X)).data, (await one.predictProba(test_.X)).data);
});

test('dense: maxSteps cuts the epochs on large training sets and says so; small sets keep every epoch', async () => {
  const capped = createHead('dense', { maxSteps: 25, epochs: 30, batchSize: 200 });
  await capped.fit(train.X, train.y, { nClasses: 3, seed: 1 });
  // 2000 rows / 200 = 10 steps per epoch → 3 epochs for 25 steps.
  assert.equal((capped as unknown as { epochsRun_: number }).epochsRun_, 3);
  assert.match(
    (capped as { variant_?: string }).variant_ ?? '',
    /3 epochs instead of 30: 2000 training rows make 10 steps per epoch, capped at maxSteps=25/,
  );
  const full = createHead('dense', { epochs: 4 });
  await full.fit(train.X, train.y, { nClasses: 3, seed: 1 });
  assert.equal((full as unknown as { epochsRun_: number }).epochsRun_, 4);
  assert.equal((full as { variant_?: string }).variant_, undefined);
});
