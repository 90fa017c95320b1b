import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  augmentImage,
  augmentSeed,
  formatAugmentSpec,
  IDENTITY_PARAMS,
  isAugmenting,
  parseAugmentSpec,
  sampleAugmentParams,
} from '../src/images/augment.ts';
import { seededRandom } from '../src/linalg/random.ts';
import { decodeForModel } from '../src/images/decode.ts';
import { findBackbone } from '../src/backbone/registry.ts';
import { UserError } from '../src/util/errors.ts';
import { SHARED_DATA } from './helpers.ts';

const W = 224,
  H = 224;

async function photo(): Promise<Uint8Array> {
  const dir = join(SHARED_DATA(), 'train', 'cats');
  const f = readdirSync(dir).sort()[0]!;
  return decodeForModel(readFileSync(join(dir, f)), findBackbone('mobilenet_v1_0.75_224')!.preprocessing, {
    maxPixels: 1e8,
  });
}

function noise(w: number, h: number, seed: number): Uint8Array {
  const r = seededRandom(seed);
  return Uint8Array.from({ length: w * h * 3 }, () => Math.floor(r() * 256));
}

test('parseAugmentSpec: full spec, none, round trip and one-line errors', () => {
  const s = parseAugmentSpec('flip,rotate=15,zoom=0.1,shift=0.1,brightness=0.2,contrast=0.2');
  assert.deepEqual(s, { flip: true, rotate: 15, zoom: 0.1, shift: 0.1, brightness: 0.2, contrast: 0.2 });
  assert.equal(formatAugmentSpec(s), 'flip,rotate=15,zoom=0.1,shift=0.1,brightness=0.2,contrast=0.2');
  assert.equal(isAugmenting(parseAugmentSpec('none')), false);
  assert.equal(isAugmenting(parseAugmentSpec('')), false);
  assert.equal(parseAugmentSpec(' flip , rotate = 5 ').rotate, 5);
  for (const bad of ['spin=3', 'rotate', 'rotate=abc', 'zoom=2', 'shift=-0.1', 'flip=yes', 'flip,flip', 'rotate=']) {
    assert.throws(() => parseAugmentSpec(bad), UserError, bad);
  }
});

test('augmentImage: identity parameters give an exact copy; flip twice is the identity', async () => {
  for (const [src, w, h] of [
    [await photo(), W, H],
    [noise(7, 5, 1), 7, 5],
  ] as const) {
    const out = new Uint8Array(src.length);
    augmentImage(src, w, h, IDENTITY_PARAMS, out);
    assert.deepEqual(out, src);
    const flipped = new Uint8Array(src.length);
    augmentImage(src, w, h, { ...IDENTITY_PARAMS, flip: true }, flipped);
    assert.notDeepEqual(flipped, src);
    // first row, first pixel = first row, last pixel of the source
    assert.deepEqual([...flipped.subarray(0, 3)], [...src.subarray((w - 1) * 3, w * 3)]);
    const back = new Uint8Array(src.length);
    augmentImage(flipped, w, h, { ...IDENTITY_PARAMS, flip: true }, back);
    assert.deepEqual(back, src);
  }
});

test('augmentImage: shift moves content, nearest fill clamps, brightness/contrast map values', () => {
  const w = 8,
    h = 4;
  const src = noise(w, h, 3);
  const out = new Uint8Array(src.length);
  augmentImage(src, w, h, { ...IDENTITY_PARAMS, tx: 2 / w }, out); // content moves right by 2 px
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < 3; c++) {
        const sx = Math.max(0, x - 2);
        assert.equal(out[(y * w + x) * 3 + c], src[(y * w + sx) * 3 + c]);
      }
  const flat = new Uint8Array(w * h * 3).fill(100);
  augmentImage(flat, w, h, { ...IDENTITY_PARAMS, brightness: 1.2 }, out);
  assert.ok(out.every((v) => v === 120));
  augmentImage(flat, w, h, { ...IDENTITY_PARAMS, contrast: 1.5 }, out); // contrast around the mean: flat stays flat
  assert.ok(out.every((v) => v === 100));
  augmentImage(flat, w, h, { ...IDENTITY_PARAMS, brightness: 3 }, out);
  assert.ok(out.every((v) => v === 255));
});

test('augmentation is deterministic per (seed, epoch, index), differs across them, stays in range', async () => {
  const spec = parseAugmentSpec('flip,rotate=15,zoom=0.1,shift=0.1,brightness=0.2,contrast=0.2');
  const src = await photo();
  const run = (seed: number, epoch: number, index: number): Uint8Array => {
    const out = new Uint8Array(src.length);
    augmentImage(src, W, H, sampleAugmentParams(spec, seededRandom(augmentSeed(seed, epoch, index))), out);
    return out;
  };
  assert.deepEqual(run(42, 1, 7), run(42, 1, 7));
  assert.notDeepEqual(run(42, 1, 7), run(42, 2, 7));
  assert.notDeepEqual(run(42, 1, 7), run(42, 1, 8));
  assert.notDeepEqual(run(42, 1, 7), run(43, 1, 7));
  const p = sampleAugmentParams(spec, seededRandom(1));
  assert.ok(Math.abs(p.angle) <= (15 * Math.PI) / 180 && Math.abs(p.zx - 1) <= 0.1 && Math.abs(p.tx) <= 0.1);
  assert.ok(Math.abs(p.brightness - 1) <= 0.2 && Math.abs(p.contrast - 1) <= 0.2);
});
