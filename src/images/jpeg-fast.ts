import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { applyOrientation, jpegOrientation, orientationTransposes } from './exif.ts';
import { Resizer } from './resize.ts';

/**
 * The fast JPEG path: libjpeg-turbo's TurboJPEG API called directly (through koffi, an FFI whose
 * prebuilt binaries ship inside its npm package) on the libturbojpeg that @julusian/jpeg-turbo ships
 * inside its package. That binding does not expose DCT-domain scaling, which is why we call the
 * library ourselves: a JPEG at least twice the needed size is decoded at 1/2, 1/4 or 1/8 scale
 * (the IDCT does the shrinking, almost for free), then a small separable resize (resize.ts) makes
 * the exact size, and the EXIF orientation is applied to the result.
 *
 * Anything unusual (CMYK/YCCK, 12-bit, a libjpeg warning such as a truncated file, no library on
 * this platform) returns null and the caller falls back to sharp, which also words the error.
 */

/** Recorded in the manifest and in the cache key: a different decoder gives different pixels. */
// /2: sharp's shrink-on-load rule and its enlarging grid (resize.ts), so the pixels match sharp's closer.
export const FAST_DECODER_ID = 'libjpeg-turbo-dct-scaled+separable-resize/2';

// TurboJPEG constants (turbojpeg.h, stable since libjpeg-turbo 1.4).
const TJPF_RGB = 0;
const TJCS_CMYK = 3,
  TJCS_YCCK = 4;
const TJFLAG_STOPONWARNING = 8192;

interface TurboLib {
  init: () => unknown;
  header: (
    h: unknown,
    buf: Uint8Array,
    size: number,
    w: number[],
    hgt: number[],
    subsamp: number[],
    cs: number[],
  ) => number;
  decompress: (
    h: unknown,
    buf: Uint8Array,
    size: number,
    dst: Uint8Array,
    w: number,
    pitch: number,
    hgt: number,
    pf: number,
    flags: number,
  ) => number;
  destroy: (h: unknown) => number;
  libraryPath: string;
}

let lib: TurboLib | null | undefined;
let handle: unknown;
let resizer: Resizer | undefined;

/** Where libturbojpeg lives: inside @julusian/jpeg-turbo's prebuilds, else the system's. */
function findTurboJpeg(): string[] {
  const out: string[] = [];
  try {
    const require = createRequire(import.meta.url);
    const pkg = dirname(require.resolve('@julusian/jpeg-turbo/package.json'));
    const arch = process.platform === 'linux' ? `linux-${process.arch}` : `${process.platform}-${process.arch}`;
    const dir = join(pkg, 'prebuilds', `jpeg-turbo-${arch}`);
    for (const f of ['libturbojpeg.so.0', 'libturbojpeg.dylib', 'turbojpeg.dll', 'node-napi-v7.node']) {
      if (existsSync(join(dir, f))) out.push(join(dir, f));
    }
  } catch {
    /* package not installed: try the system library */
  }
  out.push('libturbojpeg.so.0');
  return out;
}

function loadTurbo(): TurboLib | null {
  if (lib !== undefined) return lib;
  if (process.env.CONVCACHE_DECODER === 'sharp') return (lib = null);
  let koffi: any;
  try {
    koffi = createRequire(import.meta.url)('koffi');
  } catch {
    return (lib = null);
  }
  for (const path of findTurboJpeg()) {
    try {
      const l = koffi.load(path);
      lib = {
        init: l.func('void *tjInitDecompress()'),
        header: l.func(
          'int tjDecompressHeader3(void *h, const uint8_t *buf, unsigned long size, _Out_ int *w, _Out_ int *h2, _Out_ int *subsamp, _Out_ int *cs)',
        ),
        decompress: l.func(
          'int tjDecompress2(void *h, const uint8_t *buf, unsigned long size, uint8_t *dst, int w, int pitch, int h2, int pf, int flags)',
        ),
        destroy: l.func('int tjDestroy(void *h)'),
        libraryPath: path,
      };
      return lib;
    } catch {
      /* not loadable here, try the next */
    }
  }
  return (lib = null);
}

/** True when the fast path can run on this machine (used for the cache key and the manifest). */
export function fastJpegAvailable(): boolean {
  return loadTurbo() !== null;
}

/** Which decode path made the pixels (they differ slightly, so it is part of the cache key). */
export type DecoderChoice = 'fast' | 'sharp';

/** 'fast' where libjpeg-turbo loads (and CONVCACHE_DECODER is not 'sharp'), else 'sharp'. */
export function resolveDecoder(choice?: DecoderChoice | 'auto'): DecoderChoice {
  if (choice === 'sharp') return 'sharp';
  return fastJpegAvailable() ? 'fast' : 'sharp';
}

/** Recorded in the manifest: what produced the pixels. */
export function decoderId(d: DecoderChoice): string {
  return d === 'fast' ? `${FAST_DECODER_ID}; other formats and fallbacks: sharp` : 'sharp';
}

export function isJpeg(buf: Uint8Array): boolean {
  return buf.length > 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff;
}

export interface FastDecodeStats {
  scaleDenom: number;
  decodedWidth: number;
  decodedHeight: number;
}

/** Thrown for images the fast path refuses for a reason the user must see (pixel limit). */
export class FastDecodeRefusal extends Error {}

