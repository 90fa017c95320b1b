import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { decodeBmp, BmpError } from '../src/images/bmp.ts';
import { decodeForModel, DecodeError } from '../src/images/decode.ts';
import { DECODABLE_FORMATS, sniffFormat } from '../src/images/formats.ts';
import { IMAGE_EXTENSIONS, scanDataset } from '../src/dataset/scan.ts';
import { findBackbone } from '../src/backbone/registry.ts';
import { extractFeatures } from '../src/pipeline/extract.ts';
import { decodeFeatureArrow } from '../src/store/arrow.ts';
import { silentLogger } from '../src/util/log.ts';
import { packageRoot } from '../src/util/paths.ts';
import { encodeBmp, encodeTiff, type BmpOptions, type Rgb } from './image-encoders.ts';
import { SHARED_DATA, removeDir, tempDir } from './helpers.ts';

const PRE = findBackbone('mobilenet_v1_0.75_224')!.preprocessing;
const SMALL = { ...PRE, size: [32, 32] as [number, number] };

/** 13x7 (odd width: row padding), n distinct colours, with both runs and literal stretches (RLE paths). */
function patterned(n: number, w = 13, h = 7): Rgb {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const k = (x < 6 ? x + y : (x >> 2) + y * 3) % n;
      const p = (y * w + x) * 3;
      data[p] = (k * 37 + 11) & 0xff;
      data[p + 1] = (k * 91 + 200) & 0xff;
      data[p + 2] = (k * 53) & 0xff;
    }
  return { width: w, height: h, data };
}

/** What a channel of `bits` bits reads back as: top bits kept, then scaled by 255 / (2^bits - 1), truncated (as Pillow). */
function quantise(img: Rgb, bits: [number, number, number]): Uint8Array {
  return img.data.map((v, i) => {
    const b = bits[i % 3]!;
    return b >= 8 ? v : Math.floor(((v >> (8 - b)) * 255) / ((1 << b) - 1));
  });
}

const VARIANTS: { name: string; colours: number; opts: BmpOptions; bits?: [number, number, number] }[] = [
  { name: '1-bit', colours: 2, opts: { bpp: 1 } },
  { name: '4-bit', colours: 16, opts: { bpp: 4 } },
  { name: '8-bit', colours: 200, opts: { bpp: 8 } },
  { name: '8-bit OS/2 core header', colours: 100, opts: { bpp: 8, header: 12 } },
  { name: '4-bit RLE4', colours: 16, opts: { bpp: 4, compression: 'rle4' } },
  { name: '8-bit RLE8', colours: 60, opts: { bpp: 8, compression: 'rle8' } },
  { name: '16-bit 5-5-5', colours: 91, opts: { bpp: 16 }, bits: [5, 5, 5] },
  {
    name: '16-bit 5-6-5 bitfields',
    colours: 91,
    opts: { bpp: 16, compression: 'bitfields', masks: [0xf800, 0x07e0, 0x001f, 0] },
    bits: [5, 6, 5],
  },
  { name: '24-bit', colours: 91, opts: { bpp: 24 } },
  { name: '24-bit top-down', colours: 91, opts: { bpp: 24, topDown: true } },
  { name: '32-bit BGRX', colours: 91, opts: { bpp: 32 } },
  {
    name: '32-bit V5 bitfields with alpha, top-down',
    colours: 91,
    opts: {
      bpp: 32,
      header: 124,
      compression: 'bitfields',
      masks: [0x00ff0000, 0x0000ff00, 0x000000ff, 0xff000000],
      topDown: true,
    },
  },
  {
    name: '32-bit V4 RGBA-ordered masks',
    colours: 91,
    opts: { bpp: 32, header: 108, compression: 'bitfields', masks: [0xff000000, 0x00ff0000, 0x0000ff00, 0x000000ff] },
  },
];

test('BMP decoder: every bit depth, RLE, bitfields, header and row order reads back the encoded pixels', () => {
  for (const v of VARIANTS) {
    const img = patterned(v.colours);
    const out = decodeBmp(encodeBmp(img, v.opts));
    assert.equal(out.kind, 'rgb', v.name);
    if (out.kind !== 'rgb') continue;
    assert.deepEqual([out.width, out.height], [img.width, img.height], v.name);
    assert.deepEqual(out.data, v.bits ? quantise(img, v.bits) : img.data, v.name);
  }
});

