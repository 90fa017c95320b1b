/**
 * Small statistics for honest verdicts: a confidence interval for an accuracy measured on n test
 * images (Wilson score interval) and a paired test of two classifiers scored on the SAME test
 * images (McNemar's test, exact binomial form). Pure functions, no dependencies.
 */

/** Two-sided 95 % normal quantile, Φ⁻¹(0.975). */
export const Z95 = 1.959963984540054;

export interface Interval {
  low: number;
  high: number;
  /** Coverage, e.g. 0.95. */
  level: number;
  method: 'wilson';
}

/**
 * Wilson score interval for a binomial proportion (successes out of n), as statsmodels'
 * `proportion_confint(count, nobs, method='wilson')`. Unlike the normal ("Wald") interval it
 * stays inside [0, 1] and is sensible at 0 % or 100 %, which matters for accuracies near 1.
 */
export function wilsonInterval(successes: number, n: number, z = Z95): Interval {
  if (!(Number.isInteger(successes) && Number.isInteger(n) && n >= 0 && successes >= 0 && successes <= n)) {
    throw new RangeError(`wilsonInterval: need integers 0 <= successes <= n, got ${successes}/${n}`);
  }
  const level = levelOf(z);
  if (n === 0) return { low: 0, high: 1, level, method: 'wilson' };
  const p = successes / n;
  const z2 = z * z;
  const denom = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denom;
  const half = (z / denom) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  // Exact 0 and 1 at the edges (the formula gives them up to rounding).
  return {
    low: successes === 0 ? 0 : Math.max(0, centre - half),
    high: successes === n ? 1 : Math.min(1, centre + half),
    level,
    method: 'wilson',
  };
}

/** Two-sided coverage of ±z under the standard normal. */
function levelOf(z: number): number {
  return z === Z95 ? 0.95 : 1 - 2 * (1 - normalCdf(z));
}

function normalCdf(x: number): number {
  // Abramowitz–Stegun 7.1.26 on erf; only used to label non-default levels.
  const t = 1 / (1 + (0.3275911 * Math.abs(x)) / Math.SQRT2);
  const erf =
    1 -
    t *
      (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) *
      Math.exp(-(x * x) / 2);
  return 0.5 * (1 + Math.sign(x) * erf);
}

/** ln(n!) by summation for small n, Stirling series beyond (exact to double precision here). */
function logFactorial(n: number): number {
  if (n < 256) {
    let s = 0;
    for (let i = 2; i <= n; i++) s += Math.log(i);
    return s;
  }
  const x = n + 1;
  return (
    (x - 0.5) * Math.log(x) - x + 0.5 * Math.log(2 * Math.PI) + 1 / (12 * x) - 1 / (360 * x ** 3) + 1 / (1260 * x ** 5)
  );
}

/** P(X <= k) for X ~ Binomial(n, 1/2). */
export function binomialCdfHalf(k: number, n: number): number {
  if (k < 0) return 0;
  if (k >= n) return 1;
  const lf = logFactorial(n);
  const ln2n = n * Math.LN2;
  let s = 0;
  for (let i = 0; i <= k; i++) s += Math.exp(lf - logFactorial(i) - logFactorial(n - i) - ln2n);
  return Math.min(1, s);
}

export interface McNemarResult {
  /** Images the first classifier got right and the second wrong. */
  b: number;
  /** Images the first classifier got wrong and the second right. */
  c: number;
  /** Two-sided exact p-value: min(1, 2·P(X <= min(b, c))), X ~ Binomial(b + c, 1/2). */
  pValue: number;
  method: 'exact-binomial';
}

/**
 * McNemar's test from the discordant counts, exact binomial form — what statsmodels'
 * `mcnemar(table, exact=True)` and scipy's `binomtest(min(b, c), b + c, 0.5)` compute. Only the
 * images on which the two classifiers disagree carry information about which is better; with no
 * disagreements the p-value is 1. The exact form is valid at every count (the χ² approximation
 * needs b + c ≳ 25), and costs O(min(b, c)) terms.
 */
export function mcnemarExact(b: number, c: number): McNemarResult {
  if (!(Number.isInteger(b) && Number.isInteger(c) && b >= 0 && c >= 0))
    throw new RangeError(`mcnemarExact: need counts >= 0, got ${b}, ${c}`);
  const n = b + c;
  const pValue = n === 0 ? 1 : Math.min(1, 2 * binomialCdfHalf(Math.min(b, c), n));
  return { b, c, pValue, method: 'exact-binomial' };
}

/** McNemar on per-image predictions of two classifiers against the same labels. */
export function mcnemarPaired(y: ArrayLike<number>, predA: ArrayLike<number>, predB: ArrayLike<number>): McNemarResult {
  if (y.length !== predA.length || y.length !== predB.length)
    throw new RangeError(`mcnemarPaired: lengths differ (${y.length}, ${predA.length}, ${predB.length})`);
  let b = 0,
    c = 0;
  for (let i = 0; i < y.length; i++) {
    const a = predA[i] === y[i],
      bb = predB[i] === y[i];
    if (a && !bb) b++;
    else if (!a && bb) c++;
  }
  return mcnemarExact(b, c);
}
