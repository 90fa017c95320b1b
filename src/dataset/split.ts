import type { ImageEntry, ScanResult, SplitName } from './scan.ts';
import { UserError } from '../util/errors.ts';
import { compareCodePoints } from './scan.ts';

import { seededRandom } from '../linalg/random.ts';

export function shuffleInPlace<T>(items: T[], rand: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

export interface SplitFractions {
  train: number;
  val: number;
  test: number;
}

/** The default train/val/test fractions for data without split folders (extract, finetune, benchmarks). */
export const DEFAULT_SPLIT: Readonly<SplitFractions> = Object.freeze({ train: 0.8, val: 0.1, test: 0.1 });
/** DEFAULT_SPLIT as the --split option spells it. */
export const DEFAULT_SPLIT_SPEC = `${DEFAULT_SPLIT.train},${DEFAULT_SPLIT.val},${DEFAULT_SPLIT.test}`;

export function parseSplitFractions(spec: string): SplitFractions {
  const parts = spec.split(',').map((s) => Number(s.trim()));
  if (parts.length !== 3 || parts.some((p) => !Number.isFinite(p) || p < 0)) {
    throw new UserError(`--split must be three non-negative numbers like 0.8,0.1,0.1, got '${spec}'`);
  }
  const sum = parts[0]! + parts[1]! + parts[2]!;
  if (Math.abs(sum - 1) > 1e-6) throw new UserError(`--split fractions must sum to 1, got ${sum}`);
  if (parts[0] === 0) throw new UserError('--split needs a non-zero train fraction');
  return { train: parts[0]!, val: parts[1]!, test: parts[2]! };
}

/** Every image with its split: the data's own split folders when it has them, else the seeded stratified split. */
export function splitImages(scan: ScanResult, fractions: SplitFractions, seed: number): ImageEntry[] {
  return scan.presplit ? scan.images : assignSplits(scan.images, fractions, seed);
}

/**
 * Stratified, seeded split: within each class (sorted paths, then a seeded shuffle) the first
 * round(n*train) go to train, the next round(n*val) to val, the rest to test. Depends only on
 * the path list and seed, so adding a class never reshuffles another class.
 */
export function assignSplits(images: readonly ImageEntry[], fractions: SplitFractions, seed: number): ImageEntry[] {
  const byClass = new Map<string, ImageEntry[]>();
  for (const img of images) {
    // push, not a spread copy per image: that was O(n²) and took minutes at 100k images.
    const list = byClass.get(img.className);
    if (list) list.push(img);
    else byClass.set(img.className, [img]);
  }
  const out: ImageEntry[] = [];
  for (const cls of [...byClass.keys()].sort(compareCodePoints)) {
    const items = [...byClass.get(cls)!].sort((a, b) => compareCodePoints(a.path, b.path));
    // Seed per class from the class name so classes are independent of each other.
    let h = seed >>> 0;
    for (let i = 0; i < cls.length; i++) h = Math.imul(h ^ cls.charCodeAt(i), 0x9e3779b1) >>> 0;
    shuffleInPlace(items, seededRandom(h));
    const n = items.length;
    const nTrain = Math.max(1, Math.round(n * fractions.train));
    const nVal = Math.min(n - nTrain, Math.round(n * fractions.val));
    items.forEach((img, i) => {
      const split: SplitName = i < nTrain ? 'train' : i < nTrain + nVal ? 'val' : 'test';
      out.push({ ...img, split });
    });
  }
  return out.sort((a, b) => compareCodePoints(a.path, b.path));
}
