import { test } from 'node:test';
import assert from 'node:assert/strict';
import { binomialCdfHalf, mcnemarExact, mcnemarPaired, wilsonInterval } from '../src/eval/stats.ts';

const close = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

// Reference values: scipy 1.10 `binomtest(k, n).proportion_ci(method='wilson')` (equal to
// statsmodels' proportion_confint(k, n, method='wilson')); the 0/10 and 5/10 intervals are also
// the textbook ones (0, 0.2775) and (0.2366, 0.7634).
test('Wilson 95 % interval matches scipy / statsmodels', () => {
  const cases: [number, number, number, number][] = [
    [0, 10, 0, 0.27753279986288926],
    [5, 10, 0.236593090512564, 0.7634069094874361],
    [983, 1000, 0.97294404115977, 0.9893593101431836],
    [20, 20, 0.8388748419471808, 1],
  ];
  for (const [k, n, lo, hi] of cases) {
    const ci = wilsonInterval(k, n);
    close(ci.low, lo, 1e-12, `${k}/${n} low`);
    close(ci.high, hi, 1e-12, `${k}/${n} high`);
    assert.equal(ci.level, 0.95);
    assert.ok(ci.low <= k / n && k / n <= ci.high);
  }
  assert.deepEqual(wilsonInterval(0, 0), { low: 0, high: 1, level: 0.95, method: 'wilson' });
  assert.throws(() => wilsonInterval(11, 10), RangeError);
  assert.throws(() => wilsonInterval(1.5, 10), RangeError);
});

// Reference values: scipy `binomtest(min(b, c), b + c, 0.5).pvalue` = statsmodels
// `mcnemar([[., b], [c, .]], exact=True).pvalue`. Small ones by hand: 2·(1/2)^5 = 0.0625,
// 2·(1/2)^6 = 0.03125; b=3, c=7: 2·(1+10+45+120)/1024 = 0.34375. 121/59 is Wikipedia's McNemar example.
test('McNemar exact p-values match scipy / statsmodels and hand computation', () => {
  const cases: [number, number, number, number][] = [
    [0, 5, 0.0625, 1e-15],
    [0, 6, 0.03125, 1e-15],
    [1, 0, 1, 0],
    [0, 0, 1, 0],
    [3, 7, 0.34375, 1e-15],
    [12, 4, 0.076812744140625, 1e-14],
    [121, 59, 4.4344492637551645e-6, 1e-15],
    [400, 430, 0.3141242092169888, 1e-10],
  ];
  for (const [b, c, p, tol] of cases) {
    const r = mcnemarExact(b, c);
    close(r.pValue, p, tol, `b=${b} c=${c}`);
    assert.equal(mcnemarExact(c, b).pValue, r.pValue, 'symmetric');
  }
  // One image of difference out of 1000 is never significant.
  assert.equal(mcnemarExact(1, 0).pValue, 1);
  assert.ok(mcnemarExact(5, 4).pValue > 0.9);
  close(binomialCdfHalf(2, 4), 11 / 16, 1e-15, 'cdf');
  assert.throws(() => mcnemarExact(-1, 2), RangeError);
});

test('McNemar on paired predictions counts only the discordant images', () => {
  const y = [0, 1, 1, 0, 1, 0, 1, 1];
  const a = [0, 1, 1, 0, 1, 0, 0, 0]; // wrong on 6, 7
  const b = [0, 0, 1, 1, 1, 0, 1, 0]; // wrong on 1, 3, 7
  const r = mcnemarPaired(y, a, b);
  assert.equal(r.b, 2); // a right, b wrong: 1, 3
  assert.equal(r.c, 1); // a wrong, b right: 6
  assert.equal(r.pValue, 1);
  assert.throws(() => mcnemarPaired(y, a, [0]), RangeError);
});
