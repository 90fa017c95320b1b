import { RA, wasmGemm, type WasmGemm } from './wasm-gemm.ts';

/**
 * Dense float32 products. Row-major throughout. The hot entry point is matmulABt (C = A·Bᵀ), which
 * is what distance and kernel matrices need: both operands are read along contiguous rows.
 * It runs a WebAssembly SIMD kernel when available, otherwise a register-blocked TS loop.
 */

/** C = A·B (A n×k, B k×m), i-k-j order so the inner loop walks a row of B and a row of C contiguously. */
export function matmul(
  A: Float32Array,
  B: Float32Array,
  n: number,
  k: number,
  m: number,
  out?: Float32Array,
): Float32Array {
  const C = out ?? new Float32Array(n * m);
  const acc = new Float64Array(m);
  for (let i = 0; i < n; i++) {
    acc.fill(0);
    const ai = i * k;
    for (let t = 0; t < k; t++) {
      const a = A[ai + t]!;
      if (a === 0) continue;
      const bt = t * m;
      for (let j = 0; j < m; j++) acc[j]! += a * B[bt + j]!;
    }
    C.set(acc, i * m);
  }
  return C;
}

/** Scalar fallback for C = A·Bᵀ: 4×4 register blocks, B processed in cache-sized column blocks. */
export function matmulABtJs(
  A: Float32Array,
  n: number,
  B: Float32Array,
  m: number,
  d: number,
  out?: Float32Array,
): Float32Array {
  const C = out ?? new Float32Array(n * m);
  const JB = 64;
  const n4 = n - (n % 4);
  for (let jb = 0; jb < m; jb += JB) {
    const je = Math.min(m, jb + JB);
    const je4 = jb + (je - jb - ((je - jb) % 4));
    for (let i = 0; i < n4; i += 4) {
      const a0 = i * d,
        a1 = a0 + d,
        a2 = a1 + d,
        a3 = a2 + d;
      for (let j = jb; j < je4; j += 4) {
        const b0 = j * d,
          b1 = b0 + d,
          b2 = b1 + d,
          b3 = b2 + d;
        let c00 = 0,
          c01 = 0,
          c02 = 0,
          c03 = 0,
          c10 = 0,
          c11 = 0,
          c12 = 0,
          c13 = 0;
        let c20 = 0,
          c21 = 0,
          c22 = 0,
          c23 = 0,
          c30 = 0,
          c31 = 0,
          c32 = 0,
          c33 = 0;
        for (let k = 0; k < d; k++) {
          const x0 = A[a0 + k]!,
            x1 = A[a1 + k]!,
            x2 = A[a2 + k]!,
            x3 = A[a3 + k]!;
          const y0 = B[b0 + k]!,
            y1 = B[b1 + k]!,
            y2 = B[b2 + k]!,
            y3 = B[b3 + k]!;
          c00 += x0 * y0;
          c01 += x0 * y1;
          c02 += x0 * y2;
          c03 += x0 * y3;
          c10 += x1 * y0;
          c11 += x1 * y1;
          c12 += x1 * y2;
          c13 += x1 * y3;
          c20 += x2 * y0;
          c21 += x2 * y1;
          c22 += x2 * y2;
          c23 += x2 * y3;
          c30 += x3 * y0;
          c31 += x3 * y1;
          c32 += x3 * y2;
          c33 += x3 * y3;
        }
        let o = i * m + j;
        C[o] = c00;
        C[o + 1] = c01;
        C[o + 2] = c02;
        C[o + 3] = c03;
        o += m;
        C[o] = c10;
        C[o + 1] = c11;
        C[o + 2] = c12;
        C[o + 3] = c13;
        o += m;
        C[o] = c20;
        C[o + 1] = c21;
        C[o + 2] = c22;
        C[o + 3] = c23;
        o += m;
        C[o] = c30;
        C[o + 1] = c31;
        C[o + 2] = c32;
        C[o + 3] = c33;
      }
      for (let j = je4; j < je; j++) {
        for (let r = 0; r < 4; r++) C[(i + r) * m + j] = dot(A, (i + r) * d, B, j * d, d);
      }
    }
    for (let i = n4; i < n; i++) for (let j = jb; j < je; j++) C[i * m + j] = dot(A, i * d, B, j * d, d);
  }
  return C;
}

