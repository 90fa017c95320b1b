/** Typed arrays as base64 strings inside a head's JSON (raw little-endian bytes, so values round-trip exactly). */

export function encodeTyped(a: Float32Array | Int32Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

function decodeTyped<T extends Float32Array | Int32Array>(s: string, make: (n: number) => T): T {
  const b = Buffer.from(s, 'base64');
  const out = make(b.byteLength / 4);
  new Uint8Array(out.buffer).set(b);
  return out;
}

export const encodeF32 = (a: Float32Array): string => encodeTyped(a);
export const encodeI32 = (a: Int32Array): string => encodeTyped(a);
export const decodeF32 = (s: string): Float32Array => decodeTyped(s, (n) => new Float32Array(n));
export const decodeI32 = (s: string): Int32Array => decodeTyped(s, (n) => new Int32Array(n));
