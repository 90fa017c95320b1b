import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mirrorDirs } from '../src/util/paths.ts';

/** The read-only shared folder beside the project (tests never copy it into the repo). */
export function sharedDir(): string {
  const m = mirrorDirs()[0];
  if (!m) throw new Error('tests need ../shared beside the project (or CONVCACHE_MIRROR)');
  return m;
}

export const SHARED_MODEL = (): string => join(sharedDir(), 'models', 'mobilenet_v1_0.75_224');
export const SHARED_DATA = (): string => join(sharedDir(), 'datasets', 'cats-vs-dogs');

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `convcache-${prefix}-`));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Copy the first n (sorted) images per class of each split into a temp dataset with train/test folders. */
export function makeSubset(root: string, perClass: { train: number; test?: number }): string {
  for (const split of ['train', 'test'] as const) {
    const n = perClass[split] ?? 0;
    if (n === 0) continue;
    for (const cls of ['cats', 'dogs']) {
      const src = join(SHARED_DATA(), split, cls);
      const dst = join(root, split, cls);
      mkdirSync(dst, { recursive: true });
      for (const f of readdirSync(src).sort().slice(0, n)) copyFileSync(join(src, f), join(dst, f));
    }
  }
  return root;
}
