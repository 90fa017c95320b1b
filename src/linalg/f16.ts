/**
 * IEEE 754 binary16, the one implementation (cached fine-tuning activations, float16-quantised
 * TF.js weights): float32 → float16 with round-to-nearest-even, and a 65536-entry table for
 * float16 → float32 (Node 20 has no Float16Array).
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow → ±0
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // may carry into the exponent: still correct
  return sign | h;
}

let table: Float32Array | undefined;

function halfTable(): Float32Array {
  if (table) return table;
  table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    table[h] =
      exp === 0
        ? sign * frac * 2 ** -24
        : exp === 0x1f
          ? frac
            ? NaN
            : sign * Infinity
          : sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return table;
}

export function toHalf(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) out[i] = floatToHalf(src[i]!);
  return out;
}

/** Decode `src` into `out` starting at `offset`. */
export function fromHalf(src: Uint16Array, out: Float32Array, offset = 0): Float32Array {
  const t = halfTable();
  for (let i = 0; i < src.length; i++) out[offset + i] = t[src[i]!]!;
  return out;
}
