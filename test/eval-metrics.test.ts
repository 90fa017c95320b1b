import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  accuracy,
  confusionMatrix,
  evaluate,
  logLoss,
  macroF1,
  meanStd,
  perClassMetrics,
} from '../src/eval/metrics.ts';
import { crossValidate, stratifiedHoldout, stratifiedKFold } from '../src/eval/cv.ts';
import { tuneGrid } from '../src/eval/tune.ts';
import { normalizeExtraRows, renderMarkdown, type ReportRow } from '../src/eval/report.ts';
import { chooseHead } from '../src/eval/select.ts';
import { addIntervals, addPairedTests, cheapest, makeVerdict } from '../src/eval/verdict.ts';
import { Rng } from '../src/linalg/random.ts';
import { UserError } from '../src/util/errors.ts';

const close = (a: number, b: number, eps = 1e-9) => assert.ok(Math.abs(a - b) <= eps, `${a} ≉ ${b}`);

// Hand-computed: 3 classes, class 2 is never predicted.
//            pred 0  1  2
// true 0        1  1  0
// true 1        0  2  0
// true 2        1  1  0
const yT = [0, 0, 1, 1, 2, 2];
const yP = [0, 1, 1, 1, 0, 1];

test('accuracy and confusion matrix (rows = true, cols = predicted)', () => {
  assert.equal(accuracy(yT, yP), 0.5);
  assert.deepEqual(confusionMatrix(yT, yP, 3), [
    [1, 1, 0],
    [0, 2, 0],
    [1, 1, 0],
  ]);
  assert.equal(accuracy([], []), 0);
  assert.throws(() => accuracy([0], [0, 1]), UserError);
  assert.throws(() => confusionMatrix([0, 3], [0, 0], 3), UserError);
});

test('per-class precision/recall/F1/support; a never-predicted class gives 0, not NaN', () => {
  const pc = perClassMetrics(confusionMatrix(yT, yP, 3));
  close(pc[0]!.precision, 0.5);
  close(pc[0]!.recall, 0.5);
  close(pc[0]!.f1, 0.5);
  assert.equal(pc[0]!.support, 2);
  close(pc[1]!.precision, 0.5);
  close(pc[1]!.recall, 1);
  close(pc[1]!.f1, 2 / 3);
  assert.equal(pc[1]!.support, 2);
  assert.deepEqual(pc[2], { precision: 0, recall: 0, f1: 0, support: 2 });
  close(macroF1(confusionMatrix(yT, yP, 3)), (0.5 + 2 / 3 + 0) / 3);
  // A class absent from y_true and y_pred: support 0, all zeros.
  assert.deepEqual(perClassMetrics(confusionMatrix([0, 1], [0, 1], 3))[2], {
    precision: 0,
    recall: 0,
    f1: 0,
    support: 0,
  });
  const ev = evaluate(yT, yP, 3);
  assert.equal(ev.accuracy, 0.5);
  assert.ok(Number.isFinite(ev.macroF1));
});

test('log loss (clipped) and meanStd (ddof 0)', () => {
  close(
    logLoss([0, 1], { data: new Float32Array([0.8, 0.2, 0.4, 0.6]), rows: 2, cols: 2 }),
    -(Math.log(0.8) + Math.log(0.6)) / 2,
    1e-7,
  );
  close(logLoss([0], { data: new Float32Array([0, 1]), rows: 1, cols: 2 }), -Math.log(1e-15), 1e-9);
  assert.throws(() => logLoss([0, 1], { data: new Float32Array([1, 0]), rows: 1, cols: 2 }), UserError);
  const ms = meanStd([1, 2, 3, 4]);
  close(ms.mean, 2.5);
  close(ms.std, Math.sqrt(1.25));
  assert.deepEqual(meanStd([]), { mean: 0, std: 0 });
  assert.deepEqual(meanStd([0.9]), { mean: 0.9, std: 0 });
});

