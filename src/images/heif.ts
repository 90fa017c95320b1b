import { CONVERT_HINT } from './formats.ts';

/**
 * HEIC/HEIF (iPhone photos). sharp's prebuilt libvips reads HEIF containers but carries only the
 * AV1 codec (AVIF), not HEVC, so HEIC goes through libheif compiled to WebAssembly (the npm
 * package heic-decode → libheif-js, which bundles libde265): no native build, no download at run time.
 */

export interface RgbaImage {
  width: number;
  height: number;
  data: Uint8Array;
}

interface HeicImage {
  width: number;
  height: number;
  decode(): Promise<{ width: number; height: number; data: Uint8ClampedArray }>;
}
type HeicAll = (opts: { buffer: Uint8Array }) => Promise<HeicImage[] & { dispose(): void }>;

let decoder: Promise<HeicAll | undefined> | undefined;

function loadDecoder(): Promise<HeicAll | undefined> {
  decoder ??= import('heic-decode').then(
    (m: { default: { all: HeicAll } }) => m.default.all,
    () => undefined,
  );
  return decoder;
}

export class HeifError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HeifError';
  }
}

/** Decode the first top-level image of a HEIC file (the primary one in camera files) to RGBA; throws HeifError with a reason naming the cause. */
export async function decodeHeic(buf: Uint8Array, maxPixels: number): Promise<RgbaImage> {
  const decode = await loadDecoder();
  if (!decode)
    throw new HeifError(
      `HEIC/HEIF image: the HEVC decoder (npm package heic-decode) is not installed; install it or ${CONVERT_HINT}`,
    );
  let images: Awaited<ReturnType<HeicAll>> | undefined;
  try {
    images = await decode({ buffer: buf });
    const first = images[0];
    if (!first) throw new Error('no image in the file');
    // Sizes are known from the header: refuse bombs before decoding any pixels.
    if (first.width * first.height > maxPixels)
      throw new HeifError('image exceeds the pixel limit (possible decompression bomb)');
    const img = await first.decode();
    return {
      width: img.width,
      height: img.height,
      data: new Uint8Array(img.data.buffer, img.data.byteOffset, img.data.byteLength),
    };
  } catch (e) {
    if (e instanceof HeifError) throw e;
    const msg = (e instanceof Error ? e.message : String(e)).split('\n')[0]!.slice(0, 160);
    throw new HeifError(`corrupt or unsupported HEIC/HEIF image (${msg})`);
  } finally {
    images?.dispose();
  }
}