test('BMP decoder: RLE8 delta and early end leave skipped pixels black; damaged files name the cause', () => {
  // 4x2 RLE8, bottom-up: row 0 (bottom) = [1,1] then delta (+1, +1) to x=3 of row 1, one pixel, end.
  const header = encodeBmp({ width: 4, height: 2, data: new Uint8Array(24) }, { bpp: 8 }).subarray(0, 14 + 40);
  const palette = new Uint8Array(256 * 4);
  palette.set([0, 0, 255, 0], 4); // index 1 = red (BGR0)
  palette.set([0, 255, 0, 0], 8); // index 2 = green
  const stream = [2, 1, 0, 2, 1, 1, 1, 2, 0, 1];
  const file = new Uint8Array([...header, ...palette, ...stream]);
  const dv = new DataView(file.buffer);
  dv.setUint32(10, 14 + 40 + 1024, true);
  dv.setUint32(30, 1, true); // RLE8
  dv.setUint32(46, 0, true);
  const out = decodeBmp(file);
  assert.equal(out.kind, 'rgb');
  if (out.kind !== 'rgb') return;
  const px = (x: number, y: number) => [...out.data.subarray((y * 4 + x) * 3, (y * 4 + x) * 3 + 3)];
  assert.deepEqual(px(0, 1), [255, 0, 0]); // bottom row, written first
  assert.deepEqual(px(1, 1), [255, 0, 0]);
  assert.deepEqual(px(2, 1), [0, 0, 0]);
  assert.deepEqual(px(3, 0), [0, 255, 0]); // after the delta: top row, x = 3
  assert.deepEqual(px(0, 0), [0, 0, 0]);

  const good = encodeBmp(patterned(91), { bpp: 24 });
  assert.throws(
    () => decodeBmp(good.subarray(0, good.length - 40)),
    (e: unknown) => e instanceof BmpError && /truncated BMP/.test(e.message),
  );
  assert.throws(
    () => decodeBmp(good, 50),
    (e: unknown) => e instanceof BmpError && /pixel limit/.test(e.message),
  );
  const badDepth = good.slice();
  new DataView(badDepth.buffer).setUint16(28, 7, true);
  assert.throws(() => decodeBmp(badDepth), /unsupported BMP bit depth 7/);
});

test('decodeForModel: a BMP gives the same model input as a PNG of the same pixels', async () => {
  for (const v of VARIANTS.filter((x) => !x.bits)) {
    const img = patterned(v.colours, 40, 30);
    const png = await sharp(img.data, { raw: { width: 40, height: 30, channels: 3 } })
      .png()
      .toBuffer();
    const a = await decodeForModel(Buffer.from(encodeBmp(img, v.opts)), SMALL, { maxPixels: 1e8 });
    const b = await decodeForModel(png, SMALL, { maxPixels: 1e8 });
    assert.deepEqual(a, b, v.name);
  }
});

const solid = (r: number, g: number, b: number, w = 24, h = 16) =>
  sharp({ create: { width: w, height: h, channels: 3, background: { r, g, b } } })
    .png()
    .toBuffer();
const meanRgb = (px: Uint8Array) =>
  [0, 1, 2].map((c) => px.filter((_, i) => i % 3 === c).reduce((a, v) => a + v, 0) / (px.length / 3));

test('first frame / first page: animated GIF and WebP, multi-page 16-bit TIFF', async () => {
  const frames = [await solid(250, 0, 0), await solid(0, 0, 250)];
  for (const fmt of ['gif', 'webp'] as const) {
    const anim = await sharp(frames, { join: { animated: true } })
      [fmt]({ ...(fmt === 'webp' ? { lossless: true } : {}) })
      .toBuffer();
    assert.equal((await sharp(anim).metadata()).pages, 2, `${fmt} is animated`);
    const m = meanRgb(await decodeForModel(anim, SMALL, { maxPixels: 1e8 }));
    assert.ok(m[0]! > 240 && m[2]! < 10, `${fmt}: first frame (red), got ${m}`);
  }
  const page = (r: number, b: number) => ({
    width: 8,
    height: 8,
    data: new Uint16Array(8 * 8 * 3).map((_, i) => [r, 1028, b][i % 3]!),
  });
  const tiff = encodeTiff([page(65535, 0), page(0, 65535)]);
  const meta = await sharp(tiff).metadata();
  assert.deepEqual([meta.pages, meta.depth], [2, 'ushort']);
  const m = meanRgb(await decodeForModel(Buffer.from(tiff), SMALL, { maxPixels: 1e8 }));
  assert.ok(
    Math.abs(m[0]! - 255) < 0.5 && Math.abs(m[1]! - 4) <= 1 && m[2]! < 0.5,
    `16-bit TIFF page 1 scaled to 8 bits, got ${m}`,
  );
});

