import { SHARED_DATA } from './helpers.ts';
/**
 * Hostile image-dataset fixture for the extractor / dataset scanner tests.
 *
 * makeHostileDataset(root, sources) builds `root/{cats,dogs}/...` from a few real
 * JPEGs plus deliberately awkward files, and returns a manifest saying which
 * files a correct pipeline must decode (`valid`), must skip with a reason
 * (`bad`), and must never see (`ignored`).
 *
 * Conventions assumed of the scanner (document them in the scanner too):
 *  - class = first path segment under root (`cats/sub/nested.jpg` is a cat);
 *  - image extensions, case-insensitive: .jpg .jpeg .png .gif .webp;
 *    everything else (README.txt) is ignored silently;
 *  - names starting with '.' (files or directories) are ignored silently;
 *  - symlinks are never followed (no loops, no escaping root), so they are ignored.
 *
 * Sharp behaviour (sharp 0.35.5 / bundled libvips), measured by
 * test/fixtures-hostile.test.ts with the reference decode
 *   sharp(p, {failOn, limitInputPixels: 100e6}).rotate().removeAlpha()
 *     .toColourspace('srgb').resize(224, 224, {fit: 'fill'}).raw()
 * is recorded per file in `bad[].failOn` / `warnings[].failOn`: the most
 * lenient failOn level at which sharp rejects the file ('none' = always).
 * Ordering, lenient -> strict: none < truncated < error < warning.
 */
