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
