import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { findBackbone } from '../src/backbone/registry.ts';
import type { Preprocessing } from '../src/backbone/preprocess.ts';
import { DecodeError, decodeForModel, decodeWithSharp, resolveDecoder } from '../src/images/decode.ts';
import { DecodePool } from '../src/images/decode-pool.ts';
import { applyOrientation, jpegOrientation } from '../src/images/exif.ts';
import { dctScale, decodeJpegFast, fastJpegAvailable, type FastDecodeStats } from '../src/images/jpeg-fast.ts';
import { Resizer, resizeRgb, trimTaps, type Taps } from '../src/images/resize.ts';
import { seededRandom } from '../src/linalg/random.ts';
import { SHARED_DATA, removeDir, tempDir } from './helpers.ts';

const PRE: Preprocessing = findBackbone('mobilenet_v1_0.75_224')!.preprocessing;
const OPTS = { maxPixels: 1e8 };

function photos(n: number): Buffer[] {
  const dir = join(SHARED_DATA(), 'train', 'dogs');
  return readdirSync(dir)
    .sort()
    .slice(0, n)
    .map((f) => readFileSync(join(dir, f)));
}

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  assert.equal(a.length, b.length);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
}

/** Fast path output, asserting it did not fall back. */
function fast(buf: Uint8Array, pre = PRE, stats?: FastDecodeStats): Uint8Array {
  const px = decodeJpegFast(buf, pre, 1e8, stats);
  assert.ok(px, 'the fast path should decode this JPEG');
  return px;
}

test('the fast path is available here (libjpeg-turbo from @julusian/jpeg-turbo through koffi)', () => {
  assert.equal(fastJpegAvailable(), true);
  assert.equal(resolveDecoder(), 'fast');
  assert.equal(resolveDecoder('sharp'), 'sharp');
});

test('fast path on real photos: within ~1 grey level of sharp on average, and decodeForModel uses it', async () => {
  for (const buf of photos(4)) {
    const a = fast(buf);
    const b = await decodeWithSharp(buf, PRE, OPTS);
    assert.equal(a.length, 224 * 224 * 3);
    assert.ok(meanAbsDiff(a, b) < 2.5, `mean abs diff ${meanAbsDiff(a, b)}`);
    assert.deepEqual(await decodeForModel(buf, PRE, OPTS), a);
  }
});

test('EXIF orientation 1..8 matches sharp (rotate()), and differs from ignoring it', async () => {
  // An asymmetric picture: a real photo with a bright block in one corner. Larger than the target
  // both ways: when upscaling, sharp's sampling grid sits half a pixel off ours (and ORT's Resize).
  const base = await sharp(photos(1)[0]!)
    .resize(400, 300, { fit: 'fill' })
    .composite([{ input: { create: { width: 80, height: 40, channels: 3, background: '#ff2000' } }, left: 0, top: 0 }])
    .raw()
    .toBuffer();
  const raw = { raw: { width: 400, height: 300, channels: 3 as const } };
  const plain = fast(await sharp(base, raw).jpeg({ quality: 95 }).toBuffer());
  for (let o = 1; o <= 8; o++) {
    const jpg = await sharp(base, raw).jpeg({ quality: 95 }).withMetadata({ orientation: o }).toBuffer();
    assert.equal(jpegOrientation(jpg), o);
    const a = fast(jpg);
    const b = await decodeWithSharp(jpg, PRE, OPTS);
    assert.ok(meanAbsDiff(a, b) < 3, `orientation ${o}: mean abs diff vs sharp ${meanAbsDiff(a, b)}`);
    if (o > 1) assert.ok(meanAbsDiff(a, plain) > 10, `orientation ${o} must change the pixels`);
  }
});

test('progressive and grayscale JPEGs go through the fast path', async () => {
  const src = await sharp(photos(2)[1]!).resize(400, 300, { fit: 'fill' }).raw().toBuffer();
  const raw = { raw: { width: 400, height: 300, channels: 3 as const } };
  const prog = await sharp(src, raw).jpeg({ progressive: true, quality: 90 }).toBuffer();
  assert.ok((await sharp(prog).metadata()).isProgressive);
  assert.ok(meanAbsDiff(fast(prog), await decodeWithSharp(prog, PRE, OPTS)) < 2.5);
  const gray = await sharp(src, raw).toColourspace('b-w').jpeg({ quality: 90 }).toBuffer();
  assert.equal((await sharp(gray).metadata()).channels, 1);
  const g = fast(gray);
  for (let i = 0; i < g.length; i += 3)
    assert.ok(g[i] === g[i + 1] && g[i] === g[i + 2], 'grayscale decodes to equal R, G, B');
  assert.ok(meanAbsDiff(g, await decodeWithSharp(gray, PRE, OPTS)) < 2.5);
});

