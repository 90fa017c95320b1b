/** Platt scaling for SVM decision values: libsvm's sigmoid fit and pairwise coupling for multi-class probabilities. */

/** libsvm's sigmoid_train: fit P(+1|f) = 1/(1+exp(A f + B)) by Newton with backtracking. */
export function plattFit(dec: Float64Array, positive: Uint8Array): [number, number] {
  const l = dec.length;
  let prior1 = 0;
  for (let i = 0; i < l; i++) prior1 += positive[i]!;
  const prior0 = l - prior1;
  const hi = (prior1 + 1) / (prior1 + 2),
    lo = 1 / (prior0 + 2);
  const t = new Float64Array(l);
  for (let i = 0; i < l; i++) t[i] = positive[i] ? hi : lo;
  let A = 0,
    B = Math.log((prior0 + 1) / (prior1 + 1));
  const objective = (a: number, b: number) => {
    let f = 0;
    for (let i = 0; i < l; i++) {
      const z = dec[i]! * a + b;
      f += z >= 0 ? t[i]! * z + Math.log1p(Math.exp(-z)) : (t[i]! - 1) * z + Math.log1p(Math.exp(z));
    }
    return f;
  };
  let fval = objective(A, B);
  for (let iter = 0; iter < 100; iter++) {
    let h11 = 1e-12,
      h22 = 1e-12,
      h21 = 0,
      g1 = 0,
      g2 = 0;
    for (let i = 0; i < l; i++) {
      const z = dec[i]! * A + B;
      let p, q;
      if (z >= 0) {
        const e = Math.exp(-z);
        p = e / (1 + e);
        q = 1 / (1 + e);
      } else {
        const e = Math.exp(z);
        p = 1 / (1 + e);
        q = e / (1 + e);
      }
      const d2 = p * q;
      h11 += dec[i]! * dec[i]! * d2;
      h22 += d2;
      h21 += dec[i]! * d2;
      const d1 = t[i]! - p;
      g1 += dec[i]! * d1;
      g2 += d1;
    }
    if (Math.abs(g1) < 1e-5 && Math.abs(g2) < 1e-5) break;
    const det = h11 * h22 - h21 * h21;
    const dA = -(h22 * g1 - h21 * g2) / det;
    const dB = -(-h21 * g1 + h11 * g2) / det;
    const gd = g1 * dA + g2 * dB;
    let step = 1;
    while (step >= 1e-10) {
      const nA = A + step * dA,
        nB = B + step * dB;
      const nf = objective(nA, nB);
      if (nf < fval + 1e-4 * step * gd) {
        A = nA;
        B = nB;
        fval = nf;
        break;
      }
      step /= 2;
    }
    if (step < 1e-10) break;
  }
  return [A, B];
}

export function plattPredict(f: number, A: number, B: number): number {
  const z = f * A + B;
  return z >= 0 ? Math.exp(-z) / (1 + Math.exp(-z)) : 1 / (1 + Math.exp(z));
}

/** libsvm's multiclass_probability: pairwise coupling of r[i][j] = P(i | i or j). */
export function couple(k: number, r: Float64Array, out: Float64Array, Q: Float64Array, Qp: Float64Array): void {
  const p = out;
  for (let t = 0; t < k; t++) {
    p[t] = 1 / k;
    let qtt = 0;
    for (let j = 0; j < k; j++) {
      if (j === t) continue;
      qtt += r[j * k + t]! * r[j * k + t]!;
      Q[t * k + j] = -r[j * k + t]! * r[t * k + j]!;
    }
    Q[t * k + t] = qtt;
  }
  const eps = 0.005 / k;
  for (let iter = 0; iter < Math.max(100, k); iter++) {
    let pQp = 0;
    for (let t = 0; t < k; t++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += Q[t * k + j]! * p[j]!;
      Qp[t] = s;
      pQp += p[t]! * s;
    }
    let maxErr = 0;
    for (let t = 0; t < k; t++) maxErr = Math.max(maxErr, Math.abs(Qp[t]! - pQp));
    if (maxErr < eps) break;
    for (let t = 0; t < k; t++) {
      const diff = (-Qp[t]! + pQp) / Q[t * k + t]!;
      p[t]! += diff;
      pQp = (pQp + diff * (diff * Q[t * k + t]! + 2 * Qp[t]!)) / (1 + diff) / (1 + diff);
      for (let j = 0; j < k; j++) {
        Qp[j] = (Qp[j]! + diff * Q[t * k + j]!) / (1 + diff);
        p[j]! /= 1 + diff;
      }
    }
  }
}