/** Dot product of A[ao..ao+d) and B[bo..bo+d), four accumulators. */
export function dot(A: Float32Array, ao: number, B: Float32Array, bo: number, d: number): number {
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0;
  let k = 0;
  for (; k + 3 < d; k += 4) {
    s0 += A[ao + k]! * B[bo + k]!;
    s1 += A[ao + k + 1]! * B[bo + k + 1]!;
    s2 += A[ao + k + 2]! * B[bo + k + 2]!;
    s3 += A[ao + k + 3]! * B[bo + k + 3]!;
  }
  for (; k < d; k++) s0 += A[ao + k]! * B[bo + k]!;
  return s0 + s1 + s2 + s3;
}

const PAGE = 65536;
/** Rows of A handled per kernel call (bounds the C scratch) and rows of B per cache block. */
const ROW_CHUNK = 384;
const COL_BLOCK = 96; // multiple of RB; 96 rows × 3 KB stay in L2

function ensureBytes(mem: WebAssembly.Memory, bytes: number): void {
  const have = mem.buffer.byteLength;
  if (have < bytes) mem.grow(Math.ceil((bytes - have) / PAGE));
}

/** Copy `rows` rows of width d from src (starting at row r0) into dst at float offset `off` with stride dp, zero padded. */
function pack(
  dst: Float32Array,
  off: number,
  src: Float32Array,
  r0: number,
  rows: number,
  paddedRows: number,
  d: number,
  dp: number,
): void {
  if (dp === d) {
    dst.set(src.subarray(r0 * d, (r0 + rows) * d), off);
    dst.fill(0, off + rows * d, off + paddedRows * d);
    return;
  }
  dst.fill(0, off, off + paddedRows * dp);
  for (let r = 0; r < rows; r++) dst.set(src.subarray((r0 + r) * d, (r0 + r + 1) * d), off + r * dp);
}

const roundUp = (x: number, m: number) => Math.ceil(x / m) * m;

/** C = A·Bᵀ for A n×d and B m×d (row-major float32), C n×m. */
export function matmulABt(
  A: Float32Array,
  n: number,
  B: Float32Array,
  m: number,
  d: number,
  out?: Float32Array,
): Float32Array {
  const C = out ?? new Float32Array(n * m);
  if (C.length < n * m) throw new Error(`matmulABt: output too small (${C.length} < ${n * m})`);
  const w = wasmGemm();
  if (!w || n * m * d < 4096) return matmulABtJs(A, n, B, m, d, C);
  const dp = roundUp(d, 4);
  const mp = roundUp(m, COL_BLOCK);
  const chunk = Math.min(ROW_CHUNK, roundUp(n, RA));
  const bOff = 0;
  const aOff = mp * dp;
  const cOff = aOff + chunk * dp;
  ensureBytes(w.memory, (cOff + chunk * mp) * 4);
  memoryEpoch++;
  let f = new Float32Array(w.memory.buffer);
  pack(f, bOff, B, 0, m, mp, d, dp);
  for (let i0 = 0; i0 < n; i0 += chunk) {
    const rows = Math.min(chunk, n - i0);
    const rowsP = roundUp(rows, RA);
    pack(f, aOff, A, i0, rows, rowsP, d, dp);
    for (let j0 = 0; j0 < mp; j0 += COL_BLOCK) {
      w.gemm(aOff * 4, (bOff + j0 * dp) * 4, (cOff + j0) * 4, rowsP, COL_BLOCK, dp, mp);
    }
    f = new Float32Array(w.memory.buffer);
    for (let r = 0; r < rows; r++) {
      const src = cOff + r * mp;
      C.set(f.subarray(src, src + m), (i0 + r) * m);
    }
  }
  return C;
}

/** Copy the lower triangle of an n×n row-major matrix onto the upper one. */
export function mirrorLower(C: Float32Array, n: number): void {
  {
    const m = n;
    for (let i = 0; i < n; i++) {
      const io = i * m;
      for (let j = i + 1; j < n; j++) {
        // Entries not computed for row i (j beyond its chunk's column range) come from row j.
        C[io + j] = C[j * m + i]!;
      }
    }
  }
}

/** Squared L2 norm of each row. */
export function rowSqNorms(A: Float32Array, n: number, d: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = dot(A, i * d, A, i * d, d);
  return out;
}

/** out[i·stride + off] = X_i · w[wo .. wo+d) + bias, for X n×d float32. */
export function matvec(
  X: Float32Array,
  n: number,
  d: number,
  w: Float64Array,
  wo: number,
  out: Float64Array,
  stride: number,
  off: number,
  bias = 0,
): void {
  for (let i = 0; i < n; i++) {
    const xo = i * d;
    let s0 = 0,
      s1 = 0,
      s2 = 0,
      s3 = 0,
      k = 0;
    for (; k + 3 < d; k += 4) {
      s0 += X[xo + k]! * w[wo + k]!;
      s1 += X[xo + k + 1]! * w[wo + k + 1]!;
      s2 += X[xo + k + 2]! * w[wo + k + 2]!;
      s3 += X[xo + k + 3]! * w[wo + k + 3]!;
    }
    for (; k < d; k++) s0 += X[xo + k]! * w[wo + k]!;
    out[i * stride + off] = s0 + s1 + s2 + s3 + bias;
  }
}