test('CMYK JPEGs fall back to sharp; truncated JPEGs fall back and are refused as before', async () => {
  const cmyk = await sharp(photos(1)[0]!).toColourspace('cmyk').jpeg().toBuffer();
  assert.equal((await sharp(cmyk).metadata()).space, 'cmyk');
  assert.equal(decodeJpegFast(cmyk, PRE, 1e8), null);
  const px = await decodeForModel(cmyk, PRE, OPTS);
  assert.deepEqual(px, await decodeWithSharp(cmyk, PRE, OPTS));
  const full = photos(1)[0]!;
  const cut = full.subarray(0, Math.floor(full.length * 0.6));
  assert.equal(decodeJpegFast(cut, PRE, 1e8), null);
  await assert.rejects(decodeForModel(cut, PRE, OPTS), DecodeError);
  await assert.rejects(decodeForModel(Buffer.from(full.subarray(0, 40)), PRE, OPTS), DecodeError);
});

test('scaled decode: images at least three times the target are shrunk in the DCT domain, as sharp does', async () => {
  assert.equal(dctScale(500, 375, 224, 224), 1);
  assert.equal(dctScale(448, 448, 224, 224), 1);
  assert.equal(dctScale(672, 672, 224, 224), 2);
  assert.equal(dctScale(4032, 3024, 224, 224), 8);
  assert.equal(dctScale(1000, 900, 224, 224), 2);
  assert.equal(dctScale(1500, 1500, 224, 224), 4);
  const big = await sharp(photos(1)[0]!).resize(1000, 900, { fit: 'fill' }).jpeg({ quality: 92 }).toBuffer();
  const stats: FastDecodeStats = { scaleDenom: 0, decodedWidth: 0, decodedHeight: 0 };
  const a = fast(big, PRE, stats);
  assert.deepEqual(stats, { scaleDenom: 2, decodedWidth: 500, decodedHeight: 450 });
  const d = meanAbsDiff(a, await decodeWithSharp(big, PRE, OPTS));
  assert.ok(d < 0.5, `mean abs diff ${d}`);
  // The pixel limit is checked from the header, before decoding.
  await assert.rejects(decodeForModel(big, PRE, { maxPixels: 1000 * 900 - 1 }), /pixel limit/);
});

test('center-crop preprocessing (foreign ONNX models) matches sharp', async () => {
  const pre: Preprocessing = { ...PRE, resize: 'center-crop', cropPct: 0.875, kernel: 'cubic' };
  for (const photo of photos(2)) {
    const buf = await sharp(photo).resize(600, 450, { fit: 'fill' }).jpeg({ quality: 92 }).toBuffer();
    const d = meanAbsDiff(fast(buf, pre), await decodeWithSharp(buf, pre, OPTS));
    assert.ok(d < 3, `mean abs diff ${d}`);
  }
});