test('stratified k-fold: a partition, per-class balanced, seeded and deterministic', () => {
  const y = Int32Array.from({ length: 53 }, (_, i) => (i % 5 === 0 ? 1 : 0)); // 11 of class 1, 42 of class 0
  const folds = stratifiedKFold(y, 5, 7);
  assert.equal(folds.length, 5);
  const seen = new Int32Array(y.length);
  for (const f of folds) {
    for (const i of f.test) seen[i]!++;
    assert.equal(f.train.length + f.test.length, y.length);
    assert.ok(!f.test.some((i) => f.train.includes(i)));
    const ones = Array.from(f.test).filter((i) => y[i] === 1).length;
    assert.ok(ones === 2 || ones === 3, `class 1 per fold: ${ones}`);
    assert.ok(f.test.length === 10 || f.test.length === 11, `fold size ${f.test.length}`);
  }
  assert.ok(
    seen.every((c) => c === 1),
    'every row in exactly one test fold',
  );
  assert.deepEqual(stratifiedKFold(y, 5, 7), folds, 'same seed → same folds');
  assert.notDeepEqual(
    stratifiedKFold(y, 5, 8).map((f) => Array.from(f.test)),
    folds.map((f) => Array.from(f.test)),
  );
  assert.throws(() => stratifiedKFold(y, 1, 0), UserError);
  assert.throws(() => stratifiedKFold(Int32Array.of(0, 1), 3, 0), UserError);
});

test('stratified holdout: ~fraction of each class, seeded, disjoint', () => {
  const y = Int32Array.from({ length: 100 }, (_, i) => (i < 70 ? 0 : 1));
  const { rest, holdout } = stratifiedHoldout(y, 0.1, 42);
  assert.equal(holdout.length, 10);
  assert.equal(Array.from(holdout).filter((i) => y[i] === 0).length, 7);
  assert.equal(rest.length + holdout.length, 100);
  assert.deepEqual(stratifiedHoldout(y, 0.1, 42), { rest, holdout });
  // A class of 2 still gives one holdout row; a singleton stays in `rest`.
  const small = stratifiedHoldout(Int32Array.of(0, 0, 1), 0.1, 1);
  assert.equal(small.holdout.length, 1);
  assert.ok(small.rest.includes(2));
});

test('crossValidate trains fresh heads per fold and is deterministic', async () => {
  const rng = new Rng(3);
  const n = 90,
    d = 6;
  const X = new Float32Array(n * d);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = i % 3;
    for (let j = 0; j < d; j++) X[i * d + j] = (j === y[i] ? 3 : 0) + rng.normal();
  }
  const m = { data: X, rows: n, cols: d };
  const a = await crossValidate('logreg', {}, m, y, 3, 5, 3);
  assert.equal(a.folds.length, 3);
  assert.ok(a.accuracy.mean > 0.8, `cv mean ${a.accuracy.mean}`);
  close(a.accuracy.mean, meanStd(a.folds.map((f) => f.accuracy)).mean);
  assert.deepEqual(await crossValidate('logreg', {}, m, y, 3, 5, 3), a);
  await assert.rejects(crossValidate('logreg', { C: -1 }, m, y, 3, 5, 3), UserError);
});

test("tune grids: user-fixed params are not searched; names match the heads' specs", () => {
  assert.deepEqual(
    tuneGrid('logreg').map((p) => p.C),
    [0.01, 0.1, 1, 10, 100],
  );
  assert.deepEqual(
    tuneGrid('svm', { kernel: 'linear' }).map((p) => [p.kernel, p.C]),
    [0.01, 0.1, 1, 10, 100].map((c) => ['linear', c]),
  );
  assert.deepEqual(tuneGrid('svm', { C: 3 }), [{ C: 3 }]);
  assert.equal(tuneGrid('rf').length, 6);
  assert.ok(tuneGrid('knn').every((p) => typeof p.k === 'number'));
  assert.deepEqual(
    tuneGrid('dense', { hidden: 32 }).map((p) => p.dropout),
    [0.2, 0.5],
  );
});

