/**
 * Windows/OS2 bitmap decoder. sharp's prebuilt libvips has no BMP loader, so without this every
 * .bmp was skipped. Covers what cameras, scanners, Paint and PIL write: 1/2/4/8-bit palettes,
 * 16/24/32-bit direct colour, BI_BITFIELDS / BI_ALPHABITFIELDS masks, RLE8 and RLE4, bottom-up and
 * top-down rows, BITMAPCOREHEADER (OS/2 1.x) to BITMAPV5HEADER. Embedded JPEG/PNG payloads (BI_JPEG,
 * BI_PNG) are handed back for the regular decoder. Output is 8-bit RGB, row-major, top row first;
 * alpha is dropped, as the rest of the pipeline does.
 */

export class BmpError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BmpError';
  }
}

export type BmpDecoded =
  | { kind: 'rgb'; width: number; height: number; data: Uint8Array }
  | { kind: 'embedded'; format: 'jpeg' | 'png'; data: Uint8Array };

const BI_RGB = 0,
  BI_RLE8 = 1,
  BI_RLE4 = 2,
  BI_BITFIELDS = 3,
  BI_JPEG = 4,
  BI_PNG = 5,
  BI_ALPHABITFIELDS = 6;

export function isBmp(buf: Uint8Array): boolean {
  return buf.length >= 2 && buf[0] === 0x42 && buf[1] === 0x4d; // 'BM'
}

interface Channel {
  shift: number;
  bits: number;
}

/** A colour mask as (shift, width). */
function channel(mask: number): Channel {
  if (mask === 0) return { shift: 0, bits: 0 };
  let shift = 0;
  while (((mask >>> shift) & 1) === 0) shift++;
  let bits = 0;
  while (shift + bits < 32 && ((mask >>> (shift + bits)) & 1) === 1) bits++;
  return { shift, bits };
}

function scaleTo8(v: number, bits: number): number {
  if (bits >= 8) return v >>> (bits - 8);
  // v * 255 / max, truncated: what Pillow does (so 5-bit 25 → 205), matching PyTorch pipelines.
  return Math.floor((v * 255) / ((1 << bits) - 1));
}

