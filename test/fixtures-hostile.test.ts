/**
 * Builds the hostile dataset and pins down how plain sharp treats every file,
 * so the real decoder's choices (failOn level, pixel limit, symlink policy) are
 * grounded in measured behaviour.
 *
 *   node --import tsx --test test/fixtures-hostile.test.ts
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { existsSync, lstatSync, readdirSync, realpathSync, rmSync, statSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import {
  FAIL_ON_LEVELS, defaultSourceJpegs, makeHostileDataset,
  type FailOnLevel, type HostileManifest,
} from './fixtures-hostile.ts';

const SOURCES = defaultSourceJpegs(3);
const haveData = [...SOURCES.cats, ...SOURCES.dogs].every((p) => existsSync(p));

let tmp = '';
let m: HostileManifest;
const abs = (rel: string): string => join(m.root, ...rel.split('/'));

/** The reference decode from the brief, with a configurable failOn. */
async function decode(p: string, failOn: FailOnLevel = 'error', limitInputPixels: number | boolean = 100e6) {
  return sharp(p, { failOn, limitInputPixels })
    .rotate().removeAlpha().toColourspace('srgb')
    .resize(224, 224, { fit: 'fill' })
    .raw().toBuffer({ resolveWithObject: true });
}

async function rejects(p: string, failOn: FailOnLevel): Promise<string | null> {
  try { await decode(p, failOn); return null; } catch (e) { return (e as Error).message; }
}

before(async () => {
  if (!haveData) return;
  tmp = mkdtempSync(join(tmpdir(), 'hostile-'));
  m = await makeHostileDataset(join(tmp, 'data'), SOURCES);
});
after(() => { if (tmp) rmSync(tmp, { recursive: true, force: true }); });

const t = haveData ? test : test.skip;

t('manifest is complete and disjoint (every entry under root is classified exactly once)', () => {
  const seen: string[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      const rel = relative(m.root, p).split(sep).join('/');
      if (e.isSymbolicLink() || e.isFile()) seen.push(rel);
      else if (e.isDirectory()) walk(p); // Dirent from readdir never follows symlinks
    }
  };
  walk(m.root);
  const listed = [...m.valid, ...m.bad.map((b) => b.path), ...m.ignored];
  assert.equal(new Set(listed).size, listed.length, 'no path listed twice');
  assert.deepEqual([...seen].sort(), [...listed].sort());
  for (const w of m.warnings) assert.ok(m.valid.includes(w.path), `${w.path} warning entry must be valid`);
  for (const p of [...m.valid, ...m.bad.map((b) => b.path)]) assert.equal(m.labels[p], p.split('/')[0]);
  assert.equal(m.labels['cats/sub/nested.jpg'], 'cats');
  assert.ok(m.valid.includes('cats/chat_été_猫.jpg'));
});

t('symlinks: loop points at root, outside.jpg escapes root to a real image, all are ignored', () => {
  for (const rel of ['cats/loop', 'dogs/outside.jpg', 'dogs/passwd.jpg']) {
    assert.ok(lstatSync(abs(rel)).isSymbolicLink(), rel);
    assert.ok(m.ignored.includes(rel), rel);
  }
  assert.equal(realpathSync(abs('cats/loop')), realpathSync(m.root));
  const out = realpathSync(abs('dogs/outside.jpg'));
  assert.ok(!out.startsWith(realpathSync(m.root) + sep), 'target is outside root');
  assert.ok(out.startsWith(realpathSync(m.outsideDir)));
  assert.ok(statSync(out).size > 1000, 'the escaping link targets a real image');
});

t('every valid file decodes with plain sharp (failOn error) to 224x224x3 uint8', async () => {
  for (const rel of m.valid) {
    const { data, info } = await decode(abs(rel), 'error');
    assert.deepEqual([info.width, info.height, info.channels], [224, 224, 3], rel);
    assert.equal(data.length, 224 * 224 * 3, `${rel}: 8-bit output (16-bit PNG is narrowed by toColourspace('srgb'))`);
  }
});

