/**
 * Our scan and decode against the hostile dataset (fixtures-hostile.ts): which files the scan
 * offers and which it refuses, and what decodeForModel makes of every file — pixels of the right
 * size, or a DecodeError with the reason the manifest counts. The end-to-end skip-and-count
 * behaviour of `extract` on the same fixture is in extract.test.ts.
 *
 *   node --import tsx --test test/fixtures-hostile.test.ts
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { scanDataset } from '../src/dataset/scan.ts';
import { decodeForModel, DecodeError, DEFAULT_MAX_PIXELS } from '../src/images/decode.ts';
import { DEFAULT_PREPROCESSING } from '../src/backbone/backbone.ts';
import type { Preprocessing } from '../src/backbone/preprocess.ts';
import { silentLogger } from '../src/util/log.ts';
import { defaultSourceJpegs, makeHostileDataset, type BadReason, type HostileManifest } from './fixtures-hostile.ts';

const SOURCES = defaultSourceJpegs(3);

let tmp = '';
let m: HostileManifest;
const abs = (rel: string): string => join(m.root, ...rel.split('/'));
const decode = (input: string | Buffer, pre: Preprocessing = DEFAULT_PREPROCESSING) =>
  decodeForModel(input, pre, { maxPixels: DEFAULT_MAX_PIXELS });

/** The DecodeError message our decoder gives for each kind of bad file (what the manifest's skip reasons show). */
const EXPECTED_ERROR: Record<BadReason, RegExp> = {
  'pixel-limit': /exceeds the pixel limit/,
  empty: /not an image/,
  decode: /not an image|corrupt or truncated/,
  truncated: /corrupt or truncated/,
};

before(async () => {
  const missing = [...SOURCES.cats, ...SOURCES.dogs].filter((p) => !existsSync(p));
  // Fail, never skip: without the shared photos these checks would silently not run.
  assert.equal(
    missing.length,
    0,
    `hostile fixtures need the shared cats-vs-dogs photos (missing: ${missing.join(', ')}); put ../shared beside the repo or set CONVCACHE_MIRROR`,
  );
  tmp = mkdtempSync(join(tmpdir(), 'hostile-'));
  m = await makeHostileDataset(join(tmp, 'data'), SOURCES);
});
after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('the fixture lists every entry under its root exactly once (the other checks rely on it)', () => {
  const seen: string[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isSymbolicLink() || e.isFile()) seen.push(relative(m.root, p).split(sep).join('/'));
      else if (e.isDirectory()) walk(p);
    }
  };
  walk(m.root);
  const listed = [...m.valid, ...m.bad.map((b) => b.path), ...m.ignored];
  assert.equal(new Set(listed).size, listed.length, 'no path listed twice');
  assert.deepEqual([...seen].sort(), [...listed].sort());
});

test('scan offers every image-named file once, sorted, labelled by class folder; ignores hidden files, non-images and symlinks out of the root', () => {
  const scan = scanDataset(m.root, silentLogger);
  const paths = scan.images.map((i) => i.path);
  assert.deepEqual(
    [...paths].sort(),
    [...m.valid, ...m.bad.map((b) => b.path)].sort(),
    'exactly the valid and bad files (decode decides on the bad ones)',
  );
  assert.deepEqual(
    paths,
    [...paths].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
    'code-point order',
  );
  assert.deepEqual(scan.classes, ['cats', 'dogs']);
  assert.equal(scan.presplit, false);
  for (const img of scan.images) assert.equal(img.className, m.labels[img.path], img.path);
  assert.ok(paths.includes('cats/sub/nested.jpg'), 'nested folders belong to their class');
  assert.ok(
    paths.includes('cats/chat_été_猫.jpg') && paths.includes('dogs/DOG-UPPER.JPEG'),
    'unicode names and upper-case extensions',
  );
  for (const rel of m.ignored) assert.ok(!paths.includes(rel), `${rel} must not be offered`);
  const skipped = new Map(scan.skipped.map((s) => [s.path, s.reason]));
  for (const rel of ['dogs/outside.jpg', 'dogs/passwd.jpg'])
    assert.match(skipped.get(rel) ?? '', /outside the data root/, `${rel} is reported as skipped`);
});

test('decodeForModel: every valid file (CMYK, grey, 16-bit, alpha, GIF, WebP, 1×1, mislabelled PNG) gives H·W·3 bytes at the asked size', async () => {
  const pre: Preprocessing = { ...DEFAULT_PREPROCESSING, size: [96, 128] };
  for (const rel of m.valid) {
    assert.equal((await decode(abs(rel))).length, 224 * 224 * 3, rel);
    assert.equal((await decode(abs(rel), pre)).length, 96 * 128 * 3, `${rel} at 96×128`);
  }
});

test('decodeForModel: every bad file is a DecodeError with the reason for its kind; nothing else escapes', async () => {
  assert.ok(m.bad.length >= 5, 'the fixture has bad files of several kinds');
  for (const b of m.bad) {
    const err = await decode(abs(b.path)).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(
      err instanceof DecodeError,
      `${b.path} (${b.why}) must be rejected with a DecodeError, got ${String(err)}`,
    );
    assert.match(err.message, EXPECTED_ERROR[b.why], `${b.path} (${b.why})`);
  }
  await assert.rejects(decode(Buffer.alloc(0)), DecodeError, 'an empty buffer');
});

test('decodeForModel: files that only warn (corrupt mid-stream) still decode; decompression bombs are refused by the pixel limit, not by memory', async () => {
  for (const w of m.warnings) assert.equal((await decode(abs(w.path))).length, 224 * 224 * 3, w.path);
  const bomb = m.bad.find((b) => b.why === 'pixel-limit');
  assert.ok(bomb, 'the fixture has a decompression bomb');
  await assert.rejects(decodeForModel(abs(bomb.path), DEFAULT_PREPROCESSING, { maxPixels: 1e6 }), /pixel limit/);
});

test('decodeForModel applies EXIF orientation before resizing (as if the pixels were stored upright)', async () => {
  const p = abs('cats/exif-orientation-6.jpg');
  const upright = await sharp(p).rotate().png().toBuffer();
  const sideways = await sharp(p).png().toBuffer(); // PNG carries no orientation
  const ours = await decode(p);
  // JPEG shrink-on-load makes the direct decode differ from the re-encoded one by a level or two.
  const meanAbsDiff = (a: Uint8Array, b: Uint8Array) => a.reduce((s, v, i) => s + Math.abs(v - b[i]!), 0) / a.length;
  const toUpright = meanAbsDiff(ours, await decode(upright));
  const toSideways = meanAbsDiff(ours, await decode(sideways));
  assert.ok(toUpright < 2, `close to the rotated image (mean |diff| ${toUpright.toFixed(2)})`);
  assert.ok(
    toSideways > 5 * toUpright + 5,
    `far from the unrotated image (mean |diff| ${toSideways.toFixed(2)} vs ${toUpright.toFixed(2)})`,
  );
});
