import fg from 'fast-glob';
import { lstatSync, readdirSync, realpathSync, statSync, existsSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { UserError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';

/** Kept equal to images/formats.ts's DECODABLE_FORMATS (a test checks it, and the README's list). */
export const IMAGE_EXTENSIONS = [
  'jpg',
  'jpeg',
  'jpe',
  'jfif',
  'png',
  'webp',
  'gif',
  'bmp',
  'dib',
  'tif',
  'tiff',
  'avif',
  'heic',
  'heif',
  'hif',
];
/** fast-glob pattern for candidate images below a folder (match it case-insensitively). */
export const IMAGE_GLOB = `**/*.{${IMAGE_EXTENSIONS.join(',')}}`;
export type SplitName = 'train' | 'val' | 'test';
export const SPLIT_ORDER: readonly SplitName[] = ['train', 'val', 'test'];

export interface ImageEntry {
  /** Path relative to the data root, '/'-separated (the cache's `path` column). */
  path: string;
  absPath: string;
  className: string;
  /** Split from the folder layout, or undefined when the split is assigned later. */
  split?: SplitName;
}

export interface ScanSkip {
  path: string;
  reason: string;
}

export interface ScanResult {
  root: string;
  /** Sorted by path (code-point order), so every run sees the same list. */
  images: ImageEntry[];
  /** Class names, sorted. */
  classes: string[];
  /** True when the root has train/ (val|validation/, test/) folders. */
  presplit: boolean;
  skipped: ScanSkip[];
}

const SPLIT_DIRS: Record<string, SplitName> = { train: 'train', val: 'val', validation: 'val', test: 'test' };

export function compareCodePoints(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * List candidate images under `root`: class = first folder under the root (or under a split folder).
 * Dotfiles and non-image extensions are ignored silently; symlinks are followed only when they
 * resolve to a file inside the root (never a directory, so loops are impossible).
 */
export function scanDataset(rootArg: string, log: Logger): ScanResult {
  const root = resolve(rootArg);
  if (!existsSync(root)) throw new UserError(`data root '${rootArg}' does not exist`);
  if (!statSync(root).isDirectory()) throw new UserError(`data root '${rootArg}' is not a directory`);
  const realRoot = realpathSync(root);
  const found = fg.sync(IMAGE_GLOB, {
    cwd: root,
    caseSensitiveMatch: false,
    dot: false,
    onlyFiles: false,
    followSymbolicLinks: false,
    suppressErrors: true,
    unique: true,
  });
  found.sort(compareCodePoints);
  const topDirs = new Set(found.map((p) => p.split('/')[0]!.toLowerCase()).filter((d, _i, _a) => d in SPLIT_DIRS));
  const presplit = topDirs.has('train');
  const skipped: ScanSkip[] = [];
  const images: ImageEntry[] = [];
  for (const rel of found) {
    const abs = join(root, rel);
    const lst = lstatSync(abs, { throwIfNoEntry: false });
    if (!lst) continue;
    if (lst.isDirectory()) continue; // a folder named like an image
    if (lst.isSymbolicLink()) {
      let target: string;
      try {
        target = realpathSync(abs);
      } catch {
        skipped.push({ path: rel, reason: 'broken symlink' });
        continue;
      }
      if (!(target + sep).startsWith(realRoot + sep)) {
        skipped.push({ path: rel, reason: 'symlink points outside the data root' });
        continue;
      }
      if (!statSync(target).isFile()) continue;
    } else if (!lst.isFile()) continue;
    const parts = rel.split('/');
    let split: SplitName | undefined;
    if (presplit) {
      split = SPLIT_DIRS[parts[0]!.toLowerCase()];
      if (!split) {
        skipped.push({ path: rel, reason: 'outside the train/val/test folders' });
        continue;
      }
      parts.shift();
    }
    if (parts.length < 2) {
      skipped.push({ path: rel, reason: 'not inside a class folder' });
      continue;
    }
    images.push({ path: rel, absPath: abs, className: parts[0]!, split });
  }
  for (const s of skipped) log.warn(`skipping ${s.path}: ${s.reason}`);
  // Empty class folders are not classes; say so, since the user probably meant them to be.
  const classDirsWithImages = new Set(images.map((i) => (i.split ? `${i.path.split('/')[0]}/` : '') + i.className));
  for (const base of presplit ? readdirSync(root).filter((d) => d.toLowerCase() in SPLIT_DIRS) : ['']) {
    const dir = join(root, base);
    for (const d of readdirSync(dir, { withFileTypes: true })) {
      if (!d.isDirectory() || d.name.startsWith('.')) continue;
      if (!presplit && d.name.toLowerCase() in SPLIT_DIRS) continue;
      const rel = base ? `${base}/${d.name}` : d.name;
      if (!classDirsWithImages.has(rel)) log.warn(`folder ${rel}/ has no images; it is not used as a class`);
    }
  }
  if (images.length === 0) {
    throw new UserError(
      `no images found under '${rootArg}' (expected class folders like ${rootArg}/cats/*.jpg${presplit ? ' inside train/ and test/' : ''})`,
    );
  }
  const trainClasses = new Set(images.filter((i) => !presplit || i.split === 'train').map((i) => i.className));
  if (presplit) {
    for (const s of ['val', 'test'] as const) {
      const extra = [...new Set(images.filter((i) => i.split === s).map((i) => i.className))].filter(
        (c) => !trainClasses.has(c),
      );
      if (extra.length)
        throw new UserError(
          `class${extra.length > 1 ? 'es' : ''} ${extra.map((c) => `'${c}'`).join(', ')} appear${extra.length > 1 ? '' : 's'} in ${s}/ but not in train/; every class needs training images`,
        );
    }
    if (trainClasses.size === 0) throw new UserError(`'${rootArg}/train' has no images`);
  }
  const classes = [...trainClasses].sort(compareCodePoints);
  if (classes.length === 1) log.warn(`only one class ('${classes[0]}') found: heads need at least two`);
  return { root, images, classes, presplit, skipped };
}
