import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where convcache reads and writes. Everything it writes belongs to the user: caches in the
 * working directory, models in the user's cache folder; never inside the package's own folder
 * (which is read-only or shared once installed under node_modules).
 */

/** The package's own folder (where package.json lives): src/util/ or dist/util/, two levels up. */
export function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/**
 * True when running from a development checkout of the repository rather than an installed
 * package: the package root is not below a node_modules folder (where npm, npx and global
 * installs put it) and has a .git entry (a folder, or a file in a git worktree) or the repo's
 * tsconfig.json (a checkout copied without .git; the published tarball ships neither).
 * Only then do repo-relative defaults (../shared, data/bench) apply.
 */
export function isDevCheckout(root = packageRoot()): boolean {
  if (root.split(sep).includes('node_modules')) return false;
  return existsSync(join(root, '.git')) || existsSync(join(root, 'tsconfig.json'));
}

/** Feature caches, fine-tuning runs and local datasets: --cache-root, else CONVCACHE_HOME, else ./convcache-data. */
export function cacheRoot(override?: string): string {
  if (override !== undefined) return resolve(override);
  const env = process.env.CONVCACHE_HOME;
  return resolve(env ? env : 'convcache-data');
}

/** Downloaded models and converted .onnx conv bases: $XDG_CACHE_HOME/convcache/models (default ~/.cache). */
export function modelCacheDir(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg ? resolve(xdg) : join(homedir(), '.cache'), 'convcache', 'models');
}

/** Benchmark results: the repo's committed data/bench/ in a dev checkout, else <cache root>/bench. */
export function benchResultsDir(root?: string): string {
  return isDevCheckout() ? join(packageRoot(), 'data', 'bench') : join(cacheRoot(root), 'bench');
}

/**
 * Offline mirrors: folders laid out as <mirror>/models/<name>/ and <mirror>/datasets/<name>/.
 * CONVCACHE_MIRROR (path-list, ':'-separated) wins. Otherwise, in a development checkout only,
 * ../shared beside the repository (this workplace's read-only models and photos); for an
 * installed package "beside the package" is node_modules/, which means nothing.
 */
export function mirrorDirs(): string[] {
  const env = process.env.CONVCACHE_MIRROR;
  if (env !== undefined)
    return env
      .split(':')
      .filter(Boolean)
      .map((p) => resolve(p));
  if (!isDevCheckout()) return [];
  const shared = resolve(packageRoot(), '..', 'shared');
  return existsSync(shared) ? [shared] : [];
}

/** Default data root: <cache root>/images/ if present, else the mirror's cats-vs-dogs set. */
export function defaultDatasetDir(root?: string): string | undefined {
  const local = join(cacheRoot(root), 'images');
  if (existsSync(local)) return local;
  for (const m of mirrorDirs()) {
    const d = join(m, 'datasets', 'cats-vs-dogs');
    if (existsSync(d)) return d;
  }
  return undefined;
}
