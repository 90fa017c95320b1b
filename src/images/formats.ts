/**
 * What a file is, by content (never by extension), so a skipped image's reason can name its format.
 * Which formats decode, and through what, lives here too: the scan's extension list and the README
 * table are checked against it by the tests.
 */

export type ImageFormat =
  'jpeg' | 'png' | 'gif' | 'webp' | 'tiff' | 'bmp' | 'avif' | 'heic' | 'jxl' | 'jp2' | 'ico' | 'psd' | 'svg' | 'pdf';

/** Human names used in messages. */
export const FORMAT_NAMES: Record<ImageFormat, string> = {
  jpeg: 'JPEG',
  png: 'PNG',
  gif: 'GIF',
  webp: 'WebP',
  tiff: 'TIFF',
  bmp: 'BMP',
  avif: 'AVIF',
  heic: 'HEIC/HEIF',
  jxl: 'JPEG XL',
  jp2: 'JPEG 2000',
  ico: 'ICO',
  psd: 'Photoshop PSD',
  svg: 'SVG',
  pdf: 'PDF',
};

/**
 * Formats we decode and the file extensions the scan picks up for them. HEIC is listed because
 * its files are scanned either way: they decode when the optional HEVC decoder is installed and are
 * otherwise skipped with a reason saying how to convert them (see heif.ts).
 */
export const DECODABLE_FORMATS: Record<string, readonly string[]> = {
  jpeg: ['jpg', 'jpeg', 'jpe', 'jfif'],
  png: ['png'],
  gif: ['gif'],
  webp: ['webp'],
  tiff: ['tif', 'tiff'],
  bmp: ['bmp', 'dib'],
  avif: ['avif'],
  heic: ['heic', 'heif', 'hif'],
};

/** Recommended conversion for formats we cannot decode. */
export const CONVERT_HINT = 'convert it to PNG or JPEG (e.g. `magick in out.png` or `vips copy in out.png`)';

const ascii = (buf: Uint8Array, at: number, n: number): string => String.fromCharCode(...buf.subarray(at, at + n));

/** ISO-BMFF brands of an 'ftyp' box (major first), or undefined when the file is not ISO-BMFF. */
export function ftypBrands(buf: Uint8Array): string[] | undefined {
  if (buf.length < 16 || ascii(buf, 4, 4) !== 'ftyp') return undefined;
  const size = Math.min(buf.length, new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(0, false));
  const brands = [ascii(buf, 8, 4)];
  for (let p = 16; p + 4 <= size; p += 4) brands.push(ascii(buf, p, 4));
  return brands;
}

const AVIF_BRANDS = new Set(['avif', 'avis']);
const HEIC_BRANDS = new Set(['heic', 'heix', 'heim', 'heis', 'hevc', 'hevx', 'hevm', 'hevs']);

export function sniffFormat(buf: Uint8Array): ImageFormat | undefined {
  const b = buf;
  if (b.length < 4) return undefined;
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (b[0] === 0x89 && ascii(b, 1, 3) === 'PNG') return 'png';
  if (ascii(b, 0, 4) === 'GIF8') return 'gif';
  if (b.length >= 12 && ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 4) === 'WEBP') return 'webp';
  if (
    (b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a && b[3] === 0) ||
    (b[0] === 0x4d && b[1] === 0x4d && b[2] === 0 && b[3] === 0x2a)
  )
    return 'tiff';
  if (b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2b && b[3] === 0) return 'tiff'; // BigTIFF
  if (b[0] === 0x42 && b[1] === 0x4d) return 'bmp';
  const brands = ftypBrands(b);
  if (brands) {
    // mif1/msf1 alone say "some HEIF image"; the codec brand decides. AVIF wins when both appear.
    if (brands.some((x) => AVIF_BRANDS.has(x))) return 'avif';
    if (brands.some((x) => HEIC_BRANDS.has(x) || x === 'mif1' || x === 'msf1')) return 'heic';
    if (brands.includes('jxl ')) return 'jxl';
    return undefined;
  }
  if (b[0] === 0xff && b[1] === 0x0a) return 'jxl';
  if (b.length >= 12 && ascii(b, 4, 8) === 'JXL \r\n\x87\n') return 'jxl';
  if (b.length >= 12 && ascii(b, 4, 4) === 'jP  ') return 'jp2';
  if (b[0] === 0 && b[1] === 0 && b[2] === 1 && b[3] === 0) return 'ico';
  if (ascii(b, 0, 4) === '8BPS') return 'psd';
  if (ascii(b, 0, 4) === '%PDF') return 'pdf';
  const head = new TextDecoder().decode(b.subarray(0, 256)).trimStart().toLowerCase();
  if (head.startsWith('<svg') || (head.startsWith('<?xml') && head.includes('<svg'))) return 'svg';
  return undefined;
}

/** The reason recorded for a file whose format we recognise but do not decode. */
export function unsupportedReason(format: ImageFormat): string {
  return `${FORMAT_NAMES[format]} image: not supported by convcache's decoders; ${CONVERT_HINT}`;
}
