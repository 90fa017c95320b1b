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
} from '../linalg/wasm-asm.ts';

/**
 * WebAssembly SIMD kernels for the separable resize (resize.ts computes the taps): in scalar JS the
 * two passes cost ~4 ms of CPU per 500x375 → 224x224 image, six times the libjpeg-turbo decode
 * itself. Hand-assembled like linalg/wasm-gemm.ts. Vertical pass first (fewer rows to carry), on
 * bytes, 16 per step; then the horizontal pass does one f32x4 multiply-add per tap for all three
 * channels of an output pixel (lanes r, g, b and a discarded fourth), which is why rows are padded.
 *
 *   vrow(dst f32*, src u8*, stride, w f32*, taps, nbytes): dst[i] = Σk w[k]·src[i + k·stride]
 *   hrow(dst u8*, mid f32*, dw, starts i32*, w f32*, taps):   pixel x = Σk w[x·taps+k]·mid[starts[x] + 12k]
 */
const flat = (parts: (number | number[])[]): number[] => parts.flatMap((p) => (Array.isArray(p) ? p : [p]));
const memarg = (align: number, offset: number): number[] => [align, ...uleb(offset)];
const V128_LOAD = (offset = 0): number[] => [...SIMD(0), ...memarg(0, offset)];
const V128_STORE = (offset = 0): number[] => [...SIMD(11), ...memarg(0, offset)];
const LOAD32_SPLAT = [...SIMD(9), ...memarg(2, 0)];
const I16_EXT_LO_U = SIMD(137),
  I16_EXT_HI_U = SIMD(138);
const I32_EXT_LO_U = SIMD(169),
  I32_EXT_HI_U = SIMD(170);
const F32_FROM_I32 = SIMD(250);
const TRUNC_SAT = SIMD(248),
  NARROW_32_16_S = SIMD(133),
  NARROW_16_8_U = SIMD(102);
const V128_ZERO = [...SIMD(12), ...new Array<number>(16).fill(0)];
const LOOP = [0x03, 0x40],
  END = 0x0b,
  BR_IF = (d: number): number[] => [0x0d, d];

function vrowBody(): number[] {
  // params 0 dst, 1 src, 2 stride, 3 w, 4 taps, 5 n; locals 6 i, 7 k, 8 sp (i32); 9..12 acc, 13 wv, 14 lo, 15 hi (v128)
  const [dst, src, stride, w, taps, n, i, k, sp, a0, a1, a2, a3, wv, lo, hi] = Array.from({ length: 16 }, (_, j) => j);
  const mac = (acc: number, half: number, ext: number[]): number[] =>
    flat([get(acc), get(half), ext, F32_FROM_I32, get(wv), F32X4_MUL, F32X4_ADD, set(acc)]);
  const code = flat([
    LOOP,
    V128_ZERO,
    set(a0),
    V128_ZERO,
    set(a1),
    V128_ZERO,
    set(a2),
    V128_ZERO,
    set(a3),
    get(src),
    get(i),
    ADD,
    set(sp),
    i32c(0),
    set(k),
    LOOP,
    get(w),
    get(k),
    i32c(2),
    SHL,
    ADD,
    LOAD32_SPLAT,
    set(wv),
    get(sp),
    V128_LOAD(),
    tee(hi),
    I16_EXT_LO_U,
    set(lo),
    get(hi),
    I16_EXT_HI_U,
    set(hi),
    mac(a0, lo, I32_EXT_LO_U),
    mac(a1, lo, I32_EXT_HI_U),
    mac(a2, hi, I32_EXT_LO_U),
    mac(a3, hi, I32_EXT_HI_U),
    get(sp),
    get(stride),
    ADD,
    set(sp),
    get(k),
    i32c(1),
    ADD,
    tee(k),
    get(taps),
    LT_U,
    BR_IF(0),
    END,
    get(dst),
    get(i),
    i32c(2),
    SHL,
    ADD,
    tee(sp),
    get(a0),
    V128_STORE(0),
    get(sp),
    get(a1),
    V128_STORE(16),
    get(sp),
    get(a2),
    V128_STORE(32),
    get(sp),
    get(a3),
    V128_STORE(48),
    get(i),
    i32c(16),
    ADD,
    tee(i),
    get(n),
    LT_U,
    BR_IF(0),
    END,
    END,
  ]);
  return [...uleb(2), 3, I32, 7, V128, ...code];
}

