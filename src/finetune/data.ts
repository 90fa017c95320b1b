import { readFile } from 'node:fs/promises';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { scanDataset, compareCodePoints } from '../dataset/scan.ts';
import { assignSplits, DEFAULT_SPLIT } from '../dataset/split.ts';
import { decodeForModel, DecodeError } from '../images/decode.ts';
import { UserError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';

export interface FtImage { path: string; absPath: string; label: number }

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
 * Train/val/test for fine-tuning. Folder splits are used as they are; without a val/ folder a
 * seeded, stratified `valFraction` of train becomes val (the recipe's default is 25 %; never tune
 * on test). Without split folders the
 * same 0.8/0.1/0.1 split as `extract` (same seed → same test images as the fast path).
 */
export function finetuneSplits(data: string, seed: number, log: Logger, valFraction = 0.1): FtSplits {
  const scan = scanDataset(data, log);
  const label = new Map(scan.classes.map((c, i) => [c, i]));
  const toFt = (img: { path: string; absPath: string; className: string }): FtImage => ({ path: img.path, absPath: img.absPath, label: label.get(img.className)! });
  let train, val, test;
  let valSource: string;
  if (scan.presplit) {
    train = scan.images.filter((i) => i.split === 'train');
    val = scan.images.filter((i) => i.split === 'val');
    test = scan.images.filter((i) => i.split === 'test');
    valSource = 'val/ folder';
    if (val.length === 0) {
      const carved = assignSplits(train, { train: 1 - valFraction, val: valFraction, test: 0 }, seed);
      train = carved.filter((i) => i.split === 'train');
      val = carved.filter((i) => i.split === 'val');
      valSource = `stratified ${Math.round(valFraction * 100)}% of train (seed ${seed})`;
    }
  } else {
    const all = assignSplits(scan.images, DEFAULT_SPLIT, seed);
    train = all.filter((i) => i.split === 'train');
    val = all.filter((i) => i.split === 'val');
    test = all.filter((i) => i.split === 'test');
    valSource = `stratified split ${DEFAULT_SPLIT.train}/${DEFAULT_SPLIT.val}/${DEFAULT_SPLIT.test} (seed ${seed})`;
  }
  const sort = (xs: typeof train): FtImage[] => [...xs].sort((a, b) => compareCodePoints(a.path, b.path)).map(toFt);
  const out = { root: scan.root, classes: scan.classes, train: sort(train), val: sort(val), test: sort(test), valSource };
  if (scan.classes.length < 2) throw new UserError('fine-tuning needs at least two classes');
  if (out.val.length === 0) throw new UserError('no validation images (the training set is too small to carve a val split)');
  return out;
}

export type Decoded = { index: number; pixels: Uint8Array } | { index: number; error: string };

/**
 * Decode images in input order with bounded look-ahead on the libuv pool, so a consumer that runs
 * ONNX Runtime between pulls overlaps the two. Unreadable/corrupt images come back as errors.
 */
export async function* decodeInOrder(items: readonly FtImage[], pre: Preprocessing, opts: { workers: number; maxPixels: number }): AsyncGenerator<Decoded> {
  const decodeOne = async (index: number): Promise<Decoded> => {
    try {
      const buf = await readFile(items[index]!.absPath);
      return { index, pixels: await decodeForModel(buf, pre, { maxPixels: opts.maxPixels }) };
    } catch (e) {
      if (e instanceof DecodeError) return { index, error: e.message };
      if (e && typeof e === 'object' && 'code' in e) return { index, error: `unreadable file (${String((e as { code: unknown }).code)})` };
      throw e;
    }
  };
  const queue: Promise<Decoded>[] = [];
  let next = 0;
  const lookahead = Math.max(opts.workers, 64);
  const refill = (): void => { while (queue.length < lookahead && next < items.length) queue.push(decodeOne(next++)); };
  refill();
  while (queue.length > 0) {
    const d = await queue.shift()!;
    refill();
    yield d;
  }
}
