/**
 * Small independent writers for test images that sharp cannot produce: BMP in every layout the
 * decoder claims (palette depths, RLE, bitfields, core/V5 headers, top-down) and baseline TIFF
 * with 16-bit samples and several pages. Written from the format specs, not from src/.
 */

export interface Rgb {
  width: number;
  height: number;
  data: Uint8Array;
}

export interface BmpOptions {
  bpp: 1 | 4 | 8 | 16 | 24 | 32;
  compression?: 'rgb' | 'rle8' | 'rle4' | 'bitfields';
  topDown?: boolean;
  /** DIB header size: 12 (OS/2 core), 40 (INFO), 108 (V4), 124 (V5). */
  header?: 12 | 40 | 108 | 124;
  /** R, G, B, A masks for bitfields. */
  masks?: [number, number, number, number];
}

/** Palette of the image's distinct colours (insertion order); throws if more than the depth allows. */
function paletteOf(img: Rgb, max: number): { colours: number[]; index: Uint8Array } {
  const map = new Map<number, number>();
  const index = new Uint8Array(img.width * img.height);
  for (let i = 0; i < index.length; i++) {
    const c = (img.data[i * 3]! << 16) | (img.data[i * 3 + 1]! << 8) | img.data[i * 3 + 2]!;
    let k = map.get(c);
    if (k === undefined) {
      k = map.size;
      map.set(c, k);
    }
    index[i] = k;
  }
  if (map.size > max) throw new Error(`image has ${map.size} colours, more than ${max}`);
  return { colours: [...map.keys()], index };
}

/** Greedy RLE of one row of indices: runs of equal values, absolute runs (>= 3) for the rest. */
function rleRow(row: Uint8Array, nibbles: boolean): number[] {
  const out: number[] = [];
  let i = 0;
  while (i < row.length) {
    let run = 1;
    while (i + run < row.length && row[i + run] === row[i] && run < 255) run++;
    if (run >= 2) {
      out.push(run, nibbles ? (row[i]! << 4) | row[i]! : row[i]!);
      i += run;
      continue;
    }
    let lit = 1;
    while (i + lit < row.length && lit < 255 && !(i + lit + 1 < row.length && row[i + lit] === row[i + lit + 1])) lit++;
    if (lit < 3) {
      for (let k = 0; k < lit; k++) out.push(1, nibbles ? row[i + k]! << 4 : row[i + k]!);
      i += lit;
      continue;
    }
    out.push(0, lit);
    const bytes: number[] = [];
    if (nibbles) for (let k = 0; k < lit; k += 2) bytes.push((row[i + k]! << 4) | (k + 1 < lit ? row[i + k + 1]! : 0));
    else for (let k = 0; k < lit; k++) bytes.push(row[i + k]!);
    if (bytes.length % 2) bytes.push(0);
    out.push(...bytes);
    i += lit;
  }
  out.push(0, 0);
  return out;
}

