import {
  ADD,
  F32X4_ADD,
  F32X4_MUL,
  I32,
  LT_U,
  MUL,
  SHL,
  SIMD,
  V128,
  get,
  i32c,
  set,
  moduleBytes,
  tee,
  uleb,
  compileSimdModule,
} from './wasm-asm.ts';
/**
 * Tiny hand-assembled WebAssembly SIMD kernels: C = A·Bᵀ (both row-major, float32), plus the
 * matrix-vector products y = A·x and g += Aᵀ·r.
 * V8 does not auto-vectorise JS loops, so for the O(n·m·d) products that dominate kNN and the
 * RBF kernel matrix this is ~5-10× faster than the best scalar TS loop. The module is generated
 * here (no toolchain, no binary file in the repo); matmul.ts falls back to TS when WebAssembly
 * SIMD is unavailable.
 *
 * Kernel contract: gemm(a, b, c, n, m, dp, ldc) with byte pointers a, b, c; n a multiple of RA,
 * m a multiple of RB, dp (row length in floats, for both A and B) a multiple of 4;
 * C[i*ldc + j] = Σ_k A[i*dp+k]·B[j*dp+k] (overwrites).
 */
export const RA = 4;
export const RB = 3;

function gemmBody(): number[] {
  // Params: 0 a, 1 b, 2 c, 3 n, 4 m, 5 dp, 6 ldc. Locals follow.
  let next = 7;
  const L = { i: next++, j: next++, k: next++, rowBytes: next++, pc: next++ };
  const pa = Array.from({ length: RA }, () => next++);
  const pb = Array.from({ length: RB }, () => next++);
  const i32Locals = next - 7;
  const accBase = next;
  const acc = (r: number, s: number) => accBase + r * RB + s;
  next += RA * RB;
  const xs = Array.from({ length: RA }, () => next++);
  const ys = Array.from({ length: RB }, () => next++);
  const v128Locals = next - accBase;

  const code: number[] = [];
  const emit = (...parts: (number | number[])[]) => {
    for (const p of parts)
      if (Array.isArray(p)) code.push(...p);
      else code.push(p);
  };

  // rowBytes = dp << 2
  emit(get(5), i32c(2), SHL, set(L.rowBytes));
  emit(i32c(0), set(L.i));
  emit(0x03, 0x40); // loop i
  {
    emit(i32c(0), set(L.j));
    emit(0x03, 0x40); // loop j
    {
      // pa[r] = a + (i + r) * rowBytes
      emit(get(0), get(L.i), get(L.rowBytes), MUL, ADD, set(pa[0]!));
      for (let r = 1; r < RA; r++) emit(get(pa[r - 1]!), get(L.rowBytes), ADD, set(pa[r]!));
      emit(get(1), get(L.j), get(L.rowBytes), MUL, ADD, set(pb[0]!));
      for (let s = 1; s < RB; s++) emit(get(pb[s - 1]!), get(L.rowBytes), ADD, set(pb[s]!));
      for (let q = 0; q < RA * RB; q++) emit(SIMD(12), new Array(16).fill(0), set(accBase + q));
      emit(i32c(0), set(L.k));
      emit(0x03, 0x40); // loop k (byte offset)
      {
        for (let r = 0; r < RA; r++) emit(get(pa[r]!), get(L.k), ADD, SIMD(0), 0, 0, set(xs[r]!));
        for (let s = 0; s < RB; s++) emit(get(pb[s]!), get(L.k), ADD, SIMD(0), 0, 0, set(ys[s]!));
        for (let r = 0; r < RA; r++) {
          for (let s = 0; s < RB; s++) {
            emit(get(acc(r, s)), get(xs[r]!), get(ys[s]!), SIMD(230), SIMD(228), set(acc(r, s)));
          }
        }
        emit(get(L.k), i32c(16), ADD, tee(L.k), get(L.rowBytes), LT_U, 0x0d, 0);
      }
      emit(0x0b);
      // store horizontal sums: pc = c + ((i*ldc + j) << 2)
      emit(get(2), get(L.i), get(6), MUL, get(L.j), ADD, i32c(2), SHL, ADD, set(L.pc));
      for (let r = 0; r < RA; r++) {
        for (let s = 0; s < RB; s++) {
          emit(get(L.pc));
          const a = acc(r, s);
          emit(get(a), SIMD(31), 0, get(a), SIMD(31), 1, 0x92, get(a), SIMD(31), 2, get(a), SIMD(31), 3, 0x92, 0x92);
          emit(0x38, 2, ...uleb(4 * s)); // f32.store offset 4*s
        }
        if (r < RA - 1) emit(get(L.pc), get(6), i32c(2), SHL, ADD, set(L.pc));
      }
      emit(get(L.j), i32c(RB), ADD, tee(L.j), get(4), LT_U, 0x0d, 0);
    }
    emit(0x0b);
    emit(get(L.i), i32c(RA), ADD, tee(L.i), get(3), LT_U, 0x0d, 0);
  }
  emit(0x0b);
  emit(0x0b); // end function

  const locals = [...uleb(2), ...uleb(i32Locals), I32, ...uleb(v128Locals), V128];
  return [...locals, ...code];
}

const V_LOAD = [...SIMD(0), 0, 0];
const V_ZERO = [...SIMD(12), ...new Array(16).fill(0)];

