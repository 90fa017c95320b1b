import type { Preprocessing } from '../backbone/preprocess.ts';
import { wasmResizer } from './resize-wasm.ts';

/**
 * Separable, antialiased resampling of 8-bit RGB images (Pillow's ImagingResample scheme: the
 * filter is stretched by the scale factor when shrinking, weights normalised per output pixel).
 * Used by the fast JPEG path after a DCT-scaled decode, where the remaining factor is below 2 and
 * each output pixel needs only a few taps per axis.
 */
export type ResizeKernel = Preprocessing['kernel'];

interface Filter {
  support: number;
  f: (x: number) => number;
}

function sinc(x: number): number {
  if (x === 0) return 1;
  const p = Math.PI * x;
  return Math.sin(p) / p;
}

function bicubic(b: number, c: number): (x: number) => number {
  return (x) => {
    x = Math.abs(x);
    if (x < 1) return ((12 - 9 * b - 6 * c) * x ** 3 + (-18 + 12 * b + 6 * c) * x ** 2 + (6 - 2 * b)) / 6;
    if (x < 2)
      return ((-b - 6 * c) * x ** 3 + (6 * b + 30 * c) * x ** 2 + (-12 * b - 48 * c) * x + (8 * b + 24 * c)) / 6;
    return 0;
  };
}