export function encodeBmp(img: Rgb, o: BmpOptions): Uint8Array {
  const { width: w, height: h } = img;
  const header = o.header ?? 40;
  const compression = o.compression ?? 'rgb';
  const paletted = o.bpp <= 8;
  const pal = paletted ? paletteOf(img, 1 << o.bpp) : undefined;
  const entry = header === 12 ? 3 : 4;
  const paletteBytes = pal ? (1 << o.bpp) * entry : 0;
  const maskBytes = compression === 'bitfields' && header === 40 ? 12 : 0;
  const rows: number[][] = [];
  const order = Array.from({ length: h }, (_, k) => (o.topDown ? k : h - 1 - k));
  let pixels: number[];
  if (compression === 'rle8' || compression === 'rle4') {
    pixels = [];
    for (const y of order) pixels.push(...rleRow(pal!.index.subarray(y * w, (y + 1) * w), compression === 'rle4'));
    pixels.push(0, 1);
  } else {
    const stride = Math.floor((w * o.bpp + 31) / 32) * 4;
    const masks = o.masks ?? (o.bpp === 16 ? [0x7c00, 0x03e0, 0x001f, 0] : [0xff0000, 0xff00, 0xff, 0]);
    for (const y of order) {
      const row = new Uint8Array(stride);
      const dv = new DataView(row.buffer);
      for (let x = 0; x < w; x++) {
        const p = (y * w + x) * 3;
        const [r, g, b] = [img.data[p]!, img.data[p + 1]!, img.data[p + 2]!];
        if (paletted) {
          const idx = pal!.index[y * w + x]!;
          const bit = x * o.bpp;
          row[bit >> 3]! |= idx << (8 - o.bpp - (bit & 7));
        } else if (o.bpp === 24) {
          row[x * 3] = b;
          row[x * 3 + 1] = g;
          row[x * 3 + 2] = r;
        } else {
          const pack = (v: number, m: number): number => {
            if (m === 0) return 0;
            let shift = 0;
            while (((m >>> shift) & 1) === 0) shift++;
            const bits = Math.log2((m >>> shift) + 1);
            return ((v >> (8 - bits)) << shift) >>> 0;
          };
          const v = (pack(r, masks[0]!) | pack(g, masks[1]!) | pack(b, masks[2]!) | (masks[3] ? masks[3] : 0)) >>> 0;
          if (o.bpp === 16) dv.setUint16(x * 2, v, true);
          else dv.setUint32(x * 4, v, true);
        }
      }
      rows.push([...row]);
    }
    pixels = rows.flat();
  }
  const offset = 14 + header + maskBytes + paletteBytes;
  const buf = new Uint8Array(offset + pixels.length);
  const dv = new DataView(buf.buffer);
  buf[0] = 0x42;
  buf[1] = 0x4d;
  dv.setUint32(2, buf.length, true);
  dv.setUint32(10, offset, true);
  dv.setUint32(14, header, true);
  if (header === 12) {
    dv.setUint16(18, w, true);
    dv.setInt16(20, o.topDown ? -h : h, true);
    dv.setUint16(22, 1, true);
    dv.setUint16(24, o.bpp, true);
  } else {
    dv.setInt32(18, w, true);
    dv.setInt32(22, o.topDown ? -h : h, true);
    dv.setUint16(26, 1, true);
    dv.setUint16(28, o.bpp, true);
    const comp = { rgb: 0, rle8: 1, rle4: 2, bitfields: 3 }[compression];
    dv.setUint32(30, comp, true);
    dv.setUint32(34, pixels.length, true);
    dv.setUint32(46, pal ? pal.colours.length : 0, true);
    if (compression === 'bitfields') {
      const m = o.masks ?? [0xff0000, 0xff00, 0xff, 0];
      for (let k = 0; k < (header === 40 ? 3 : 4); k++) dv.setUint32(54 + k * 4, m[k]!, true);
    }
    if (header >= 108) dv.setUint32(14 + 56, 0x73524742, true); // 'sRGB' colour space
  }
  if (pal) {
    const start = 14 + header + maskBytes;
    pal.colours.forEach((c, i) => {
      buf[start + i * entry] = c & 0xff;
      buf[start + i * entry + 1] = (c >> 8) & 0xff;
      buf[start + i * entry + 2] = c >> 16;
    });
  }
  buf.set(pixels, offset);
  return buf;
}

/** Baseline little-endian TIFF, uncompressed RGB, one page per image; 8 or 16 bits per sample. */
export function encodeTiff(pages: { width: number; height: number; data: Uint8Array | Uint16Array }[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let size = 8;
  const ifdAt: number[] = [];
  const layout = pages.map((p) => {
    const bits = p.data instanceof Uint16Array ? 16 : 8;
    const pixelAt = size;
    const bytes = new Uint8Array(p.data.buffer, p.data.byteOffset, p.data.byteLength);
    size += bytes.length + (bytes.length & 1);
    const bpsAt = size;
    size += 6;
    ifdAt.push(size);
    size += 2 + 10 * 12 + 4;
    return { p, bits, pixelAt, bytes, bpsAt };
  });
  const buf = new Uint8Array(size);
  const dv = new DataView(buf.buffer);
  buf[0] = 0x49;
  buf[1] = 0x49;
  dv.setUint16(2, 42, true);
  dv.setUint32(4, ifdAt[0]!, true);
  layout.forEach(({ p, bits, pixelAt, bytes, bpsAt }, i) => {
    buf.set(bytes, pixelAt);
    for (let k = 0; k < 3; k++) dv.setUint16(bpsAt + k * 2, bits, true);
    const tags: [number, number, number, number][] = [
      // tag, type (3 short, 4 long), count, value
      [256, 4, 1, p.width],
      [257, 4, 1, p.height],
      [258, 3, 3, bpsAt],
      [259, 3, 1, 1],
      [262, 3, 1, 2],
      [273, 4, 1, pixelAt],
      [277, 3, 1, 3],
      [278, 4, 1, p.height],
      [279, 4, 1, bytes.length],
      [284, 3, 1, 1],
    ];
    let q = ifdAt[i]!;
    dv.setUint16(q, tags.length, true);
    q += 2;
    for (const [tag, type, count, value] of tags) {
      dv.setUint16(q, tag, true);
      dv.setUint16(q + 2, type, true);
      dv.setUint32(q + 4, count, true);
      if (type === 3 && count === 1) dv.setUint16(q + 8, value, true);
      else dv.setUint32(q + 8, value, true);
      q += 12;
    }
    dv.setUint32(q, ifdAt[i + 1] ?? 0, true);
  });
  parts.push(buf);
  return buf;
}
