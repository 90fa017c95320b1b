import type { Preprocessing } from '../backbone/preprocess.ts';
import { scanDataset, compareCodePoints } from '../dataset/scan.ts';
import { assignSplits, DEFAULT_SPLIT, splitImages } from '../dataset/split.ts';
import { decodeAhead } from '../images/decode-queue.ts';
import { UserError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';

export interface FtImage {
  path: string;
  absPath: string;
  label: number;
}

export interface FtSplits {
  root: string;
  classes: string[];
  train: FtImage[];
  val: FtImage[];
  test: FtImage[];
  /** Where val came from: the data's val/ folder, or a seeded stratified slice of train. */
  valSource: string;
}

/**
 * Train/val/test for fine-tuning, from the pipeline's scan and split (splitImages): folder splits
 * as they are, otherwise the default split `extract` uses. Without a val/ folder a seeded,
 * stratified `valFraction` of train becomes val (the recipe's default is 25 %; never tune on test).
 */
export function finetuneSplits(data: string, seed: number, log: Logger, valFraction = 0.1): FtSplits {
  const scan = scanDataset(data, log);
  const label = new Map(scan.classes.map((c, i) => [c, i]));
  const toFt = (img: { path: string; absPath: string; className: string }): FtImage => ({
    path: img.path,
    absPath: img.absPath,
    label: label.get(img.className)!,
  });
  // The same images per split as `extract` (same seed → same test images as the fast path).
  const all = splitImages(scan, DEFAULT_SPLIT, seed);
  let train = all.filter((i) => i.split === 'train');
  let val = all.filter((i) => i.split === 'val');
  const test = all.filter((i) => i.split === 'test');
  let valSource = scan.presplit
    ? 'val/ folder'
    : `stratified split ${DEFAULT_SPLIT.train}/${DEFAULT_SPLIT.val}/${DEFAULT_SPLIT.test} (seed ${seed})`;
  if (scan.presplit && val.length === 0) {
    const carved = assignSplits(train, { train: 1 - valFraction, val: valFraction, test: 0 }, seed);
    train = carved.filter((i) => i.split === 'train');
    val = carved.filter((i) => i.split === 'val');
    valSource = `stratified ${Math.round(valFraction * 100)}% of train (seed ${seed})`;
  }
  const sort = (xs: typeof train): FtImage[] => [...xs].sort((a, b) => compareCodePoints(a.path, b.path)).map(toFt);
  const out = {
    root: scan.root,
    classes: scan.classes,
    train: sort(train),
    val: sort(val),
    test: sort(test),
    valSource,
  };
  if (scan.classes.length < 2) throw new UserError('fine-tuning needs at least two classes');
  if (out.val.length === 0)
    throw new UserError('no validation images (the training set is too small to carve a val split)');
  return out;
}

export type Decoded = { index: number; pixels: Uint8Array } | { index: number; error: string };

/**
 * Decode images in input order with bounded look-ahead (the pipeline's decode queue), so a consumer
 * that runs ONNX Runtime between pulls overlaps the two. Unreadable/corrupt images come back as errors.
 */
export async function* decodeInOrder(
  items: readonly FtImage[],
  pre: Preprocessing,
  opts: { workers: number; maxPixels: number },
): AsyncGenerator<Decoded> {
  const indices = Array.from(items, (_, i) => i);
  for await (const d of decodeAhead(indices, (i) => items[i]!.absPath, pre, {
    lookahead: Math.max(opts.workers, 64),
    maxPixels: opts.maxPixels,
  })) {
    yield 'pixels' in d ? { index: d.item, pixels: d.pixels } : { index: d.item, error: d.error };
  }
}