t('every bad file throws with the same call, with the documented message', async () => {
  for (const b of m.bad) {
    const msg = await rejects(abs(b.path), 'error');
    assert.ok(msg !== null, `${b.path} (${b.why}) should be rejected with failOn 'error'`);
    assert.ok(msg.includes(b.error), `${b.path}: "${msg}" should contain "${b.error}"`);
  }
});

t('failOn ladder: each bad/warning file is rejected exactly from its documented level on', async () => {
  for (const e of [...m.bad, ...m.warnings]) {
    const lvl = FAIL_ON_LEVELS.indexOf(e.failOn);
    for (let i = 0; i < FAIL_ON_LEVELS.length; i++) {
      const msg = await rejects(abs(e.path), FAIL_ON_LEVELS[i]!);
      if (i >= lvl) assert.ok(msg !== null && msg.includes(e.error), `${e.path}: failOn '${FAIL_ON_LEVELS[i]}' should reject (got ${msg})`);
      else assert.equal(msg, null, `${e.path}: failOn '${FAIL_ON_LEVELS[i]}' should still decode`);
    }
  }
  // and no other valid file trips even the strictest level
  const warned = new Set(m.warnings.map((w) => w.path));
  for (const rel of m.valid.filter((p) => !warned.has(p))) assert.equal(await rejects(abs(rel), 'warning'), null, rel);
});

t('truncated JPEG: header is readable, failOn none renders it partially', async () => {
  const p = abs('cats/truncated.jpg');
  const meta = await sharp(p).metadata();
  assert.equal(meta.format, 'jpeg');
  const { info } = await decode(p, 'none');
  assert.equal(info.channels, 3);
});

t('decompression bombs: small on disk, honest-looking headers, rejected only by the pixel limit', async () => {
  for (const [rel, w] of [['cats/bomb-20000x20000.png', 20000], ['dogs/bomb-60000x60000.png', 60000]] as const) {
    assert.ok(statSync(abs(rel)).size < 100_000, `${rel} is small on disk`);
    const meta = await sharp(abs(rel), { limitInputPixels: false }).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', w, w]);
    // sharp's default limit (0x3FFF^2 ~ 268 Mpx) also rejects both
    await assert.rejects(sharp(abs(rel)).metadata(), /exceeds pixel limit/);
  }
});

t('format quirks are what the fixture claims', async () => {
  const meta = async (rel: string) => sharp(abs(rel)).metadata();
  const cmyk = await meta('cats/cmyk.jpg');
  assert.deepEqual([cmyk.format, cmyk.space, cmyk.channels], ['jpeg', 'cmyk', 4]);
  const grey = await meta('cats/grey.jpg');
  assert.deepEqual([grey.space, grey.channels], ['b-w', 1]);
  const r16 = await meta('cats/rgb16.png');
  assert.deepEqual([r16.space, r16.depth, r16.channels], ['rgb16', 'ushort', 3]);
  const rgba = await meta('cats/rgba-transparent.png');
  assert.deepEqual([rgba.hasAlpha, rgba.channels], [true, 4]);
  const ga = await meta('dogs/grey-alpha.png');
  assert.deepEqual([ga.space, ga.channels, ga.hasAlpha], ['b-w', 2, true]);
  assert.equal((await meta('cats/cat.gif')).format, 'gif');
  assert.equal((await meta('dogs/dog.webp')).format, 'webp');
  assert.equal((await meta('dogs/png-named.jpg')).format, 'png', 'sharp sniffs content, not extension');
  const tiny = await meta('dogs/tiny-1x1.png');
  assert.deepEqual([tiny.width, tiny.height], [1, 1]);
});

t('EXIF orientation 6: rotate() swaps width/height before the resize', async () => {
  const p = abs('cats/exif-orientation-6.jpg');
  const meta = await sharp(p).metadata();
  assert.equal(meta.orientation, 6);
  assert.notEqual(meta.width, meta.height, 'source must be non-square for this check');
  const { info } = await sharp(p).rotate().raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height], [meta.height, meta.width]);
  const plain = await sharp(p).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([plain.info.width, plain.info.height], [meta.width, meta.height], 'without rotate() orientation is ignored');
});

t('refuses to build into a non-empty directory', async () => {
  await assert.rejects(makeHostileDataset(m.root, SOURCES), /not empty/);
});