/** Decode a BMP file; throws BmpError naming the cause when the file cannot be used. */
export function decodeBmp(buf: Uint8Array, maxPixels = Number.POSITIVE_INFINITY): BmpDecoded {
  if (!isBmp(buf)) throw new BmpError('not a BMP file (no BM signature)');
  if (buf.length < 26) throw new BmpError('truncated BMP header');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dataOffset = dv.getUint32(10, true);
  const headerSize = dv.getUint32(14, true);
  let width: number,
    height: number,
    bpp: number,
    compression = BI_RGB,
    colorsUsed = 0;
  let paletteEntrySize = 4;
  let masks: [number, number, number, number] | undefined;
  if (headerSize === 12) {
    width = dv.getUint16(18, true);
    height = dv.getInt16(20, true);
    bpp = dv.getUint16(24, true);
    paletteEntrySize = 3;
  } else if (headerSize >= 16 && headerSize <= 124) {
    if (buf.length < 14 + Math.min(headerSize, 40)) throw new BmpError('truncated BMP header');
    width = dv.getInt32(18, true);
    height = dv.getInt32(22, true);
    bpp = dv.getUint16(28, true);
    if (headerSize >= 20) compression = dv.getUint32(30, true);
    if (headerSize >= 36) colorsUsed = dv.getUint32(46, true);
    if (compression === BI_BITFIELDS || compression === BI_ALPHABITFIELDS) {
      // V2+ headers (52+ bytes) carry the masks inside; the 40-byte header is followed by them.
      const at = 14 + 40;
      const n = compression === BI_ALPHABITFIELDS || headerSize >= 56 ? 4 : 3;
      if (buf.length < at + 4 * n) throw new BmpError('truncated BMP colour masks');
      masks = [
        dv.getUint32(at, true),
        dv.getUint32(at + 4, true),
        dv.getUint32(at + 8, true),
        n === 4 ? dv.getUint32(at + 12, true) : 0,
      ];
    }
    if (headerSize === 64 && compression === 3)
      throw new BmpError('OS/2 Huffman-1D compressed BMP is not supported (convert it to PNG)');
    if (headerSize === 64 && compression === 4)
      throw new BmpError('OS/2 RLE24 compressed BMP is not supported (convert it to PNG)');
  } else {
    throw new BmpError(`unknown BMP header size ${headerSize}`);
  }
  if (compression === BI_JPEG || compression === BI_PNG) {
    const size = headerSize >= 40 ? dv.getUint32(34, true) : 0;
    const end = size > 0 ? Math.min(buf.length, dataOffset + size) : buf.length;
    return { kind: 'embedded', format: compression === BI_JPEG ? 'jpeg' : 'png', data: buf.subarray(dataOffset, end) };
  }
  const topDown = height < 0;
  height = Math.abs(height);
  if (width <= 0 || height <= 0) throw new BmpError(`invalid BMP dimensions ${width}x${height}`);
  if (width * height > maxPixels) throw new BmpError('image exceeds the pixel limit (possible decompression bomb)');
  if (![1, 2, 4, 8, 16, 24, 32].includes(bpp)) throw new BmpError(`unsupported BMP bit depth ${bpp}`);
  if (compression === BI_RLE8 && bpp !== 8) throw new BmpError(`RLE8 BMP with bit depth ${bpp}`);
  if (compression === BI_RLE4 && bpp !== 4) throw new BmpError(`RLE4 BMP with bit depth ${bpp}`);
  if (compression > BI_ALPHABITFIELDS)
    throw new BmpError(`unsupported BMP compression ${compression} (CMYK or unknown)`);
  if ((compression === BI_RLE4 || compression === BI_RLE8) && topDown) throw new BmpError('RLE BMP cannot be top-down');

  // Palette (indexed formats only).
  let palette: Uint8Array | undefined; // RGB triples
  if (bpp <= 8) {
    const count = colorsUsed > 0 && colorsUsed <= 1 << bpp ? colorsUsed : 1 << bpp;
    const start = 14 + headerSize + (masks && headerSize === 40 ? (compression === BI_ALPHABITFIELDS ? 16 : 12) : 0);
    const available = Math.max(0, Math.floor((Math.min(dataOffset, buf.length) - start) / paletteEntrySize));
    const n = Math.min(count, available);
    if (n === 0) throw new BmpError(`${bpp}-bit BMP has no colour table`);
    palette = new Uint8Array((1 << bpp) * 3); // missing entries read as black
    for (let i = 0; i < n; i++) {
      const p = start + i * paletteEntrySize;
      palette[i * 3] = buf[p + 2]!;
      palette[i * 3 + 1] = buf[p + 1]!;
      palette[i * 3 + 2] = buf[p]!;
    }
  }
  if (dataOffset >= buf.length) throw new BmpError('truncated BMP: no pixel data');
  const out = new Uint8Array(width * height * 3);
  const pixels = buf.subarray(dataOffset);
  if (compression === BI_RLE8 || compression === BI_RLE4) {
    decodeRle(pixels, out, width, height, bpp, palette!);
    return { kind: 'rgb', width, height, data: out };
  }

  const stride = Math.floor((width * bpp + 31) / 32) * 4;
  if (pixels.length < stride * (height - 1) + Math.ceil((width * bpp) / 8)) {
    throw new BmpError(`truncated BMP: ${pixels.length} bytes of pixel data, ${stride * height} expected`);
  }
  if (bpp <= 8) {
    const perByte = 8 / bpp;
    const mask = (1 << bpp) - 1;
    for (let y = 0; y < height; y++) {
      const row = pixels.subarray((topDown ? y : height - 1 - y) * stride);
      let o = y * width * 3;
      for (let x = 0; x < width; x++) {
        const byte = row[Math.floor(x / perByte)]!;
        const idx = (byte >> (8 - bpp * ((x % perByte) + 1))) & mask;
        out[o++] = palette![idx * 3]!;
        out[o++] = palette![idx * 3 + 1]!;
        out[o++] = palette![idx * 3 + 2]!;
      }
    }
  } else if (bpp === 24 && !masks) {
    for (let y = 0; y < height; y++) {
      const r0 = (topDown ? y : height - 1 - y) * stride;
      let o = y * width * 3;
      for (let x = 0; x < width; x++) {
        const p = r0 + x * 3;
        out[o++] = pixels[p + 2]!;
        out[o++] = pixels[p + 1]!;
        out[o++] = pixels[p]!;
      }
    }
  } else {
    if (bpp === 24) throw new BmpError('24-bit BMP with bitfields is not supported');
    const [rm, gm, bm] = masks ?? (bpp === 16 ? [0x7c00, 0x03e0, 0x001f, 0] : [0x00ff0000, 0x0000ff00, 0x000000ff, 0]);
    const ch = [channel(rm), channel(gm), channel(bm)];
    const bytes = bpp / 8;
    const pdv = new DataView(pixels.buffer, pixels.byteOffset, pixels.byteLength);
    for (let y = 0; y < height; y++) {
      const r0 = (topDown ? y : height - 1 - y) * stride;
      let o = y * width * 3;
      for (let x = 0; x < width; x++) {
        const v = bytes === 2 ? pdv.getUint16(r0 + x * 2, true) : pdv.getUint32(r0 + x * 4, true);
        for (const c of ch) out[o++] = c.bits === 0 ? 0 : scaleTo8((v >>> c.shift) & (2 ** c.bits - 1), c.bits);
      }
    }
  }
  return { kind: 'rgb', width, height, data: out };
}

