import sharp from 'sharp';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { toSharpInput, describeDecodeFailure } from './foreign.ts';
import { decodeJpegFast, FastDecodeRefusal, resolveDecoder, type DecoderChoice } from './jpeg-fast.ts';

export { decoderId, resolveDecoder, type DecoderChoice } from './jpeg-fast.ts';

/** Why an image could not be used; recorded in the manifest's skipped list. */
export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecodeError';
  }
}

export interface DecodeOptions {
  /** Refuse images with more pixels than this (decompression bombs). */
  maxPixels: number;
  /** 'fast': JPEGs through libjpeg-turbo (jpeg-fast.ts), everything else and unusual JPEGs through sharp. Default: resolveDecoder(). */
  decoder?: DecoderChoice;
}

export { DEFAULT_MAX_PIXELS } from './limits.ts';

// One libvips thread per image: we run several images in flight instead, which keeps both
// cores busy without oversubscribing while ONNX Runtime runs. Caching is pointless for a single pass.
sharp.concurrency(1);
sharp.cache(false);

/**
 * Decode any supported image (by content, not extension) to the model's input: 8-bit sRGB RGB,
 * EXIF orientation applied, alpha dropped (as PIL's convert('RGB') does), resized per the
 * preprocessing policy. Returns H*W*3 bytes, row-major HWC.
 */
export async function decodeForModel(
  input: Buffer | string,
  pre: Preprocessing,
  opts: DecodeOptions,
): Promise<Uint8Array> {
  if (typeof input !== 'string' && input.length === 0) throw new DecodeError('empty file');
  if (typeof input !== 'string' && (opts.decoder ?? resolveDecoder()) === 'fast') {
    const px = decodeFastOrNull(input, pre, opts.maxPixels);
    if (px) return px;
  }
  return decodeWithSharp(input, pre, opts);
}

/** The fast path's pixels, or null when this image must go through sharp. */
export function decodeFastOrNull(buf: Uint8Array, pre: Preprocessing, maxPixels: number): Uint8Array | null {
  try {
    return decodeJpegFast(buf, pre, maxPixels);
  } catch (e) {
    if (e instanceof FastDecodeRefusal) throw new DecodeError(e.message);
    return null; // anything unexpected: let sharp try (and word the error)
  }
}

/** The sharp (libvips) path: every format, CMYK with colour management, and the fast path's fallbacks. */
export async function decodeWithSharp(
  input: Buffer | Uint8Array | string,
  pre: Preprocessing,
  opts: DecodeOptions,
): Promise<Uint8Array> {
  const [h, w] = pre.size;
  try {
    // BMP and HEIC decode outside libvips (its prebuilt build has no loader for them).
    const src = await toSharpInput(input, opts.maxPixels);
    let img = sharp(src.input, {
      ...src.options,
      failOn: 'truncated',
      limitInputPixels: opts.maxPixels,
      sequentialRead: true,
      animated: false,
    })
      .rotate()
      .toColourspace('srgb');
    if (pre.resize === 'squash') {
      img = img.resize(w, h, { fit: 'fill', kernel: pre.kernel });
    } else {
      const s = Math.round(Math.max(h, w) / (pre.cropPct ?? 0.875));
      img = img
        .resize(s, s, { fit: 'cover', kernel: pre.kernel })
        .extract({ left: Math.floor((s - w) / 2), top: Math.floor((s - h) / 2), width: w, height: h });
    }
    const { data, info } = await img.removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || info.width !== w || info.height !== h || data.length !== w * h * 3) {
      throw new DecodeError(`unexpected decoded layout ${info.width}x${info.height}x${info.channels}`);
    }
    return new Uint8Array(data.buffer, data.byteOffset, data.length);
  } catch (e) {
    if (e instanceof DecodeError) throw e;
    throw new DecodeError(describeDecodeFailure(input, e) ?? describeSharpError(e));
  }
}

function describeSharpError(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  if (/pixel limit/i.test(msg)) return 'image exceeds the pixel limit (possible decompression bomb)';
  if (/unsupported image format/i.test(msg)) return 'not an image (unsupported format)';
  if (/premature end|truncated|Corrupt|VipsJpeg|read error|pngload|gifload|webpload|tiffload/i.test(msg))
    return `corrupt or truncated image (${firstLine(msg)})`;
  return firstLine(msg);
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.trim().slice(0, 200);
}