function row(name: string, test: number, fit: number, bytes: number, val = test): ReportRow {
  return {
    name,
    kind: name,
    params: {},
    source: 'compare',
    testAccuracy: test,
    valAccuracy: val,
    macroF1: test,
    logLoss: 0.1,
    perClass: null,
    confusion: null,
    fitSeconds: fit,
    predictMsPer1000: 1,
    modelBytes: bytes,
  };
}

/** Per-image predictions on n test images (all labels 0) with `wrong` mistakes at the given offset. */
function preds(n: number, wrong: number, offset = 0): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < wrong; i++) p[(offset + i) % n] = 1;
  return p;
}

function verdictFor(rows: ReportRow[], predictions: Record<string, Int32Array>, n: number, by: 'val' | 'cv' = 'val') {
  const selection = chooseHead(
    rows.map((r) => ({
      name: r.name,
      score: by === 'cv' ? (r.cv?.mean ?? null) : r.valAccuracy,
      tieBreak: r.valLogLoss ?? null,
    })),
    by,
  );
  addIntervals(rows, n);
  addPairedTests(rows, selection.chosen, new Int32Array(n), new Map(Object.entries(predictions)));
  return makeVerdict(rows, selection);
}

test('verdict: the head chosen on validation, a one-image test difference is a tie, the cheapest tied head is recommended', () => {
  // svm is chosen on validation; logreg is one image better on test: tied, and cheaper.
  const rows = [
    row('svm', 0.982, 1, 2 * 1024 * 1024, 0.99),
    row('logreg', 0.983, 0.1, 12 * 1024, 0.985),
    row('rf', 0.95, 3, 1e6, 0.96),
  ];
  const v = verdictFor(rows, { svm: preds(1000, 18), logreg: preds(1000, 17, 1), rf: preds(1000, 50, 500) }, 1000);
  assert.equal(v.chosen, 'svm');
  assert.deepEqual(v.tied, ['svm', 'logreg']);
  assert.equal(v.recommended, 'logreg');
  assert.match(
    v.text,
    /^svm is chosen by validation accuracy \(99\.00%\): test accuracy 98\.20% \(95% CI 97\.2–98\.9%, n=1000\)\./,
  );
  assert.match(v.text, /Tied with logreg \(98\.30%, p=1\.00\)/);
  assert.match(v.text, /Significantly better than rf \(95\.00%, p<0\.001\)/);
  assert.match(v.text, /Recommended: logreg, the cheapest of the tied heads/);
  assert.doesNotMatch(v.text, /wins/);
  assert.equal(rows[1]!.vsChosen!.significant, false);
  assert.deepEqual([rows[1]!.vsChosen!.b, rows[1]!.vsChosen!.c], [0, 1], 'logreg alone got image 0 right');
  assert.equal(rows[2]!.vsChosen!.better, 'chosen');
  assert.equal(rows[0]!.vsChosen, undefined, 'no test against itself');
});

test('verdict: validation ties are broken by validation log loss, then list order — never by test', () => {
  const a = { ...row('a', 0.9, 1, 10, 0.95), valLogLoss: 0.2 };
  const b = { ...row('b', 0.99, 0.5, 10, 0.95), valLogLoss: 0.1 };
  assert.equal(
    chooseHead(
      [a, b].map((r) => ({ name: r.name, score: r.valAccuracy, tieBreak: r.valLogLoss })),
      'val',
    ).chosen,
    'b',
  );
  assert.equal(
    chooseHead(
      [
        { name: 'x', score: 0.9, tieBreak: null },
        { name: 'y', score: 0.9, tieBreak: null },
      ],
      'val',
    ).chosen,
    'x',
  );
  // A head significantly better on test than the chosen one is reported, not chosen.
  const rows = [row('c', 0.8, 1, 10, 0.99), row('d', 0.95, 1, 10, 0.9)];
  const v = verdictFor(rows, { c: preds(200, 40), d: preds(200, 10) }, 200);
  assert.equal(v.chosen, 'c');
  assert.match(v.text, /Note: d \(95\.00%, p<0\.001\) did significantly better on test, although validation chose c\./);
  assert.match(
    verdictFor([row('only', 0.9, 1, 1)], { only: preds(10, 1) }, 10).text,
    /^only is chosen .*No other head to compare with/,
  );
  assert.match(
    makeVerdict([row('z', 0.9, 1, 1, null as unknown as number)], chooseHead([], 'val')).text,
    /^No head could be chosen/,
  );
});