test('exif parser: big- and little-endian TIFF, no EXIF, garbage', () => {
  const app1 = (le: boolean, o: number): Buffer => {
    const tiff = Buffer.alloc(26);
    if (le) {
      tiff.write('II', 0);
      tiff.writeUInt16LE(42, 2);
      tiff.writeUInt32LE(8, 4);
      tiff.writeUInt16LE(1, 8);
      tiff.writeUInt16LE(0x112, 10);
      tiff.writeUInt16LE(3, 12);
      tiff.writeUInt32LE(1, 14);
      tiff.writeUInt16LE(o, 18);
    } else {
      tiff.write('MM', 0);
      tiff.writeUInt16BE(42, 2);
      tiff.writeUInt32BE(8, 4);
      tiff.writeUInt16BE(1, 8);
      tiff.writeUInt16BE(0x112, 10);
      tiff.writeUInt16BE(3, 12);
      tiff.writeUInt32BE(1, 14);
      tiff.writeUInt16BE(o, 18);
    }
    const body = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(body.length + 2);
    return Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe1]), len, body, Buffer.from([0xff, 0xda, 0, 2])]);
  };
  assert.equal(jpegOrientation(app1(true, 6)), 6);
  assert.equal(jpegOrientation(app1(false, 8)), 8);
  assert.equal(jpegOrientation(app1(true, 42)), 1);
  assert.equal(jpegOrientation(Buffer.from([0xff, 0xd8, 0xff, 0xda])), 1);
  assert.equal(jpegOrientation(Buffer.from('not a jpeg')), 1);
  assert.equal(jpegOrientation(app1(true, 6).subarray(0, 12)), 1);
  // 6 = rotate 90° clockwise for display: the stored top-left pixel ends up top-right.
  const src = Uint8Array.from({ length: 2 * 3 * 3 }, (_, i) => i);
  const r = applyOrientation(src, 3, 2, 6);
  assert.equal(r.width, 2);
  assert.deepEqual([...r.data.subarray(3, 6)], [0, 1, 2]);
});

test('wasm SIMD resize equals the scalar reference (to rounding) for every kernel', () => {
  const rand = seededRandom(7);
  const rz = new Resizer();
  assert.equal(rz.simd, true);
  for (const [sw, sh, dw, dh] of [
    [500, 375, 224, 224],
    [150, 149, 224, 224],
    [37, 300, 224, 56],
    [224, 224, 223, 225],
  ] as const) {
    const src = Uint8Array.from({ length: sw * sh * 3 }, () => Math.floor(rand() * 256));
    for (const k of ['nearest', 'linear', 'cubic', 'mitchell', 'lanczos2', 'lanczos3'] as const) {
      const a = resizeRgb(src, sw, sh, dw, dh, k);
      rz.input(sw, sh).set(src);
      const b = rz.resize(sw, sh, dw, dh, k);
      let mx = 0;
      for (let i = 0; i < a.length; i++) mx = Math.max(mx, Math.abs(a[i]! - b[i]!));
      assert.ok(mx <= 1, `${sw}x${sh}->${dw}x${dh} ${k}: max diff ${mx}`);
    }
  }
});

test('trimmed resize taps: the same weight on every source pixel, windows inside the image, no wider than needed', () => {
  const rand = seededRandom(11);
  const dense = (t: Taps, inSize: number): number[][] =>
    Array.from(t.start, (st, x) => {
      const row = new Array<number>(inSize).fill(0);
      for (let k = 0; k < t.taps; k++) row[st + k]! += t.weights[x * t.taps + k]!;
      return row;
    });
  for (let trial = 0; trial < 50; trial++) {
    const inSize = 3 + Math.floor(rand() * 40),
      taps = 1 + Math.floor(rand() * Math.min(inSize, 7)),
      outSize = 1 + Math.floor(rand() * 30);
    const start = Int32Array.from({ length: outSize }, () => Math.floor(rand() * (inSize - taps + 1)));
    // Zero runs at either end (and inside) of each window, as the fixed-count taps have.
    const weights = Float32Array.from({ length: outSize * taps }, () => (rand() < 0.4 ? 0 : rand() - 0.3));
    const t: Taps = { start, weights, taps };
    const trimmed = trimTaps(t, inSize);
    assert.deepEqual(dense(trimmed, inSize), dense(t, inSize), 'every source pixel keeps its weight');
    assert.ok(trimmed.taps <= taps);
    let widest = 0;
    for (let x = 0; x < outSize; x++) {
      assert.ok(trimmed.start[x]! >= 0 && trimmed.start[x]! + trimmed.taps <= inSize, 'window inside the image');
      const w = Array.from(trimmed.weights.subarray(x * trimmed.taps, (x + 1) * trimmed.taps));
      const nz = w.flatMap((v, k) => (v !== 0 ? [k] : []));
      if (nz.length) widest = Math.max(widest, nz.at(-1)! - nz[0]! + 1);
    }
    assert.equal(trimmed.taps, Math.max(1, widest), 'as narrow as the widest non-zero span');
  }
});