/** Scanned extensions = formats that decode; the README's list says the same. */
test('the scan picks up exactly the decodable formats, and the README says so', () => {
  assert.deepEqual([...IMAGE_EXTENSIONS].sort(), Object.values(DECODABLE_FORMATS).flat().sort());
  const readme = readFileSync(join(packageRoot(), 'README.md'), 'utf8');
  const line = readme.split('\n').find((l) => l.includes('Images are recognised by extension'));
  assert.ok(line, 'README documents the extensions');
  for (const ext of IMAGE_EXTENSIONS) assert.ok(new RegExp(`\\b${ext}\\b`).test(line!), `README lists .${ext}`);
});

/**
 * A 636-byte HEIC made by libheif 1.15's heif-enc (x265, -q 90) from a 64x48 PNG whose left half is
 * orange (255, 128, 0) and right half blue (0, 64, 255): committed because nothing on npm encodes HEVC.
 */
const HEIC_FIXTURE = join(packageRoot(), 'test', 'fixtures', 'halves-64x48.heic');

test('a folder mixing every format: all decodable images are extracted, the rest skipped with reasons naming format and cause', async () => {
  const dir = tempDir('formats');
  try {
    const root = join(dir, 'data');
    const put = (rel: string, bytes: Uint8Array | string) => {
      mkdirSync(join(root, rel, '..'), { recursive: true });
      writeFileSync(join(root, rel), bytes);
    };
    const jpgs = (cls: string) =>
      readdirSync(join(SHARED_DATA(), 'train', cls))
        .sort()
        .slice(0, 2)
        .map((f) => join(SHARED_DATA(), 'train', cls, f));
    const [cat1, cat2] = jpgs('cats');
    const [dog1, dog2] = jpgs('dogs');
    mkdirSync(join(root, 'cats'), { recursive: true });
    mkdirSync(join(root, 'dogs'), { recursive: true });
    copyFileSync(cat1!, join(root, 'cats', 'a.jpg'));
    copyFileSync(dog1!, join(root, 'dogs', 'a.JPEG'));
    const raw = async (file: string) => sharp(file).resize(96, 64).raw().toBuffer({ resolveWithObject: true });
    const catPx = await raw(cat2!);
    const dogPx = await raw(dog2!);
    const rgb = (p: typeof catPx): Rgb => ({
      width: p.info.width,
      height: p.info.height,
      data: new Uint8Array(p.data),
    });
    put('cats/b.png', await sharp(cat2!).png().toBuffer());
    put('cats/c24.bmp', encodeBmp(rgb(catPx), { bpp: 24 }));
    put(
      'cats/c32.BMP',
      encodeBmp(rgb(catPx), {
        bpp: 32,
        header: 124,
        compression: 'bitfields',
        masks: [0xff0000, 0xff00, 0xff, 0xff000000],
        topDown: true,
      }),
    );
    put('cats/c16.bmp', encodeBmp(rgb(catPx), { bpp: 16 }));
    put('cats/c8.dib', encodeBmp(patterned(200, 96, 64), { bpp: 8, compression: 'rle8' }));
    put('cats/c4.bmp', encodeBmp(patterned(16, 96, 64), { bpp: 4, compression: 'rle4' }));
    put('cats/c1.bmp', encodeBmp(patterned(2, 96, 64), { bpp: 1 }));
    put(
      'dogs/anim.gif',
      await sharp([await solid(200, 10, 10), await solid(10, 10, 200)], { join: { animated: true } })
        .gif()
        .toBuffer(),
    );
    put(
      'dogs/anim.webp',
      await sharp([await solid(200, 10, 10), await solid(10, 10, 200)], { join: { animated: true } })
        .webp()
        .toBuffer(),
    );
    put('dogs/b.avif', await sharp(dog2!).resize(96, 64).avif().toBuffer());
    put(
      'dogs/pages16.tiff',
      encodeTiff([
        { width: 16, height: 8, data: new Uint16Array(16 * 8 * 3).fill(30000) },
        { width: 4, height: 4, data: new Uint16Array(48) },
      ]),
    );
    put('dogs/c.tif', await sharp(dogPx.data, { raw: dogPx.info }).tiff({ compression: 'lzw' }).toBuffer());
    put('dogs/phone.HEIC', readFileSync(HEIC_FIXTURE));
    // Files that cannot be used, each with the reason we expect.
    const truncatedBmp = encodeBmp(rgb(catPx), { bpp: 24 });
    put('cats/truncated.bmp', truncatedBmp.subarray(0, 2000));
    put('cats/jxl.avif', new Uint8Array([0xff, 0x0a, 0xfa, 0x7f, 0x01, 0x90, 0x08, 0x06, 0x01, 0x00, 0x48]));
    put('cats/layers.tif', Buffer.concat([Buffer.from('8BPS\x00\x01', 'latin1'), Buffer.alloc(40)]));
    put('dogs/notes.heic', 'just some text, not a photo\n');
    const broken = Buffer.from(await sharp(dog2!).resize(96, 64).avif().toBuffer());
    put('dogs/broken.avif', broken.subarray(0, Math.floor(broken.length / 2)));
    const expectSkipped: Record<string, RegExp> = {
      'cats/truncated.bmp': /^BMP image: truncated BMP/,
      'cats/jxl.avif': /^JPEG XL image: not supported .*convert it to PNG or JPEG/,
      'cats/layers.tif': /^Photoshop PSD image: not supported .*convert it to PNG or JPEG/,
      'dogs/notes.heic': /^not an image \(unknown or unsupported format\)$/,
      'dogs/broken.avif': /^corrupt or truncated AVIF image/,
    };
    assert.equal(sniffFormat(readFileSync(join(root, 'dogs/b.avif'))), 'avif');

    const out = join(dir, 'cache');
    const { manifest } = await extractFeatures({
      data: root,
      out,
      model: 'mobilenet_v1_0.75_224',
      split: { train: 1, val: 0, test: 0 },
      seed: 1,
      batch: 8,
      workers: 2,
      threads: 1,
      maxPixels: 1e8,
      quiet: true,
      log: silentLogger,
    });
    const { rows } = decodeFeatureArrow(readFileSync(join(out, 'features.arrow')));
    const decodable = [
      'cats/a.jpg',
      'dogs/a.JPEG',
      'cats/b.png',
      'cats/c24.bmp',
      'cats/c32.BMP',
      'cats/c16.bmp',
      'cats/c8.dib',
      'cats/c4.bmp',
      'cats/c1.bmp',
      'dogs/anim.gif',
      'dogs/anim.webp',
      'dogs/b.avif',
      'dogs/pages16.tiff',
      'dogs/c.tif',
      'dogs/phone.HEIC',
    ];
    assert.deepEqual([...rows.paths].sort(), decodable.sort());
    const skipped = Object.fromEntries(manifest.skipped.map((s) => [s.path, s.reason]));
    assert.deepEqual(Object.keys(skipped).sort(), Object.keys(expectSkipped).sort());
    for (const [p, re] of Object.entries(expectSkipped)) assert.match(skipped[p]!, re, p);

    // The BMP and the PNG of the same photo give the same features (the BMP path is the PNG path after decoding).
    const bmp = await decodeForModel(readFileSync(join(root, 'cats/c24.bmp')), PRE, { maxPixels: 1e8 });
    const png = await decodeForModel(await sharp(catPx.data, { raw: catPx.info }).png().toBuffer(), PRE, {
      maxPixels: 1e8,
    });
    assert.deepEqual(bmp, png);
    assert.ok(scanDataset(root, silentLogger).images.length === decodable.length + Object.keys(expectSkipped).length);
  } finally {
    removeDir(dir);
  }
});