/** The same kernel names as sharp's resize (cubic = Catmull-Rom, mitchell = B = C = 1/3). */
const FILTERS: Record<ResizeKernel, Filter> = {
  nearest: { support: 0.5, f: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  linear: { support: 1, f: (x) => Math.max(0, 1 - Math.abs(x)) },
  cubic: { support: 2, f: bicubic(0, 0.5) },
  mitchell: { support: 2, f: bicubic(1 / 3, 1 / 3) },
  lanczos2: { support: 2, f: (x) => (Math.abs(x) < 2 ? sinc(x) * sinc(x / 2) : 0) },
  lanczos3: { support: 3, f: (x) => (Math.abs(x) < 3 ? sinc(x) * sinc(x / 3) : 0) },
};

/** Per output index: first source index and normalised weights (fixed tap count, zero padded). */
export interface Taps {
  start: Int32Array;
  weights: Float32Array;
  taps: number;
}

const tapCache = new Map<string, Taps>();

/**
 * Taps of one axis. `halfShift`: sharp (libvips) enlarges through an affine transform over both
 * axes that samples at x * scale - 0.5, so an axis that was only shrunk (or kept) in the same resize
 * is also shifted half a pixel by bilinear interpolation: output x = (r[x-1] + r[x]) / 2 of the
 * shrunk row r (first one clamped). Reproduced here so that the fast path's pixels match sharp's;
 * measured with impulses and noise against sharp (noise images of 249x172 and 100x300: mean |Δ|
 * 12-14 grey levels without it, 0.1-0.2 with it).
 */
function computeTaps(inSize: number, outSize: number, kernel: ResizeKernel, halfShift = false): Taps {
  const base = baseTaps(inSize, outSize, kernel);
  if (!halfShift || outSize < 2) return base;
  const key = `${inSize}:${outSize}:${kernel}:half`;
  const hit = tapCache.get(key);
  if (hit) return hit;
  const taps = Math.min(inSize, base.taps + Math.ceil(inSize / outSize) + 1);
  const start = new Int32Array(outSize);
  const weights = new Float32Array(outSize * taps);
  const dense = new Float64Array(inSize);
  for (let x = 0; x < outSize; x++) {
    dense.fill(0);
    for (const [xx, f] of [
      [Math.max(0, x - 1), 0.5],
      [x, 0.5],
    ] as const)
      for (let k = 0; k < base.taps; k++) dense[base.start[xx]! + k]! += f * base.weights[xx * base.taps + k]!;
    let lo = 0;
    while (lo < inSize - 1 && dense[lo] === 0) lo++;
    const st = Math.max(0, Math.min(lo, inSize - taps));
    start[x] = st;
    for (let k = 0; k < taps; k++) weights[x * taps + k] = dense[st + k]!;
  }
  const t = trimTaps({ start, weights, taps }, inSize);
  rememberTaps(key, t);
  return t;
}

/**
 * Taps are per axis (a width or a height to the target), so a dataset's few hundred distinct sizes
 * hit this cache almost always; computing them costs ~50 µs per axis, a tenth of the resize itself.
 */
function rememberTaps(key: string, t: Taps): void {
  if (tapCache.size >= 1024) tapCache.delete(tapCache.keys().next().value!);
  tapCache.set(key, t);
}

/**
 * The same taps with the zero weights at both ends of every window dropped (a window then starts at
 * its first non-zero weight, shifted back only where it would run past the image's end). The fixed
 * count 2·ceil(support)+1 leaves one or two zero taps per output: a linear shrink of 375 → 288 has 5
 * taps of which at most 3 are non-zero. Dropping them changes no result (a zero product adds an exact
 * 0) and saves that share of the multiply-adds: the vertical pass is the resize's larger half.
 */
export function trimTaps(t: Taps, inSize: number): Taps {
  const n = t.start.length;
  let width = 1;
  const first = new Int32Array(n);
  for (let x = 0; x < n; x++) {
    let lo = 0,
      hi = t.taps - 1;
    while (lo < hi && t.weights[x * t.taps + lo] === 0) lo++;
    while (hi > lo && t.weights[x * t.taps + hi] === 0) hi--;
    first[x] = lo;
    width = Math.max(width, hi - lo + 1);
  }
  if (width === t.taps) return t;
  const start = new Int32Array(n);
  const weights = new Float32Array(n * width);
  for (let x = 0; x < n; x++) {
    const from = t.start[x]! + first[x]!; // source index of the first non-zero weight
    const st = Math.min(from, inSize - width);
    start[x] = st;
    for (let k = 0; k < width; k++) {
      const src = st + k - t.start[x]!; // this source index's place in the old window
      weights[x * width + k] = src >= 0 && src < t.taps ? t.weights[x * t.taps + src]! : 0;
    }
  }
  return { start, weights, taps: width };
}

function baseTaps(inSize: number, outSize: number, kernel: ResizeKernel): Taps {
  const key = `${inSize}:${outSize}:${kernel}`;
  const hit = tapCache.get(key);
  if (hit) return hit;
  const filter = FILTERS[kernel];
  const scale = inSize / outSize;
  const fscale = Math.max(1, scale);
  const support = filter.support * fscale;
  // A fixed tap count per output keeps the inner loops simple; windows near the edges are
  // shifted inwards and padded with zero weights, so every read stays inside the image.
  const taps = Math.min(inSize, Math.ceil(support) * 2 + 1);
  const start = new Int32Array(outSize);
  const weights = new Float32Array(outSize * taps);
  const w = new Float64Array(Math.ceil(support) * 2 + 2);
  for (let x = 0; x < outSize; x++) {
    // Shrinking: pixel centres map to pixel centres (Pillow, libvips' reduce). Enlarging: libvips
    // (sharp, the reference decoder) samples source position x * scale - 0.5, half an output pixel
    // left of the centre mapping (measured with ramps and impulses against sharp). With computeTaps'
    // half shift and jpeg-fast's dctScale this took the fast path's 1000 cats-vs-dogs test images
    // from a mean |Δ| of 0.78 grey levels against sharp (up to 9 on the ~18 % smaller than 224 on a
    // side) to 0.16 (every image below 0.25).
    const center = scale < 1 ? x * scale : (x + 0.5) * scale;
    const lo = Math.max(0, Math.floor(center - support + 0.5));
    const hi = Math.max(lo + 1, Math.min(inSize, Math.floor(center + support + 0.5)));
    let sum = 0;
    for (let j = lo; j < hi; j++) sum += w[j - lo] = filter.f((j - center + 0.5) / fscale);
    if (sum === 0) {
      w.fill(0);
      w[0] = 1;
      sum = 1;
    }
    const st = Math.max(0, Math.min(lo, inSize - taps));
    start[x] = st;
    for (let j = lo; j < hi; j++) weights[x * taps + (j - st)] = w[j - lo]! / sum;
  }
  const t = trimTaps({ start, weights, taps }, inSize);
  rememberTaps(key, t);
  return t;
}

/** Resize packed RGB (sw x sh) to (dw x dh). Returns dw*dh*3 bytes. */
export function resizeRgb(
  src: Uint8Array,
  sw: number,
  sh: number,
  dw: number,
  dh: number,
  kernel: ResizeKernel,
): Uint8Array {
  if (sw === dw && sh === dh) return src;
  const up = dw > sw || dh > sh;
  const tx = computeTaps(sw, dw, kernel, up && dw <= sw);
  const ty = computeTaps(sh, dh, kernel, up && dh <= sh);
  // Horizontal pass first only over the source rows the vertical pass reads, then vertical.
  const mid = new Float32Array(sh * dw * 3);
  horizontal(src, mid, sh, sw * 3, dw, tx.start, tx.weights, tx.taps);
  const out = new Uint8Array(dw * dh * 3);
  vertical(mid, out, dh, dw * 3, ty.start, ty.weights, ty.taps);
  return out;
}

function horizontal(
  src: Uint8Array,
  mid: Float32Array,
  rows: number,
  srcStride: number,
  dw: number,
  start: Int32Array,
  weights: Float32Array,
  taps: number,
): void {
  for (let y = 0; y < rows; y++) {
    const row = y * srcStride;
    let o = y * dw * 3;
    for (let x = 0; x < dw; x++) {
      let r = 0,
        g = 0,
        b = 0;
      let s = row + start[x]! * 3;
      let wi = x * taps;
      const wend = wi + taps;
      while (wi < wend) {
        const wt = weights[wi++]!;
        r += src[s]! * wt;
        g += src[s + 1]! * wt;
        b += src[s + 2]! * wt;
        s += 3;
      }
      mid[o++] = r;
      mid[o++] = g;
      mid[o++] = b;
    }
  }
}

function vertical(
  mid: Float32Array,
  out: Uint8Array,
  dh: number,
  stride: number,
  start: Int32Array,
  weights: Float32Array,
  taps: number,
): void {
  const acc = new Float32Array(stride);
  for (let y = 0; y < dh; y++) {
    acc.fill(0);
    const s0 = start[y]! * stride;
    for (let k = 0; k < taps; k++) {
      const wt = weights[y * taps + k]!;
      if (wt === 0) continue;
      const base = s0 + k * stride;
      for (let i = 0; i < stride; i++) acc[i] += mid[base + i]! * wt;
    }
    const orow = y * stride;
    for (let i = 0; i < stride; i++) {
      const v = acc[i]!;
      // Round and clamp (ringing kernels overshoot).
      out[orow + i] = v <= 0 ? 0 : v >= 255 ? 255 : (v + 0.5) | 0;
    }
  }
}

/**
 * The same resize on WebAssembly SIMD (resize-wasm.ts), with the source decoded straight into the
 * kernel's memory: `input(sw, sh)` gives the buffer to fill, `resize(...)` returns a fresh output.
 * Vertical pass first; one instance per thread (it owns its memory). Falls back to resizeRgb.
 */
export class Resizer {
  private readonly k = wasmResizer();
  private scratch = new Uint8Array(0);

  get simd(): boolean {
    return this.k !== null;
  }

  private layout(sw: number, sh: number, dw: number, dh: number, taps: number[]) {
    const src = 0;
    const midStride = Math.ceil((sw * 3 + 1) / 16) * 16; // floats per mid row (room for the 4th lane)
    const mid = align64(src + sw * sh * 3 + 64);
    const out = align64(mid + midStride * 4 + 64); // one row: resize() uses each at once
    const vw = align64(out + dw * dh * 3 + 64);
    const hs = align64(vw + dh * taps[1]! * 4);
    const hw = align64(hs + dw * 4);
    return { src, mid, midStride, out, vw, hs, hw, end: hw + dw * taps[0]! * 4 };
  }

  /** A buffer of sw*sh*3 bytes to decode the source into. */
  input(sw: number, sh: number): Uint8Array {
    if (!this.k) {
      if (this.scratch.length < sw * sh * 3) this.scratch = new Uint8Array(sw * sh * 3);
      return this.scratch.subarray(0, sw * sh * 3);
    }
    // Only the source here: resize() grows the memory for the rest (growing keeps the contents).
    this.k.reserve(sw * sh * 3 + 64);
    return new Uint8Array(this.k.memory.buffer, 0, sw * sh * 3);
  }

  /**
   * Resize the image last written to input(sw, sh). Into `out` (dw*dh*3 bytes) when given, which
   * saves the decode threads a fresh 250 KB allocation per image; else into a fresh array.
   */
  resize(sw: number, sh: number, dw: number, dh: number, kernel: ResizeKernel, out?: Uint8Array): Uint8Array {
    if (!this.k) {
      const r = resizeRgb(this.scratch.subarray(0, sw * sh * 3), sw, sh, dw, dh, kernel);
      if (!out) return r.slice();
      out.set(r);
      return out;
    }
    const up = dw > sw || dh > sh;
    const tx = computeTaps(sw, dw, kernel, up && dw <= sw);
    const ty = computeTaps(sh, dh, kernel, up && dh <= sh);
    const L = this.layout(sw, sh, dw, dh, [tx.taps, ty.taps]);
    this.k.reserve(L.end);
    const buf = this.k.memory.buffer;
    new Float32Array(buf, L.vw, ty.weights.length).set(ty.weights);
    new Float32Array(buf, L.hw, tx.weights.length).set(tx.weights);
    const hs = new Int32Array(buf, L.hs, dw);
    for (let x = 0; x < dw; x++) hs[x] = tx.start[x]! * 12;
    const rowBytes = sw * 3;
    // One intermediate row, used at once: the whole vertically resized image in floats (1.7 MB for
    // 500x375 → 288x288) would pass through the caches that ONNX Runtime's threads share with us.
    for (let y = 0; y < dh; y++) {
      this.k.vrow(L.mid, L.src + ty.start[y]! * rowBytes, rowBytes, L.vw + y * ty.taps * 4, ty.taps, rowBytes);
      this.k.hrow(L.out + y * dw * 3, L.mid, dw, L.hs, L.hw, tx.taps);
    }
    const result = new Uint8Array(buf, L.out, dw * dh * 3);
    if (!out) return result.slice();
    out.set(result);
    return out;
  }
}

function align64(n: number): number {
  return Math.ceil(n / 64) * 64;
}
