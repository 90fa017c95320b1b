import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project root (where package.json lives), independent of the caller's cwd. */
export function projectRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/** Default location for caches, downloaded models and user datasets. CONVCACHE_DATA overrides. */
export function defaultDataDir(): string {
  return process.env.CONVCACHE_DATA ? resolve(process.env.CONVCACHE_DATA) : join(projectRoot(), 'data');
}

/**
 * Offline mirrors: folders laid out as <mirror>/models/<name>/ and <mirror>/datasets/<name>/.
 * CONVCACHE_MIRROR (path-list, ':'-separated) wins; otherwise ../shared beside the project, where it exists.
 */
export function mirrorDirs(): string[] {
  const env = process.env.CONVCACHE_MIRROR;
  if (env !== undefined) return env.split(':').filter(Boolean).map((p) => resolve(p));
  const shared = resolve(projectRoot(), '..', 'shared');
  return existsSync(shared) ? [shared] : [];
}

/** Default data root: data/images/ if present, else the mirror's cats-vs-dogs set. */
export function defaultDatasetDir(): string | undefined {
  const local = join(defaultDataDir(), 'images');
  if (existsSync(local)) return local;
  for (const m of mirrorDirs()) {
    const d = join(m, 'datasets', 'cats-vs-dogs');
    if (existsSync(d)) return d;
  }
  return undefined;
}
