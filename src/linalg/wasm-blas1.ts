import {
  ADD,
  F32,
  F32X4_ADD,
  F32X4_MUL,
  I32,
  LT_U,
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
 * Level-1 float32 SIMD kernels for coordinate-descent solvers (liblinear-style dual CD does one
 * dot product and at most one axpy of a 768-float row per coordinate step; in scalar JS those
 * were ~3.5 ns per element on the benchmark machine, 4-wide f32x4 SIMD is several times faster).
 * Hand-assembled like wasm-gemm.ts; each instance owns its memory.
 *
 *   dot(px, pw, nbytes) → Σ x[k]·w[k]    (nbytes a multiple of 32: rows padded to 8 floats)
 *   axpy(a, px, pw, nbytes): w[k] += a·x[k]
 */
const load = (offset: number) => [...SIMD(0), 0, ...uleb(offset)];
const flat = (parts: (number | number[])[]): number[] => parts.flatMap((p) => (Array.isArray(p) ? p : [p]));

function dotBody(): number[] {
  // params 0 px, 1 pw, 2 nbytes; locals 3 k (i32), 4 acc0, 5 acc1 (v128)
  const [px, pw, nb, k, a0, a1] = [0, 1, 2, 3, 4, 5];
  const code = flat([
    0x03,
    0x40,
    get(a0),
    get(px),
    get(k),
    ADD,
    load(0),
    get(pw),
    get(k),
    ADD,
    load(0),
    F32X4_MUL,
    F32X4_ADD,
    set(a0),
    get(a1),
    get(px),
    get(k),
    ADD,
    load(16),
    get(pw),
    get(k),
    ADD,
    load(16),
    F32X4_MUL,
    F32X4_ADD,
    set(a1),
    get(k),
    i32c(32),
    ADD,
    tee(k),
    get(nb),
    LT_U,
    0x0d,
    0,
    0x0b,
    get(a0),
    get(a1),
    F32X4_ADD,
    tee(a0),
    SIMD(31),
    0,
    get(a0),
    SIMD(31),
    1,
    0x92,
    get(a0),
    SIMD(31),
    2,
    get(a0),
    SIMD(31),
    3,
    0x92,
    0x92,
    0x0b,
  ]);
  return [...uleb(2), 1, I32, 2, V128, ...code];
}

function axpyBody(): number[] {
  // params 0 a (f32), 1 px, 2 pw, 3 nbytes; locals 4 k, 5 addr (i32), 6 av (v128)
  const [a, px, pw, nb, k, addr, av] = [0, 1, 2, 3, 4, 5, 6];
  const code = flat([
    get(a),
    SIMD(19),
    set(av),
    0x03,
    0x40,
    get(pw),
    get(k),
    ADD,
    tee(addr),
    get(addr),
    load(0),
    get(av),
    get(px),
    get(k),
    ADD,
    load(0),
    F32X4_MUL,
    F32X4_ADD,
    SIMD(11),
    0,
    0,
    get(k),
    i32c(16),
    ADD,
    tee(k),
    get(nb),
    LT_U,
    0x0d,
    0,
    0x0b,
    0x0b,
  ]);
  return [...uleb(2), 2, I32, 1, V128, ...code];
}

function buildModule(): Uint8Array<ArrayBuffer> {
  return moduleBytes([
    { name: 'dot', params: [I32, I32, I32], results: [F32], body: dotBody() },
    { name: 'axpy', params: [F32, I32, I32, I32], results: [], body: axpyBody() },
  ]);
}

export interface WasmBlas1 {
  memory: WebAssembly.Memory;
  dot: (px: number, pw: number, nbytes: number) => number;
  axpy: (a: number, px: number, pw: number, nbytes: number) => void;
  /** Make the memory at least `bytes` long; returns a fresh Float32Array view. */
  reserve(bytes: number): Float32Array;
}

let mod: WebAssembly.Module | null | undefined;

/** A new kernel instance (own memory), or null without WebAssembly SIMD (or CONVCACHE_NO_WASM=1). */
export function wasmBlas1(): WasmBlas1 | null {
  if (mod === undefined) mod = compileSimdModule(buildModule);
  if (!mod) return null;
  const ex = new WebAssembly.Instance(mod, {}).exports as unknown as {
    mem: WebAssembly.Memory;
    dot: WasmBlas1['dot'];
    axpy: WasmBlas1['axpy'];
  };
  const memory = ex.mem;
  return {
    memory,
    dot: ex.dot,
    axpy: ex.axpy,
    reserve(bytes: number): Float32Array {
      const have = memory.buffer.byteLength;
      if (have < bytes) memory.grow(Math.ceil((bytes - have) / 65536));
      return new Float32Array(memory.buffer);
    },
  };
}