import sharp, { type Sharp } from 'sharp';
import { copyFile, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { deflateSync } from 'node:zlib';

export type FailOnLevel = 'none' | 'truncated' | 'error' | 'warning';
/** Lenient -> strict. A file rejected at level L is rejected at every stricter level. */
export const FAIL_ON_LEVELS: readonly FailOnLevel[] = ['none', 'truncated', 'error', 'warning'];

export type BadReason =
  | 'empty' //        0-byte file
  | 'decode' //       not an image / unsupported format / corrupt header
  | 'truncated' //    body cut short; libjpeg can still render it partially
  | 'pixel-limit'; // decompression bomb: header dimensions exceed limitInputPixels

export interface HostileBad {
  /** Relative to root, '/'-separated. */
  path: string;
  why: BadReason;
  /** Most lenient sharp `failOn` level that rejects this file ('none' = rejected at every level). */
  failOn: FailOnLevel;
  /** Substring of sharp's error message (first line). */
  error: string;
}

export interface HostileWarning {
  /** Relative path of a file that is ALSO in `valid`. */
  path: string;
  why: string;
  /** Only failOn 'warning' rejects it. */
  failOn: 'warning';
  error: string;
}

export interface HostileManifest {
  /** Absolute root that was built. */
  root: string;
  /** Relative paths ('/'-separated) expected to decode to 224x224 RGB. Sorted. */
  valid: string[];
  /** Relative paths expected to be skipped, with reason. Sorted by path. */
  bad: HostileBad[];
  /** Relative paths that must be silently ignored (not counted as valid or bad). Sorted. */
  ignored: string[];
  /** Subset of `valid` that libjpeg decodes with a warning (corrupt data mid-stream). */
  warnings: HostileWarning[];
  /** Class of every valid and bad file (first path segment). */
  labels: Record<string, 'cats' | 'dogs'>;
  /** Directory OUTSIDE root holding the target of the escaping symlink (clean it up too). */
  outsideDir: string;
}

export interface HostileSources {
  cats: string[];
  dogs: string[];
}

export const DEFAULT_DATASET = join(SHARED_DATA(), 'train');

/** cat.1.jpg..cat.N.jpg / dog.1.jpg..dog.N.jpg from the shared dataset. */
export function defaultSourceJpegs(n = 3, base = DEFAULT_DATASET): HostileSources {
  const ids = Array.from({ length: n }, (_, i) => i + 1);
  return {
    cats: ids.map((i) => join(base, 'cats', `cat.${i}.jpg`)),
    dogs: ids.map((i) => join(base, 'dogs', `dog.${i}.jpg`)),
  };
}

// ------------------------------------------------------------------ PNG crafting
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const x of b) c = CRC_TABLE[(c ^ x) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** A 1-bit greyscale PNG with the given header dimensions and (compressed) IDAT payload. */
export function craftPng1Bit(width: number, height: number, idat: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 0; // colour type: greyscale
  ihdr[10] = 0;
  ihdr[11] = 0;
  ihdr[12] = 0; // compression, filter, interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', idat),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A genuinely valid, all-black 1-bit PNG of width x height (tiny on disk: ~50 KB for 20000^2). */
export function bombPng(width: number, height: number): Buffer {
  const raw = Buffer.alloc(height * (1 + Math.ceil(width / 8))); // filter byte 0 + zero pixels per row
  return craftPng1Bit(width, height, deflateSync(raw, { level: 9 }));
}

// ------------------------------------------------------------------ builder
export async function makeHostileDataset(root: string, sourceJpegs: HostileSources): Promise<HostileManifest> {
  const { cats, dogs } = sourceJpegs;
  if (cats.length < 1 || dogs.length < 1) throw new Error('makeHostileDataset: need at least one cat and one dog JPEG');
  root = resolve(root);
  await mkdir(root, { recursive: true });
  if ((await readdir(root)).length > 0) throw new Error(`makeHostileDataset: ${root} is not empty`);
  const outsideDir = `${root}-outside`;
  await mkdir(outsideDir, { recursive: true });

  const valid: string[] = [];
  const bad: HostileBad[] = [];
  const ignored: string[] = [];
  const warnings: HostileWarning[] = [];

  const abs = (rel: string): string => join(root, ...rel.split('/'));
  const put = async (rel: string, data: Buffer | string): Promise<void> => {
    await mkdir(dirname(abs(rel)), { recursive: true });
    await writeFile(abs(rel), data);
  };
  const putSharp = async (rel: string, img: Sharp): Promise<void> => put(rel, await img.toBuffer());
  const cp = async (rel: string, src: string): Promise<void> => {
    await mkdir(dirname(abs(rel)), { recursive: true });
    await copyFile(src, abs(rel));
  };
  const link = async (rel: string, target: string): Promise<void> => {
    await mkdir(dirname(abs(rel)), { recursive: true });
    await symlink(target, abs(rel));
  };

  await mkdir(abs('cats'), { recursive: true });
  await mkdir(abs('dogs'), { recursive: true });

  // --- good JPEGs copied verbatim
  for (const src of cats) {
    const rel = `cats/${basename(src)}`;
    await cp(rel, src);
    valid.push(rel);
  }
  for (const src of dogs) {
    const rel = `dogs/${basename(src)}`;
    await cp(rel, src);
    valid.push(rel);
  }

  const cat0 = cats[0]!;
  const dog0 = dogs[0]!;
  const catBytes = await readFile(cat0);
  const dogBytes = await readFile(dog0);

  // --- awkward but valid
  await cp('cats/chat_été_猫.jpg', cats[1] ?? cat0);
  valid.push('cats/chat_été_猫.jpg');
  await cp('cats/sub/nested.jpg', cats[2] ?? cat0);
  valid.push('cats/sub/nested.jpg');
  await putSharp('cats/cmyk.jpg', sharp(catBytes).toColourspace('cmyk').jpeg());
  valid.push('cats/cmyk.jpg');
  await putSharp('cats/grey.jpg', sharp(catBytes).toColourspace('b-w').jpeg());
  valid.push('cats/grey.jpg'); // 1 channel
  await putSharp('cats/rgb16.png', sharp(catBytes).toColourspace('rgb16').png());
  valid.push('cats/rgb16.png');
  await putSharp('cats/rgba-transparent.png', sharp(catBytes).ensureAlpha(0.5).png());
  valid.push('cats/rgba-transparent.png');
  await putSharp('cats/cat.gif', sharp(catBytes).gif());
  valid.push('cats/cat.gif');
  await putSharp('cats/exif-orientation-6.jpg', sharp(catBytes).jpeg().withMetadata({ orientation: 6 }));
  valid.push('cats/exif-orientation-6.jpg');
  await putSharp('dogs/dog.webp', sharp(dogBytes).webp());
  valid.push('dogs/dog.webp');
  await putSharp('dogs/png-named.jpg', sharp(dogBytes).png());
  valid.push('dogs/png-named.jpg');
  await cp('dogs/DOG-UPPER.JPEG', dog0);
  valid.push('dogs/DOG-UPPER.JPEG');
  await cp('dogs/dog "quoted" & spaced, comma.jpg', dog0);
  valid.push('dogs/dog "quoted" & spaced, comma.jpg');
  await putSharp('dogs/grey-alpha.png', sharp(dogBytes).toColourspace('b-w').ensureAlpha(0.5).png());
  valid.push('dogs/grey-alpha.png'); // 2 channels
  await putSharp(
    'dogs/tiny-1x1.png',
    sharp({ create: { width: 1, height: 1, channels: 3, background: '#c08040' } }).png(),
  );
  valid.push('dogs/tiny-1x1.png');
  // 200 bytes flipped mid-scan: libjpeg warns "Corrupt JPEG data", renders garbage; only failOn 'warning' rejects.
  {
    const b = Buffer.from(dogBytes);
    const mid = Math.floor(b.length / 2);
    for (let i = mid; i < mid + 200 && i < b.length - 2; i++) b[i] = b[i]! ^ 0xff;
    await put('dogs/corrupt-midstream.jpg', b);
    valid.push('dogs/corrupt-midstream.jpg');
    warnings.push({
      path: 'dogs/corrupt-midstream.jpg',
      why: 'corrupt JPEG data mid-stream (libjpeg warning)',
      failOn: 'warning',
      error: 'Corrupt JPEG data',
    });
  }

  // --- bad
  await put('cats/truncated.jpg', catBytes.subarray(0, Math.floor(catBytes.length * 0.4)));
  bad.push({ path: 'cats/truncated.jpg', why: 'truncated', failOn: 'truncated', error: 'premature end of JPEG image' });
  await put('cats/empty.jpg', Buffer.alloc(0));
  bad.push({ path: 'cats/empty.jpg', why: 'empty', failOn: 'none', error: 'unsupported image format' });
  await put('cats/text.jpg', 'This is not a JPEG. It is a text file wearing a .jpg costume.\n');
  bad.push({ path: 'cats/text.jpg', why: 'decode', failOn: 'none', error: 'unsupported image format' });
  await put('dogs/header-only.jpg', dogBytes.subarray(0, 300)); // SOI + some markers, no SOS
  bad.push({ path: 'dogs/header-only.jpg', why: 'decode', failOn: 'none', error: 'corrupt header' });
  await put('cats/bomb-20000x20000.png', bombPng(20000, 20000)); // valid PNG, 400 Mpx, ~50 KB
  bad.push({ path: 'cats/bomb-20000x20000.png', why: 'pixel-limit', failOn: 'none', error: 'exceeds pixel limit' });
  await put('dogs/bomb-60000x60000.png', craftPng1Bit(60000, 60000, deflateSync(Buffer.alloc(16)))); // lying header, tiny IDAT
  bad.push({ path: 'dogs/bomb-60000x60000.png', why: 'pixel-limit', failOn: 'none', error: 'exceeds pixel limit' });

  // --- ignored silently
  await cp('cats/.hidden.jpg', cat0);
  ignored.push('cats/.hidden.jpg');
  await cp('cats/.thumbs/thumb.jpg', cat0);
  ignored.push('cats/.thumbs/thumb.jpg');
  await put('README.txt', 'hostile fixture\n');
  ignored.push('README.txt');
  await put('dogs/README.txt', 'not an image\n');
  ignored.push('dogs/README.txt');
  await link('cats/loop', '..');
  ignored.push('cats/loop'); // cats/loop/cats/loop/... forever
  const outsideImg = join(outsideDir, 'secret.jpg');
  await copyFile(dog0, outsideImg); // a REAL image, so following the link would visibly "work"
  await link('dogs/outside.jpg', outsideImg);
  ignored.push('dogs/outside.jpg');
  await link('dogs/passwd.jpg', '/etc/passwd');
  ignored.push('dogs/passwd.jpg');

  valid.sort();
  bad.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  ignored.sort();
  const labels: Record<string, 'cats' | 'dogs'> = {};
  for (const p of [...valid, ...bad.map((b) => b.path)]) labels[p] = p.startsWith('cats/') ? 'cats' : 'dogs';
  return { root, valid, bad, ignored, warnings, labels, outsideDir };
}
