/** ImageNet-1k class labels and helpers for reading classifier outputs: the tests check the converted MobileNet with them. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '../src/util/errors.ts';

export const IMAGENET_NUM_CLASSES = 1000;

/**
 * Standard ILSVRC-2012 class order (the one Keras / TF.js models use, no background class):
 * 151 'Chihuahua' … 268 'Mexican hairless' are the 118 dog breeds;
 * 281 'tabby' … 285 'Egyptian cat' are the domestic cats (286 'cougar' onwards are wild cats).
 */
export const IMAGENET_DOG_FIRST = 151;
export const IMAGENET_DOG_LAST = 268;
export const IMAGENET_CAT_FIRST = 281;
export const IMAGENET_CAT_LAST = 285;

export function isDogClass(index: number): boolean {
  return index >= IMAGENET_DOG_FIRST && index <= IMAGENET_DOG_LAST;
}
export function isDomesticCatClass(index: number): boolean {
  return index >= IMAGENET_CAT_FIRST && index <= IMAGENET_CAT_LAST;
}
export function isCatOrDogClass(index: number): boolean {
  return isDogClass(index) || isDomesticCatClass(index);
}
/** 'cat' | 'dog' for the ImageNet classes above, otherwise null. */
export function catOrDog(index: number): 'cat' | 'dog' | null {
  return isDomesticCatClass(index) ? 'cat' : isDogClass(index) ? 'dog' : null;
}

/** Labels from `modelDir`/metadata.json ({"labels": [...1000 names]}). */
export async function loadImagenetLabels(modelDir: string): Promise<string[]> {
  const path = join(modelDir, 'metadata.json');
  let meta: unknown;
  try {
    meta = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError(`no metadata.json in ${modelDir}`);
    throw new UserError(`${path}: ${(e as Error).message}`);
  }
  const labels = (meta as { labels?: unknown })?.labels;
  if (!Array.isArray(labels) || !labels.every((l) => typeof l === 'string')) {
    throw new UserError(`${path}: expected {"labels": [string, ...]}`);
  }
  return labels as string[];
}

export interface TopKEntry {
  index: number;
  /** Label if `labels` was given, else the index as a string. */
  label: string;
  prob: number;
}

/** The k largest entries of `probs`, largest first (ties: lower index first). */
export function topK(probs: ArrayLike<number>, k: number, labels?: readonly string[]): TopKEntry[] {
  const kk = Math.max(0, Math.min(Math.floor(k), probs.length));
  // Partial selection keeps this O(n·k) with tiny k, no full sort of 1000 entries.
  const best: number[] = [];
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i]!;
    if (Number.isNaN(p)) continue;
    if (best.length === kk && (kk === 0 || p <= probs[best[kk - 1]!]!)) continue;
    let j = best.length === kk ? kk - 1 : best.length;
    while (j > 0 && probs[best[j - 1]!]! < p) {
      best[j] = best[j - 1]!;
      j--;
    }
    best[j] = i;
  }
  return best.map((index) => ({ index, label: labels?.[index] ?? String(index), prob: probs[index]! }));
}