function hrowBody(): number[] {
  // params 0 dst, 1 mid, 2 dw, 3 starts, 4 w, 5 taps; locals 6 x, 7 k, 8 sp, 9 wp (i32); 10 acc (v128)
  const [dst, mid, dw, starts, w, taps, x, k, sp, wp, acc] = Array.from({ length: 11 }, (_, j) => j);
  const code = flat([
    LOOP,
    V128_ZERO,
    set(acc),
    get(mid),
    get(starts),
    get(x),
    i32c(2),
    SHL,
    ADD,
    0x28,
    ...memarg(2, 0),
    ADD,
    set(sp),
    get(w),
    get(x),
    get(taps),
    MUL,
    i32c(2),
    SHL,
    ADD,
    set(wp),
    i32c(0),
    set(k),
    LOOP,
    get(acc),
    get(sp),
    V128_LOAD(),
    get(wp),
    LOAD32_SPLAT,
    F32X4_MUL,
    F32X4_ADD,
    set(acc),
    get(sp),
    i32c(12),
    ADD,
    set(sp),
    get(wp),
    i32c(4),
    ADD,
    set(wp),
    get(k),
    i32c(1),
    ADD,
    tee(k),
    get(taps),
    LT_U,
    BR_IF(0),
    END,
    // Round, saturate to 0..255, store 4 bytes (the 4th is overwritten by the next pixel).
    get(dst),
    get(x),
    i32c(3),
    MUL,
    ADD,
    get(acc),
    0x43,
    ...f32Bytes(0.5),
    SIMD(19),
    F32X4_ADD,
    TRUNC_SAT,
    tee(acc),
    get(acc),
    NARROW_32_16_S,
    tee(acc),
    get(acc),
    NARROW_16_8_U,
    SIMD(27),
    0,
    0x36,
    ...memarg(0, 0),
    get(x),
    i32c(1),
    ADD,
    tee(x),
    get(dw),
    LT_U,
    BR_IF(0),
    END,
    END,
  ]);
  return [...uleb(2), 4, I32, 1, V128, ...code];
}

function f32Bytes(v: number): number[] {
  return Array.from(new Uint8Array(new Float32Array([v]).buffer));
}

function buildModule(): Uint8Array<ArrayBuffer> {
  const i32x6 = [I32, I32, I32, I32, I32, I32];
  return moduleBytes([
    { name: 'vrow', params: i32x6, results: [], body: vrowBody() },
    { name: 'hrow', params: i32x6, results: [], body: hrowBody() },
  ]);
}

type Fn6 = (a: number, b: number, c: number, d: number, e: number, f: number) => void;

export interface WasmResizer {
  memory: WebAssembly.Memory;
  vrow: Fn6;
  hrow: Fn6;
  /** Make the memory at least `bytes` long (views on it must be re-taken afterwards). */
  reserve(bytes: number): void;
}

let mod: WebAssembly.Module | null | undefined;

/** A kernel instance with its own memory, or null without WebAssembly SIMD (or CONVCACHE_NO_WASM=1). */
export function wasmResizer(): WasmResizer | null {
  if (mod === undefined) mod = compileSimdModule(buildModule);
  if (!mod) return null;
  const ex = new WebAssembly.Instance(mod, {}).exports as unknown as { mem: WebAssembly.Memory; vrow: Fn6; hrow: Fn6 };
  const memory = ex.mem;
  return {
    memory,
    vrow: ex.vrow,
    hrow: ex.hrow,
    reserve(bytes: number): void {
      const have = memory.buffer.byteLength;
      if (have < bytes) memory.grow(Math.ceil((bytes - have) / 65536));
    },
  };
}