/** RLE8/RLE4 (always bottom-up). Pixels the stream skips (delta, early end) stay black. */
function decodeRle(
  src: Uint8Array,
  out: Uint8Array,
  width: number,
  height: number,
  bpp: number,
  palette: Uint8Array,
): void {
  let x = 0;
  let y = 0; // counted from the bottom row
  let p = 0;
  const put = (idx: number): void => {
    if (x < width && y < height) {
      const o = ((height - 1 - y) * width + x) * 3;
      out[o] = palette[idx * 3]!;
      out[o + 1] = palette[idx * 3 + 1]!;
      out[o + 2] = palette[idx * 3 + 2]!;
    }
    x++;
  };
  while (y < height) {
    if (p + 1 >= src.length) throw new BmpError('truncated RLE BMP data');
    const count = src[p]!;
    const value = src[p + 1]!;
    p += 2;
    if (count > 0) {
      for (let i = 0; i < count; i++) put(bpp === 8 ? value : i % 2 === 0 ? value >> 4 : value & 0x0f);
    } else if (value === 0) {
      x = 0;
      y++;
    } // end of line
    else if (value === 1)
      return; // end of bitmap
    else if (value === 2) {
      // delta
      if (p + 1 >= src.length) throw new BmpError('truncated RLE BMP data');
      x += src[p]!;
      y += src[p + 1]!;
      p += 2;
    } else {
      // absolute run of `value` pixels, padded to a 16-bit boundary
      const nbytes = bpp === 8 ? value : Math.ceil(value / 2);
      if (p + nbytes > src.length) throw new BmpError('truncated RLE BMP data');
      for (let i = 0; i < value; i++)
        put(bpp === 8 ? src[p + i]! : i % 2 === 0 ? src[p + (i >> 1)]! >> 4 : src[p + (i >> 1)]! & 0x0f);
      p += nbytes + (nbytes & 1);
    }
  }
}