test('cheapest: weighs fit time, predict time and size together, by cost ratios', () => {
  const fastFitBig = { ...row('knn', 0.9, 0.001, 6e6), predictMsPer1000: 60 };
  const small = { ...row('logreg', 0.9, 0.2, 12e3), predictMsPer1000: 2 };
  const svm = { ...row('svm', 0.9, 0.4, 2e6), predictMsPer1000: 20 };
  assert.equal(cheapest([fastFitBig, small, svm]).name, 'logreg');
  // Timing noise on fit cannot outweigh a 25× larger model and 2× slower predictions (cost ratios, not ranks).
  const linear = { ...row('svm-linear', 0.9, 0.25, 12.4 * 1024), predictMsPer1000: 2.4 };
  const dense = { ...row('dense', 0.9, 0.19, 311 * 1024), predictMsPer1000: 5.7 };
  const lr = { ...row('logreg', 0.9, 0.46, 12.3 * 1024), predictMsPer1000: 13.7 };
  assert.equal(cheapest([dense, lr, linear]).name, 'svm-linear');
});

test('extra rows: validated, normalised, shown with an interval but not chosen (no validation of their own here)', () => {
  const extra = normalizeExtraRows(
    { rows: [{ name: 'finetuned', kind: 'finetune', testAccuracy: 0.99, fitSeconds: 120 }] },
    ['cats', 'dogs'],
    'x.json',
  );
  assert.equal(extra[0]!.source, 'extra');
  assert.equal(extra[0]!.modelBytes, null);
  const rows = [row('svm', 0.98, 1, 100), ...extra];
  const v = verdictFor(
    rows.filter((r) => r.source === 'compare'),
    { svm: preds(1000, 20) },
    1000,
  );
  addIntervals(rows, 1000);
  assert.equal(v.chosen, 'svm');
  assert.ok(rows[1]!.testInterval && rows[1]!.testInterval.low < 0.99 && rows[1]!.testInterval.high > 0.99);
  assert.throws(() => normalizeExtraRows([{ name: 'x', testAccuracy: 98 }], ['a', 'b'], 'x.json'), /fraction/);
  assert.throws(() => normalizeExtraRows([{ testAccuracy: 0.5 }], ['a', 'b'], 'x.json'), /name/);
  assert.throws(() => normalizeExtraRows([{ name: 'x', confusion: [[1]] }], ['a', 'b'], 'x.json'), /2×2/);
  assert.throws(() => normalizeExtraRows('nope', ['a'], 'x.json'), UserError);
});

test('markdown: verdict is the first line; pipes in names are escaped', () => {
  const rows = [row('a|b', 0.9, 1, 10)];
  const md = renderMarkdown({
    format: 'convcache-report',
    version: 1,
    createdAt: 'now',
    toolVersion: '0',
    totalSeconds: 1,
    cache: {
      dir: '/c',
      dataRoot: '/d',
      model: 'm',
      weightsHash: 'h',
      layer: 'l',
      pooling: 'avg',
      D: 4,
      classes: ['x', 'y'],
      counts: { train: 1 },
      countsPerClass: {},
      skipped: 0,
    },
    split: { train: 1, val: 0, test: 0, valSource: 'none', valFraction: 0, seed: 1 },
    options: { heads: ['a|b'], cv: null, tune: false, classWeight: 'none', seed: 1 },
    verdict: verdictFor(rows, {}, 0).text,
    chosen: 'a|b',
    selection: null,
    tied: ['a|b'],
    recommended: 'a|b',
    best: 'a|b',
    heads: rows,
    misclassified: null,
  });
  assert.match(md.split('\n')[0]!, /^\*\*Verdict:\*\* a\|b is chosen by validation accuracy/);
  assert.ok(md.includes('a\\|b'));
});
