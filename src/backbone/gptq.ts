/**
 * Error-compensating weight rounding for the int8 conv base (GPTQ: Frantar et al. 2023, "GPTQ:
 * Accurate Post-Training Quantization for Generative Pre-trained Transformers", the Optimal Brain
 * Quantizer of Frantar & Alistarh 2022 applied column by column). Rounding each weight to the
 * nearest int8 step ignores how the errors of one output channel's weights add up over real inputs;
 * GPTQ rounds the weights one input at a time and moves each rounding error onto the weights not
 * yet rounded, in the direction that keeps the channel's output on calibration inputs closest:
 * it minimises ||(W − Ŵ)X||² with H = XXᵀ, the Gram matrix of the conv's input patches.
 * Pure math here; the Gram matrices come from calibration images (quantize.ts).
 */

/** Lower Cholesky factor of the symmetric d×d matrix `a` (row-major), or null if not positive definite. */
export function cholesky(a: Float64Array, d: number): Float64Array | null {
  const l = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * d + j]!;
      for (let k = 0; k < j; k++) s -= l[i * d + k]! * l[j * d + k]!;
      if (i === j) {
        if (!(s > 0)) return null;
        l[i * d + i] = Math.sqrt(s);
      } else l[i * d + j] = s / l[j * d + j]!;
    }
  }
  return l;
}

/** L⁻¹ of a lower-triangular d×d matrix (row-major), row by row with contiguous inner loops. */
function lowerInverse(l: Float64Array, d: number): Float64Array {
  const li = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    const row = i * d;
    // Row i of L⁻¹: (e_i − Σ_{k<i} L[i][k] · row k of L⁻¹) / L[i][i].
    for (let k = 0; k < i; k++) {
      const a = l[row + k]!;
      if (a === 0) continue;
      const rk = k * d;
      for (let j = 0; j <= k; j++) li[row + j] -= a * li[rk + j]!;
    }
    const inv = 1 / l[row + i]!;
    for (let j = 0; j < i; j++) li[row + j] *= inv;
    li[row + i] = inv;
  }
  return li;
}

/**
 * The upper-triangular U with H⁻¹ = UᵀU, which GPTQ's updates read. With P the order reversal and
 * PHP = L'L'ᵀ, U = P L'⁻¹ P: one Cholesky and one triangular inverse, no explicit H⁻¹.
 */
export function upperCholeskyOfInverse(h: Float64Array, d: number): Float64Array | null {
  const rev = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) rev[i * d + j] = h[(d - 1 - i) * d + (d - 1 - j)]!;
  const l = cholesky(rev, d);
  if (!l) return null;
  const li = lowerInverse(l, d);
  const u = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let j = i; j < d; j++) u[i * d + j] = li[(d - 1 - i) * d + (d - 1 - j)]!;
  return u;
}

export interface GptqOptions {
  /** Added to H's diagonal, as a fraction of its mean diagonal (GPTQ's percdamp). */
  damp?: number;
}

/**
 * Round `rows` rows of d weights each (row-major, one output channel per row) to integers in
 * [−qmax, qmax] at the given per-row scales, minimising each row's output error ||(w − ŵ)ᵀX||²
 * for inputs whose Gram matrix is `gram` (d×d, row-major; shared by every row). Inputs are taken in
 * decreasing order of their energy (GPTQ's act-order). Returns the integer weights (same layout).
 * Falls back to round-to-nearest if H cannot be factored even with 100x damping.
 */
