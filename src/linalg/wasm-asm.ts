/**
 * The few WebAssembly encoding helpers our hand-assembled SIMD kernels share (wasm-gemm.ts,
 * wasm-blas1.ts, images/resize-wasm.ts): unsigned LEB128 integers, sections, names, and the opcodes they use.
 */
import v8 from 'node:v8';
import { varintBytes } from '../util/varint.ts';

/** Unsigned LEB128: the same encoding as a protobuf varint. */
export function uleb(n: number): number[] {
  return varintBytes(n);
}

/** Signed LEB128 (i32.const immediates). */
function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

export function str(s: string): number[] {
  return [...uleb(s.length), ...Array.from(s, (c) => c.charCodeAt(0))];
}

export function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

export const I32 = 0x7f,
  F32 = 0x7d,
  V128 = 0x7b;
export const SIMD = (op: number): number[] => [0xfd, ...uleb(op)];
export const get = (l: number): number[] => [0x20, ...uleb(l)];
export const set = (l: number): number[] => [0x21, ...uleb(l)];
export const tee = (l: number): number[] => [0x22, ...uleb(l)];
export const i32c = (v: number): number[] => [0x41, ...sleb(v)];
export const ADD = 0x6a,
  MUL = 0x6c,
  SHL = 0x74,
  LT_U = 0x49;
export const F32X4_ADD = SIMD(228),
  F32X4_MUL = SIMD(230);

/** One exported function of a hand-assembled module: its signature, its name and its body (locals included). */
export interface WasmFunction {
  name: string;
  params: readonly number[];
  results: readonly number[];
  body: readonly number[];
}

/**
 * The bytes of a module that exports these functions (in order) and one memory named `mem`
 * (one page to start; the kernels grow it). Equal signatures share one type entry.
 */
export function moduleBytes(functions: readonly WasmFunction[]): Uint8Array<ArrayBuffer> {
  const signatures: string[] = [];
  const typeBytes: number[] = [];
  const funcTypes: number[] = [];
  for (const f of functions) {
    const key = `${f.params.join(',')}->${f.results.join(',')}`;
    let index = signatures.indexOf(key);
    if (index < 0) {
      index = signatures.push(key) - 1;
      typeBytes.push(0x60, ...uleb(f.params.length), ...f.params, ...uleb(f.results.length), ...f.results);
    }
    funcTypes.push(index);
  }
  const exports = functions.flatMap((f, i) => [...str(f.name), 0x00, ...uleb(i)]);
  const code = functions.flatMap((f) => [...uleb(f.body.length), ...f.body]);
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, [...uleb(signatures.length), ...typeBytes]),
    ...section(3, [...uleb(functions.length), ...funcTypes.flatMap((t) => uleb(t))]),
    ...section(5, [1, 0x00, 1]),
    ...section(7, [...uleb(functions.length + 1), ...exports, ...str('mem'), 0x02, 0]),
    ...section(10, [...uleb(functions.length), ...code]),
  ]);
}

/**
 * Compile a hand-assembled SIMD module once, or null where WebAssembly SIMD is missing (or
 * CONVCACHE_NO_WASM=1 asks for the JavaScript fallbacks). Liftoff is off while compiling so V8's
 * optimising tier compiles the kernels at once: the baseline tier runs them several times slower.
 */
export function compileSimdModule(build: () => Uint8Array<ArrayBuffer>): WebAssembly.Module | null {
  if (process.env.CONVCACHE_NO_WASM === '1') return null;
  try {
    v8.setFlagsFromString('--no-liftoff');
    try {
      return new WebAssembly.Module(build());
    } finally {
      v8.setFlagsFromString('--liftoff');
    }
  } catch {
    return null;
  }
}
