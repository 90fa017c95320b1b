/**
 * The one unsigned varint (LEB128) encoder: protobuf fields (onnx/write.ts) and WebAssembly
 * integers (linalg/wasm-asm.ts) use the same 7-bits-per-byte encoding. Negative numbers are
 * encoded as their 64-bit two's complement, as protobuf does for int64.
 */
export function varintBytes(v: number | bigint): number[] {
  let x = BigInt.asUintN(64, BigInt(v));
  const out: number[] = [];
  while (x >= 0x80n) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
  return out;
}
