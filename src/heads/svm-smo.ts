import type { SubKernel } from './svm-kernel.ts';

/** libsvm's SMO solver for one binary kernel SVM subproblem. */

export interface SmoResult {
  alpha: Float64Array;
  rho: number;
  /** y_t·(G_t+1) − rho = decision value of each training row */ dec: Float64Array;
  iterations: number;
}

/**
 * libsvm Solver for the C-SVC dual: min ½αᵀQα − eᵀα, 0 ≤ α_t ≤ C_t, yᵀα = 0, on the rows `sub`
 * (global indices into the kernel), labels y ∈ {+1, −1}.
 */
export function smo(kern: SubKernel, y: Int8Array, Cs: Float64Array, eps: number, maxIter: number): SmoResult {
  const l = y.length;
  const alpha = new Float64Array(l);
  const G = new Float64Array(l).fill(-1);
  const QD = new Float64Array(l);
  for (let t = 0; t < l; t++) QD[t] = kern.row(t)[t]!;
  const TAU = 1e-12;
  let iter = 0;
  for (; iter < maxIter; iter++) {
    // Working set selection 2 (second-order).
    let Gmax = -Infinity,
      Gmax2 = -Infinity,
      gi = -1,
      gj = -1,
      objMin = Infinity;
    for (let t = 0; t < l; t++) {
      if (y[t] === 1) {
        if (alpha[t]! < Cs[t]! && -G[t]! >= Gmax) {
          Gmax = -G[t]!;
          gi = t;
        }
      } else if (alpha[t]! > 0 && G[t]! >= Gmax) {
        Gmax = G[t]!;
        gi = t;
      }
    }
    if (gi < 0) break;
    const Ki = kern.row(gi);
    const QDi = QD[gi]!;
    for (let t = 0; t < l; t++) {
      if (y[t] === 1) {
        if (alpha[t]! > 0) {
          const gd = Gmax + G[t]!;
          if (G[t]! >= Gmax2) Gmax2 = G[t]!;
          if (gd > 0) {
            const qc = QDi + QD[t]! - 2 * Ki[t]!;
            const od = -(gd * gd) / (qc > 0 ? qc : TAU);
            if (od <= objMin) {
              gj = t;
              objMin = od;
            }
          }
        }
      } else if (alpha[t]! < Cs[t]!) {
        const gd = Gmax - G[t]!;
        if (-G[t]! >= Gmax2) Gmax2 = -G[t]!;
        if (gd > 0) {
          const qc = QDi + QD[t]! - 2 * Ki[t]!;
          const od = -(gd * gd) / (qc > 0 ? qc : TAU);
          if (od <= objMin) {
            gj = t;
            objMin = od;
          }
        }
      }
    }
    if (Gmax + Gmax2 < eps || gj < 0) break;
    const i = gi,
      j = gj;
    const Kj = kern.row(j);
    const Ci = Cs[i]!,
      Cj = Cs[j]!;
    const oldAi = alpha[i]!,
      oldAj = alpha[j]!;
    const yi = y[i]!,
      yj = y[j]!;
    const Qij = yi * yj * Ki[j]!;
    let ai = oldAi,
      aj = oldAj;
    if (yi !== yj) {
      let qc = QD[i]! + QD[j]! + 2 * Qij;
      if (qc <= 0) qc = TAU;
      const delta = (-G[i]! - G[j]!) / qc;
      const diff = ai - aj;
      ai += delta;
      aj += delta;
      if (diff > 0) {
        if (aj < 0) {
          aj = 0;
          ai = diff;
        }
      } else if (ai < 0) {
        ai = 0;
        aj = -diff;
      }
      if (diff > Ci - Cj) {
        if (ai > Ci) {
          ai = Ci;
          aj = Ci - diff;
        }
      } else if (aj > Cj) {
        aj = Cj;
        ai = Cj + diff;
      }
    } else {
      let qc = QD[i]! + QD[j]! - 2 * Qij;
      if (qc <= 0) qc = TAU;
      const delta = (G[i]! - G[j]!) / qc;
      const sum = ai + aj;
      ai -= delta;
      aj += delta;
      if (sum > Ci) {
        if (ai > Ci) {
          ai = Ci;
          aj = sum - Ci;
        }
      } else if (aj < 0) {
        aj = 0;
        ai = sum;
      }
      if (sum > Cj) {
        if (aj > Cj) {
          aj = Cj;
          ai = sum - Cj;
        }
      } else if (ai < 0) {
        ai = 0;
        aj = sum;
      }
    }
    alpha[i] = ai;
    alpha[j] = aj;
    // G_t += Q_ti Δα_i + Q_tj Δα_j, with Q_ts = y_t y_s K_ts.
    const ci = yi * (ai - oldAi),
      cj = yj * (aj - oldAj);
    for (let t = 0; t < l; t++) G[t]! += y[t]! * (ci * Ki[t]! + cj * Kj[t]!);
  }
  // rho (libsvm calculate_rho).
  let ub = Infinity,
    lb = -Infinity,
    nFree = 0,
    sumFree = 0;
  for (let t = 0; t < l; t++) {
    const yG = y[t]! * G[t]!;
    if (alpha[t]! >= Cs[t]!) {
      if (y[t] === -1) ub = Math.min(ub, yG);
      else lb = Math.max(lb, yG);
    } else if (alpha[t]! <= 0) {
      if (y[t] === 1) ub = Math.min(ub, yG);
      else lb = Math.max(lb, yG);
    } else {
      nFree++;
      sumFree += yG;
    }
  }
  const rho = nFree > 0 ? sumFree / nFree : (ub + lb) / 2;
  const dec = new Float64Array(l);
  for (let t = 0; t < l; t++) dec[t] = y[t]! * (G[t]! + 1) - rho;
  return { alpha, rho, dec, iterations: iter };
}