test('HEIC: decoded through libheif (wasm), the right way round; pixel limit checked before decoding', async () => {
  const buf = readFileSync(HEIC_FIXTURE);
  assert.equal(sniffFormat(buf), 'heic');
  const pre = { ...SMALL, size: [48, 64] as [number, number], resize: 'squash' as const };
  const px = await decodeForModel(buf, pre, { maxPixels: 1e8 });
  const at = (x: number, y: number) => [...px.subarray((y * 64 + x) * 3, (y * 64 + x) * 3 + 3)];
  // HEVC is lossy: allow a few levels.
  const near = (a: number[], b: number[]) => a.every((v, i) => Math.abs(v - b[i]!) <= 4);
  assert.ok(near(at(5, 24), [255, 128, 0]), `left half orange, got ${at(5, 24)}`);
  assert.ok(near(at(60, 24), [0, 64, 255]), `right half blue, got ${at(60, 24)}`);
  await assert.rejects(
    decodeForModel(buf, SMALL, { maxPixels: 100 }),
    (e: unknown) => e instanceof DecodeError && /pixel limit/.test(e.message),
  );
  await assert.rejects(
    decodeForModel(buf.subarray(0, 300), SMALL, { maxPixels: 1e8 }),
    (e: unknown) => e instanceof DecodeError && /HEIC\/HEIF image/.test(e.message),
  );
});