function hsum(l: number): number[] {
  return [
    ...get(l),
    ...SIMD(31),
    0,
    ...get(l),
    ...SIMD(31),
    1,
    0x92,
    ...get(l),
    ...SIMD(31),
    2,
    ...get(l),
    ...SIMD(31),
    3,
    0x92,
    0x92,
  ];
}

/** gemv(a, x, y, n, dp): y[i] = Σ_k A[i,k]·x[k]; n a multiple of 4, dp a multiple of 4. */
function gemvBody(): number[] {
  const [a, x, y, n, dp, i, k, rb, p0, p1, p2, p3, py] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const p = [p0, p1, p2, p3];
  const acc = [13, 14, 15, 16];
  const xv = 17;
  const c: number[] = [];
  const e = (...parts: (number | number[])[]) => {
    for (const q of parts)
      if (Array.isArray(q)) c.push(...q);
      else c.push(q);
  };
  e(get(dp), i32c(2), SHL, set(rb), i32c(0), set(i), get(y), set(py));
  e(0x03, 0x40);
  e(get(a), get(i), get(rb), MUL, ADD, set(p0));
  for (let r = 1; r < 4; r++) e(get(p[r - 1]!), get(rb), ADD, set(p[r]!));
  for (const q of acc) e(V_ZERO, set(q));
  e(i32c(0), set(k));
  e(0x03, 0x40);
  e(get(x), get(k), ADD, V_LOAD, set(xv));
  for (let r = 0; r < 4; r++)
    e(get(acc[r]!), get(p[r]!), get(k), ADD, V_LOAD, get(xv), F32X4_MUL, F32X4_ADD, set(acc[r]!));
  e(get(k), i32c(16), ADD, tee(k), get(rb), LT_U, 0x0d, 0, 0x0b);
  for (let r = 0; r < 4; r++) e(get(py), hsum(acc[r]!), 0x38, 2, ...uleb(4 * r));
  e(get(py), i32c(16), ADD, set(py));
  e(get(i), i32c(4), ADD, tee(i), get(n), LT_U, 0x0d, 0, 0x0b);
  e(0x0b);
  return [...uleb(2), ...uleb(8), I32, ...uleb(5), V128, ...c];
}

/** gemvt(a, r, g, n, dp): g[k] += Σ_i r[i]·A[i,k]; n a multiple of 4, dp a multiple of 4. */
function gemvtBody(): number[] {
  const [a, rv, g, n, dp, i, k, rb, p0, p1, p2, p3, pg] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const p = [p0, p1, p2, p3];
  const cs = [13, 14, 15, 16];
  const c: number[] = [];
  const e = (...parts: (number | number[])[]) => {
    for (const q of parts)
      if (Array.isArray(q)) c.push(...q);
      else c.push(q);
  };
  e(get(dp), i32c(2), SHL, set(rb), i32c(0), set(i));
  e(0x03, 0x40);
  e(get(a), get(i), get(rb), MUL, ADD, set(p0));
  for (let r = 1; r < 4; r++) e(get(p[r - 1]!), get(rb), ADD, set(p[r]!));
  // c_r = splat(r[i + r])
  for (let r = 0; r < 4; r++) e(get(rv), get(i), i32c(2), SHL, ADD, 0x2a, 2, ...uleb(4 * r), SIMD(19), set(cs[r]!));
  e(i32c(0), set(k));
  e(0x03, 0x40);
  e(get(g), get(k), ADD, tee(pg)); // address for the store
  e(get(pg), V_LOAD);
  for (let r = 0; r < 4; r++) e(get(cs[r]!), get(p[r]!), get(k), ADD, V_LOAD, F32X4_MUL, F32X4_ADD);
  e(SIMD(11), 0, 0); // v128.store
  e(get(k), i32c(16), ADD, tee(k), get(rb), LT_U, 0x0d, 0, 0x0b);
  e(get(i), i32c(4), ADD, tee(i), get(n), LT_U, 0x0d, 0, 0x0b);
  e(0x0b);
  return [...uleb(2), ...uleb(8), I32, ...uleb(4), V128, ...c];
}

function buildModule(): Uint8Array<ArrayBuffer> {
  const i32s = (n: number): number[] => Array<number>(n).fill(I32);
  return moduleBytes([
    { name: 'gemm', params: i32s(7), results: [], body: gemmBody() },
    { name: 'gemv', params: i32s(5), results: [], body: gemvBody() },
    { name: 'gemvt', params: i32s(5), results: [], body: gemvtBody() },
  ]);
}

export interface WasmGemm {
  memory: WebAssembly.Memory;
  gemm: (a: number, b: number, c: number, n: number, m: number, dp: number, ldc: number) => void;
  gemv: (a: number, x: number, y: number, n: number, dp: number) => void;
  gemvt: (a: number, r: number, g: number, n: number, dp: number) => void;
}

let cached: WasmGemm | null | undefined;

/** The compiled kernel, or null when this runtime lacks WebAssembly SIMD (or CONVCACHE_NO_WASM=1). */
export function wasmGemm(): WasmGemm | null {
  if (cached !== undefined) return cached;
  cached = null;
  const mod = compileSimdModule(buildModule);
  if (!mod) return cached;
  try {
    const inst = new WebAssembly.Instance(mod, {});
    const ex = inst.exports as unknown as Omit<WasmGemm, 'memory'> & { mem: WebAssembly.Memory };
    cached = { memory: ex.mem, gemm: ex.gemm, gemv: ex.gemv, gemvt: ex.gemvt };
  } catch {
    cached = null;
  }
  return cached;
}