/**
 * The DCT-domain shrink 1/d (d = 1, 2, 4, 8) for an image of w x h whose resize needs needW x needH
 * (stored frame). The same choice as sharp's JPEG shrink-on-load, measured against sharp on one photo
 * re-encoded at 15 sizes: none below a factor of 3 (2.34 and 2.68 were not shrunk, 3.00 was), and
 * 1/d only while floor(factor) >= 2d + 1 (4.69 → 1/2, 6.70 → 1/4, 13.5 → 1/8), so at least a factor
 * of 1.5 is left to the antialiased resize. Shrinking further than sharp (as long as the decode still
 * covered the target, the earlier rule) moved those images by 3-5 grey levels on average.
 */
export function dctScale(w: number, h: number, needW: number, needH: number): number {
  const f = Math.floor(Math.min(w / needW, h / needH));
  let d = 1;
  while (d < 8 && f >= d * 2 + 1) d *= 2;
  return d;
}

/**
 * Decode a JPEG to the model's input (H*W*3 RGB, same contract as decodeForModel), or null when
 * this image should go to sharp instead. With `out` (H*W*3 bytes) the pixels are written there and
 * `out` is returned (the decode threads write straight into shared memory); else a fresh array.
 */
export function decodeJpegFast(
  buf: Uint8Array,
  pre: Preprocessing,
  maxPixels: number,
  stats?: FastDecodeStats,
  out?: Uint8Array,
): Uint8Array | null {
  const t = loadTurbo();
  if (!t || !isJpeg(buf)) return null;
  handle ??= t.init();
  const W = [0],
    H = [0],
    sub = [0],
    cs = [0];
  if (t.header(handle, buf, buf.length, W, H, sub, cs) !== 0) {
    t.destroy(handle);
    handle = t.init();
    return null;
  }
  const w0 = W[0]!,
    h0 = H[0]!;
  if (w0 * h0 > maxPixels) throw new FastDecodeRefusal('image exceeds the pixel limit (possible decompression bomb)');
  if (cs[0] === TJCS_CMYK || cs[0] === TJCS_YCCK) return null; // colour management: leave it to sharp
  const orientation = jpegOrientation(buf);
  const transposed = orientationTransposes(orientation);
  const [th, tw] = pre.size;
  // Size wanted in the displayed frame, before any crop: squash → exactly the target;
  // center-crop → short side s (sharp's fit 'cover').
  let dispW: number, dispH: number;
  const dispW0 = transposed ? h0 : w0,
    dispH0 = transposed ? w0 : h0;
  if (pre.resize === 'squash') {
    dispW = tw;
    dispH = th;
  } else {
    const s = Math.round(Math.max(th, tw) / (pre.cropPct ?? 0.875));
    const k = Math.max(s / dispW0, s / dispH0);
    dispW = Math.max(s, Math.round(dispW0 * k));
    dispH = Math.max(s, Math.round(dispH0 * k));
  }
  const needW = transposed ? dispH : dispW,
    needH = transposed ? dispW : dispH;
  const d = dctScale(w0, h0, needW, needH);
  const sw = Math.ceil(w0 / d),
    sh = Math.ceil(h0 / d);
  resizer ??= new Resizer();
  // Decoded straight into the resize kernel's memory (no copy).
  if (
    t.decompress(handle, buf, buf.length, resizer.input(sw, sh), sw, sw * 3, sh, TJPF_RGB, TJFLAG_STOPONWARNING) !== 0
  ) {
    // A failed decompression can leave the handle unusable for the next image: start afresh.
    t.destroy(handle);
    handle = t.init();
    return null;
  }
  if (stats) {
    stats.scaleDenom = d;
    stats.decodedWidth = sw;
    stats.decodedHeight = sh;
  }
  // The common case (squash, no EXIF rotation) resizes straight into `out`.
  const direct = pre.resize === 'squash' && orientation <= 1;
  const resized = resizer.resize(sw, sh, needW, needH, pre.kernel, direct ? out : undefined);
  if (direct) return resized; // channel order is applied inside the graph
  let img = applyOrientation(resized, needW, needH, orientation);
  if (pre.resize !== 'squash')
    img = centerCrop(img.data, img.width, img.height, tw, th, Math.round(Math.max(th, tw) / (pre.cropPct ?? 0.875)));
  if (!out) return img.data;
  out.set(img.data);
  return out;
}

/** sharp's cover crop to s x s, then extract(w x h) at the centre of that square. */
function centerCrop(
  src: Uint8Array,
  w: number,
  h: number,
  tw: number,
  th: number,
  s: number,
): { data: Uint8Array; width: number; height: number } {
  const left = Math.ceil((w - s) / 2) + Math.floor((s - tw) / 2); // libvips centres odd excess to the right
  const top = Math.ceil((h - s) / 2) + Math.floor((s - th) / 2);
  const out = new Uint8Array(tw * th * 3);
  for (let y = 0; y < th; y++)
    out.set(src.subarray(((top + y) * w + left) * 3, ((top + y) * w + left + tw) * 3), y * tw * 3);
  return { data: out, width: tw, height: th };
}

export function turboLibraryPath(): string | null {
  return loadTurbo()?.libraryPath ?? null;
}