/** g[go .. go+d) = Σ_i r[i·stride + off] · X_i (overwrites), four rows per pass over g. */
export function matTvec(
  X: Float32Array,
  n: number,
  d: number,
  r: Float64Array,
  stride: number,
  off: number,
  g: Float64Array,
  go: number,
): void {
  g.fill(0, go, go + d);
  let i = 0;
  for (; i + 3 < n; i += 4) {
    const c0 = r[i * stride + off]!,
      c1 = r[(i + 1) * stride + off]!;
    const c2 = r[(i + 2) * stride + off]!,
      c3 = r[(i + 3) * stride + off]!;
    if (c0 === 0 && c1 === 0 && c2 === 0 && c3 === 0) continue;
    const x0 = i * d,
      x1 = x0 + d,
      x2 = x1 + d,
      x3 = x2 + d;
    for (let k = 0; k < d; k++) {
      g[go + k]! += c0 * X[x0 + k]! + c1 * X[x1 + k]! + c2 * X[x2 + k]! + c3 * X[x3 + k]!;
    }
  }
  for (; i < n; i++) {
    const c = r[i * stride + off]!;
    if (c === 0) continue;
    const xo = i * d;
    for (let k = 0; k < d; k++) g[go + k]! += c * X[xo + k]!;
  }
}

/** Bumped whenever the kernel memory is re-laid out; a ResidentMatrix is valid only within its epoch. */
let memoryEpoch = 0;

/**
 * A matrix copied once into the SIMD kernel memory for repeated float32 matrix-vector products
 * (L-BFGS on logistic loss does two per evaluation). It shares the one kernel memory with
 * matmulABt, so it is valid until the next matmulABt or ResidentMatrix.create; using it after
 * that throws. Returns null when WebAssembly SIMD is unavailable (use matvec/matTvec then).
 */
export class ResidentMatrix {
  private constructor(
    private readonly epoch: number,
    readonly rows: number,
    readonly cols: number,
    private readonly np: number,
    private readonly dp: number,
  ) {}

  static create(X: Float32Array, n: number, d: number): ResidentMatrix | null {
    const w = wasmGemm();
    if (!w) return null;
    const np = roundUp(n, 4),
      dp = roundUp(d, 4);
    ensureBytes(w.memory, (np * dp + dp + np + np + dp) * 4);
    pack(new Float32Array(w.memory.buffer), 0, X, 0, n, np, d, dp);
    return new ResidentMatrix(++memoryEpoch, n, d, np, dp);
  }

  private check(): WasmGemm {
    if (this.epoch !== memoryEpoch) throw new Error('ResidentMatrix used after the kernel memory was reused');
    return wasmGemm()!;
  }

  /** out[i·stride + off] = X_i · w[wo .. wo+d) + bias (float32 arithmetic). */
  matvec(w: Float64Array, wo: number, out: Float64Array, stride: number, off: number, bias = 0): void {
    const k = this.check();
    const { np, dp, rows: n, cols: d } = this;
    const f = new Float32Array(k.memory.buffer);
    const xOff = np * dp,
      yOff = xOff + dp;
    for (let j = 0; j < d; j++) f[xOff + j] = w[wo + j]!;
    f.fill(0, xOff + d, xOff + dp);
    k.gemv(0, xOff * 4, yOff * 4, np, dp);
    for (let i = 0; i < n; i++) out[i * stride + off] = f[yOff + i]! + bias;
  }

  /** g[go .. go+d) = Σ_i r[i·stride + off] · X_i (float32 arithmetic). */
  matTvec(r: Float64Array, stride: number, off: number, g: Float64Array, go: number): void {
    const k = this.check();
    const { np, dp, rows: n, cols: d } = this;
    const f = new Float32Array(k.memory.buffer);
    const rOff = np * dp + dp + np,
      gOff = rOff + np;
    for (let i = 0; i < n; i++) f[rOff + i] = r[i * stride + off]!;
    f.fill(0, rOff + n, rOff + np);
    f.fill(0, gOff, gOff + dp);
    k.gemvt(0, rOff * 4, gOff * 4, np, dp);
    for (let j = 0; j < d; j++) g[go + j] = f[gOff + j]!;
  }
}