export function gptqRound(
  w: Float32Array,
  rows: number,
  d: number,
  gram: Float64Array,
  scales: ArrayLike<number>,
  qmax: number,
  opts: GptqOptions = {},
): Int8Array {
  const out = new Int8Array(rows * d);
  const nearest = (): Int8Array => {
    for (let r = 0; r < rows; r++)
      for (let i = 0; i < d; i++)
        out[r * d + i] = Math.max(-qmax, Math.min(qmax, Math.round(w[r * d + i]! / scales[r]!)));
    return out;
  };
  let meanDiag = 0;
  for (let i = 0; i < d; i++) meanDiag += gram[i * d + i]! / d;
  if (!(meanDiag > 0)) return nearest();
  // act-order: the inputs with the most energy are rounded first (ties by index: deterministic).
  const perm = Array.from({ length: d }, (_, i) => i).sort((a, b) => gram[b * d + b]! - gram[a * d + a]! || a - b);
  let u: Float64Array | null = null;
  for (let damp = opts.damp ?? 0.01; damp <= 1 && u === null; damp *= 10) {
    const h = new Float64Array(d * d);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) h[i * d + j] = gram[perm[i]! * d + perm[j]!]!;
    for (let i = 0; i < d; i++) {
      // An input that is always zero carries no error: give it unit weight so H stays invertible.
      if (h[i * d + i] === 0) h[i * d + i] = 1;
      h[i * d + i] += damp * meanDiag;
    }
    // Row i of U (H⁻¹ = UᵀU) holds the update of the later inputs after rounding input i.
    u = upperCholeskyOfInverse(h, d);
  }
  if (u === null) return nearest();
  const row = new Float64Array(d);
  for (let r = 0; r < rows; r++) {
    const s = scales[r]!;
    for (let i = 0; i < d; i++) row[i] = w[r * d + perm[i]!]!;
    for (let i = 0; i < d; i++) {
      const q = Math.max(-qmax, Math.min(qmax, Math.round(row[i]! / s)));
      out[r * d + perm[i]!] = q;
      const err = (row[i]! - q * s) / u[i * d + i]!;
      for (let j = i + 1; j < d; j++) row[j] -= err * u[i * d + j]!;
    }
  }
  return out;
}

export interface ConvGeometry {
  kernel: readonly [number, number];
  strides: readonly [number, number];
  /** ONNX order: top, left, bottom, right. */
  pads: readonly [number, number, number, number];
  group: number;
}

/**
 * Add the Gram matrices of a conv's input patches (zero padding included, as the conv sees them)
 * for one NCHW batch `x` to `grams`: one (cin/group·kh·kw)² matrix per group, in the weights'
 * [cin, kh, kw] order. Only for small patches (depthwise 3×3, the first conv's 3×3×3); 1×1 convs
 * get theirs from a MatMul inside the calibration graph.
 */
export function addPatchGrams(grams: Float64Array[], x: Float32Array, dims: readonly number[], g: ConvGeometry): void {
  const [n, c, hh, ww] = dims as [number, number, number, number];
  const [kh, kw] = g.kernel;
  const [sh, sw] = g.strides;
  const [pt, pl, pb, pr] = g.pads;
  const cg = c / g.group;
  const d = cg * kh * kw;
  const oh = Math.floor((hh + pt + pb - kh) / sh) + 1;
  const ow = Math.floor((ww + pl + pr - kw) / sw) + 1;
  const p = new Float64Array(d);
  for (let grp = 0; grp < g.group; grp++) {
    const gram = (grams[grp] ??= new Float64Array(d * d));
    for (let b = 0; b < n; b++)
      for (let oy = 0; oy < oh; oy++)
        for (let ox = 0; ox < ow; ox++) {
          let k = 0;
          for (let ci = 0; ci < cg; ci++) {
            const plane = (b * c + grp * cg + ci) * hh * ww;
            for (let ky = 0; ky < kh; ky++) {
              const y = oy * sh + ky - pt;
              for (let kx = 0; kx < kw; kx++, k++) {
                const xx = ox * sw + kx - pl;
                p[k] = y >= 0 && y < hh && xx >= 0 && xx < ww ? x[plane + y * ww + xx]! : 0;
              }
            }
          }
          for (let i = 0; i < d; i++) {
            const pi = p[i]!;
            if (pi === 0) continue;
            for (let j = i; j < d; j++) gram[i * d + j] += pi * p[j]!;
          }
        }
    for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) gram[i * d + j] = gram[j * d + i]!;
  }
}
