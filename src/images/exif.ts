/**
 * EXIF orientation of a JPEG (the APP1 "Exif" segment's IFD0 tag 0x0112), read without a library:
 * the fast JPEG path needs only this one tag. Returns 1 (as stored) when absent or unreadable.
 */
export function jpegOrientation(buf: Uint8Array): number {
  if (buf.length < 4 || buf[0] !== 0xff || buf[1] !== 0xd8) return 1;
  let p = 2;
  while (p + 4 <= buf.length) {
    if (buf[p] !== 0xff) return 1;
    const marker = buf[p + 1]!;
    if (marker === 0xff) {
      p += 1;
      continue;
    } // fill byte
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) {
      p += 2;
      continue;
    }
    // Start of scan or end of image: EXIF always precedes the image data.
    if (marker === 0xda || marker === 0xd9) return 1;
    const len = (buf[p + 2]! << 8) | buf[p + 3]!;
    if (len < 2 || p + 2 + len > buf.length) return 1;
    if (marker === 0xe1 && len >= 16 && isExifHeader(buf, p + 4)) {
      const o = tiffOrientation(buf.subarray(p + 10, p + 2 + len));
      if (o !== undefined) return o;
    }
    p += 2 + len;
  }
  return 1;
}

function isExifHeader(b: Uint8Array, p: number): boolean {
  return (
    b[p] === 0x45 && b[p + 1] === 0x78 && b[p + 2] === 0x69 && b[p + 3] === 0x66 && b[p + 4] === 0 && b[p + 5] === 0
  );
}

/** Orientation from a TIFF block (byte order mark, IFD0 offset, 12-byte entries). */
function tiffOrientation(t: Uint8Array): number | undefined {
  if (t.length < 8) return undefined;
  const little = t[0] === 0x49 && t[1] === 0x49;
  if (!little && !(t[0] === 0x4d && t[1] === 0x4d)) return undefined;
  const u16 = (i: number): number => (little ? t[i]! | (t[i + 1]! << 8) : (t[i]! << 8) | t[i + 1]!);
  const u32 = (i: number): number =>
    little ? (u16(i) | (u16(i + 2) << 16)) >>> 0 : ((u16(i) << 16) | u16(i + 2)) >>> 0;
  if (u16(2) !== 42) return undefined;
  const ifd = u32(4);
  if (ifd + 2 > t.length) return undefined;
  const n = u16(ifd);
  for (let k = 0; k < n; k++) {
    const e = ifd + 2 + k * 12;
    if (e + 12 > t.length) return undefined;
    if (u16(e) !== 0x0112) continue;
    const type = u16(e + 2);
    const v = type === 3 ? u16(e + 8) : type === 4 ? u32(e + 8) : 0; // SHORT (the standard) or LONG
    return v >= 1 && v <= 8 ? v : 1;
  }
  return undefined;
}

/** Orientations 5..8 swap width and height. */
export function orientationTransposes(o: number): boolean {
  return o >= 5 && o <= 8;
}

/**
 * Apply an EXIF orientation to an RGB image (as sharp's rotate() / PIL's exif_transpose do): returns
 * the displayed image. Meant for the small, already-resized image, so it is a plain gather.
 */
export function applyOrientation(
  src: Uint8Array,
  w: number,
  h: number,
  o: number,
): { data: Uint8Array; width: number; height: number } {
  if (o <= 1 || o > 8) return { data: src, width: w, height: h };
  const t = orientationTransposes(o);
  const ow = t ? h : w;
  const oh = t ? w : h;
  const out = new Uint8Array(ow * oh * 3);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      // (sx, sy): the stored pixel shown at displayed (x, y).
      let sx: number, sy: number;
      switch (o) {
        case 2:
          sx = w - 1 - x;
          sy = y;
          break; // mirrored horizontally
        case 3:
          sx = w - 1 - x;
          sy = h - 1 - y;
          break; // rotated 180
        case 4:
          sx = x;
          sy = h - 1 - y;
          break; // mirrored vertically
        case 5:
          sx = y;
          sy = x;
          break; // transposed
        case 6:
          sx = y;
          sy = h - 1 - x;
          break; // rotate 90 CW to display
        case 7:
          sx = w - 1 - y;
          sy = h - 1 - x;
          break; // transverse
        default:
          sx = w - 1 - y;
          sy = x;
          break; // 8: rotate 270 CW to display
      }
      const s = (sy * w + sx) * 3;
      const d = (y * ow + x) * 3;
      out[d] = src[s]!;
      out[d + 1] = src[s + 1]!;
      out[d + 2] = src[s + 2]!;
    }
  }
  return { data: out, width: ow, height: oh };
}