test('DecodePool: worker threads give the same pixels, fall back to sharp, and report bad files', async () => {
  const dir = tempDir('pool');
  try {
    const [a, b] = photos(2);
    writeFileSync(join(dir, 'a.jpg'), a!);
    writeFileSync(join(dir, 'b.png'), await sharp(b!).png().toBuffer());
    writeFileSync(join(dir, 'c.jpg'), 'not an image');
    const pool = new DecodePool(2, PRE, 1e8);
    try {
      assert.deepEqual(await pool.decode(join(dir, 'a.jpg')), fast(a!));
      assert.deepEqual(
        await pool.decode(join(dir, 'b.png')),
        await decodeWithSharp(readFileSync(join(dir, 'b.png')), PRE, OPTS),
      );
      await assert.rejects(pool.decode(join(dir, 'c.jpg')), DecodeError);
      await assert.rejects(pool.decode(join(dir, 'missing.jpg')), /unreadable file \(ENOENT\)/);
    } finally {
      await pool.close();
    }
  } finally {
    removeDir(dir);
  }
});

test('decoding into a given buffer gives the same pixels as a fresh array (plain, EXIF-rotated, center-crop)', async () => {
  const rotated = await sharp(photos(1)[0]!).jpeg({ quality: 92 }).withMetadata({ orientation: 6 }).toBuffer();
  const crop: Preprocessing = { ...PRE, resize: 'center-crop', cropPct: 0.875 };
  for (const [buf, pre] of [
    ...photos(3).map((b) => [b, PRE] as const),
    [rotated, PRE] as const,
    [photos(1)[0]!, crop] as const,
  ]) {
    const fresh = fast(buf, pre);
    const out = new Uint8Array(fresh.length).fill(7);
    assert.equal(decodeJpegFast(buf, pre, 1e8, undefined, out), out, 'returns the buffer it was given');
    assert.deepEqual(out, fresh);
  }
});

test('DecodePool shared slots: more requests than slots all finish, a held slot is not reused until released', async () => {
  const dir = join(SHARED_DATA(), 'train', 'cats');
  const files = readdirSync(dir)
    .sort()
    .slice(0, 7)
    .map((f) => join(dir, f));
  const want = files.map((f) => fast(readFileSync(f)));
  const pool = new DecodePool(2, PRE, 1e8, { slots: 2 });
  try {
    assert.equal(pool.slots, 2);
    // Hold the first image: the remaining six share the other slot, one after another.
    const first = await pool.decodeShared(files[0]!);
    const kept = first.pixels.slice();
    const rest = await Promise.all(
      files.slice(1).map((f) =>
        pool.decodeShared(f).then((s) => {
          const copy = s.pixels.slice();
          s.release();
          return copy;
        }),
      ),
    );
    assert.deepEqual(first.pixels, kept, 'the held slot was not overwritten');
    assert.deepEqual(first.pixels, want[0]);
    rest.forEach((px, i) => assert.deepEqual(px, want[i + 1], `image ${i + 1}`));
    first.release();
    first.release(); // idempotent: the slot is not freed twice
    const again = await Promise.all(files.slice(0, 3).map((f) => pool.decode(f)));
    again.forEach((px, i) => assert.deepEqual(px, want[i]));
  } finally {
    await pool.close();
  }
});

test(
  'decode threads lower their own priority (Linux), and only theirs',
  { skip: process.platform !== 'linux' },
  async () => {
    const niceOf = (): number[] =>
      readdirSync('/proc/self/task').map((tid) => {
        // Field 19 of stat is the nice value; the command name (field 2) may hold spaces, so count after ')'.
        const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
      });
    const base = niceOf()[0]!; // the main thread's (the test may itself run under nice)
    const lowered = Math.min(19, base + 7);
    const before = niceOf().filter((n) => n === lowered).length;
    const pool = new DecodePool(2, PRE, 1e8, 7);
    try {
      const dir = join(SHARED_DATA(), 'train', 'dogs');
      const file = join(dir, readdirSync(dir).sort()[0]!);
      await Promise.all([pool.decode(file), pool.decode(file)]); // both threads are up and have run their start-up
      if (lowered > base)
        assert.equal(niceOf().filter((n) => n === lowered).length - before, 2, 'the two decode threads 7 steps lower');
      assert.equal(niceOf()[0], base, 'the main thread (ORT runs on it) keeps its priority');
    } finally {
      await pool.close();
    }
  },
);
