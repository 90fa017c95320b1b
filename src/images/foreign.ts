import { BmpError, decodeBmp } from './bmp.ts';
import { FORMAT_NAMES, sniffFormat, unsupportedReason } from './formats.ts';
import { decodeHeic, HeifError } from './heif.ts';

/**
 * The bridge between sniffed formats and sharp: BMP and HEIC become raw pixels for sharp (so
 * resizing, EXIF-free colour handling and cropping stay one code path); everything else passes through.
 */
export interface SharpInput {
  input: Buffer | string;
  options: { raw?: { width: number; height: number; channels: 3 | 4 } };
}

export async function toSharpInput(input: Buffer | Uint8Array | string, maxPixels: number): Promise<SharpInput> {
  if (typeof input === 'string') return { input, options: {} };
  const format = sniffFormat(input);
  if (format === 'bmp') {
    const bmp = decodeBmp(input, maxPixels);
    if (bmp.kind === 'embedded')
      return { input: Buffer.from(bmp.data.buffer, bmp.data.byteOffset, bmp.data.byteLength), options: {} };
    return {
      input: Buffer.from(bmp.data.buffer, bmp.data.byteOffset, bmp.data.byteLength),
      options: { raw: { width: bmp.width, height: bmp.height, channels: 3 } },
    };
  }
  if (format === 'heic') {
    const img = await decodeHeic(input, maxPixels);
    return {
      input: Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength),
      options: { raw: { width: img.width, height: img.height, channels: 4 } },
    };
  }
  return {
    input: Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength),
    options: {},
  };
}

/** A reason that names the format and the cause, or undefined to fall back to sharp's message. */
export function describeDecodeFailure(input: Buffer | Uint8Array | string, e: unknown): string | undefined {
  if (e instanceof BmpError) return /pixel limit/.test(e.message) ? e.message : `BMP image: ${e.message}`;
  if (e instanceof HeifError) return e.message;
  if (typeof input === 'string') return undefined;
  const msg = e instanceof Error ? e.message : String(e);
  const format = sniffFormat(input);
  if (/unsupported image format/i.test(msg)) {
    return format ? unsupportedReason(format) : 'not an image (unknown or unsupported format)';
  }
  if (format && !/pixel limit/i.test(msg)) {
    return `corrupt or truncated ${FORMAT_NAMES[format]} image (${msg.split('\n')[0]!.trim().slice(0, 200)})`;
  }
  return undefined;
}
