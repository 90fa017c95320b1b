import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { FILE_KEYS_NAME, FileKeyCache } from '../store/file-keys.ts';
import { decodeNpy, encodeNpy, npyHeader, type NpyArray } from '../store/npy.ts';
import { Progress } from '../util/progress.ts';
import { decodeInOrder, type FtImage } from './data.ts';
import { toHalf } from '../linalg/f16.ts';
import { FrozenBase } from './frozen.ts';
import type { FinetuneOptions } from './options.ts';

/** Fine-tuning's data: each split decoded once and run through the frozen bottom, cached under OUT/cache. */

export interface SplitData {
  images: FtImage[];
  labels: Int32Array;
  /** Pooled cut features [n × pooledDim] (pretrained top), when computed. */
  pooled?: Float32Array;
  /** Boundary activations per image, float16. */
  boundary?: Uint16Array[];
  /** Decoded pixels per image (training images when augmenting). */
  pixels?: Uint8Array[];
}

export function round(x: number, d = 3): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

export function hashJson(v: unknown): string {
  return createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 16);
}

/** Identity of the image list: paths, labels and content keys (imageContentKeys). */
export function imagesKey(images: readonly FtImage[], contentKeys: ReadonlyMap<string, string>): string {
  return hashJson(images.map((i) => [i.path, i.label, contentKeys.get(i.absPath) ?? null]));
}

/**
 * Content keys (sha1 of the bytes) of the images, for the checkpoint's data fingerprint and the split
 * caches' keys: a data folder copied, restored or touched (new mtimes, same photos) still matches, and
 * an edited photo does not. Unchanged files' keys come from OUT/cache/file-keys.tsv without reading
 * them (store/file-keys.ts); the first run reads each file once (~0.7 s for 3000 photos).
 */
export async function imageContentKeys(images: readonly FtImage[], cacheDir: string): Promise<Map<string, string>> {
  const known = FileKeyCache.load(join(cacheDir, FILE_KEYS_NAME)); // save() creates the folder
  const paths = [...new Set(images.map((i) => i.absPath))].sort();
  const keys = await known.keysOf(paths, 8);
  known.save();
  return new Map(paths.map((p, i) => [p, keys[i]!]));
}

interface PrepareContext {
  base: FrozenBase;
  preprocessing: Preprocessing;
  opts: FinetuneOptions;
  cacheDir: string;
  skipped: { path: string; reason: string }[];
  key: string;
}

/**
 * Decode one split (once) and run the frozen bottom over it: pooled features and/or float16
 * boundary activations, cached on disk under OUT/cache/ as .npy (the feature store's format) keyed by model, cut, boundary,
 * preprocessing and the image list. Pixels are kept in memory only when asked (augmentation).
 */
export async function prepareSplit(
  name: string,
  images: FtImage[],
  want: { pooled: boolean; boundary: boolean; pixels: boolean },
  c: PrepareContext,
): Promise<SplitData> {
  const { base, opts } = c;
  const metaPath = join(c.cacheDir, `${name}.json`);
  const needOrt = want.pooled || want.boundary;
  const bDim = base.boundaryDim;
  const pDim = base.pooledDim;
  // The feature store's .npy format: <split>_pooled.npy (float32 n×pooledDim), <split>_boundary.npy
  // (float16 n×boundaryDim), then <split>.json with the key, written last.
  const pooledPath = join(c.cacheDir, `${name}_pooled.npy`);
  const boundaryPath = join(c.cacheDir, `${name}_boundary.npy`);
  if (needOrt && !want.pixels && existsSync(metaPath)) {
    const meta = JSON.parse(readFileSync(metaPath, 'utf8'));
    const haveB = !want.boundary || (meta.boundary && existsSync(boundaryPath));
    if (meta.key === c.key && haveB && existsSync(pooledPath)) {
      const kept = new Set<string>(meta.kept);
      const imgs = images.filter((i) => kept.has(i.path));
      const p = decodeNpy(readFileSync(pooledPath));
      const b = want.boundary ? decodeNpy(readFileSync(boundaryPath)) : undefined;
      const fits = (a: NpyArray, dtype: NpyArray['dtype'], dim: number) =>
        a.dtype === dtype && a.shape[0] === imgs.length && a.shape[1] === dim;
      if (fits(p, '<f4', pDim) && (!b || fits(b, '<f2', bDim))) {
        for (const s of meta.skipped) c.skipped.push(s);
        const all = b?.data as Uint16Array | undefined;
        const boundary = all ? imgs.map((_, i) => all.subarray(i * bDim, (i + 1) * bDim)) : undefined;
        opts.log.info(`finetune: ${name}: ${imgs.length} images from the cache`);
        return {
          images: imgs,
          labels: Int32Array.from(imgs.map((i) => i.label)),
          pooled: p.data as Float32Array,
          boundary,
        };
      }
    }
  }
  const [h, w] = c.preprocessing.size;
  const per = h * w * 3;
  const B = opts.batch;
  const batchPix = new Uint8Array(B * per);
  const keptImgs: FtImage[] = [];
  const pixels: Uint8Array[] = [];
  const pooledParts: Float32Array[] = [];
  const boundary: Uint16Array[] = [];
  let inBatch = 0;
  const progress = new Progress({ label: `prepare ${name}`, total: images.length, quiet: opts.quiet, log: opts.log });
  const flush = async (): Promise<void> => {
    if (inBatch === 0) return;
    const b = await base.boundary(batchPix, inBatch);
    if (want.boundary) for (let i = 0; i < inBatch; i++) boundary.push(toHalf(b.subarray(i * bDim, (i + 1) * bDim)));
    if (want.pooled) pooledParts.push(await base.pooled(b, inBatch));
    progress.tick(inBatch);
    inBatch = 0;
  };
  for await (const d of decodeInOrder(images, c.preprocessing, { workers: opts.workers, maxPixels: opts.maxPixels })) {
    const img = images[d.index]!;
    if ('error' in d) {
      opts.log.warn(`skipping ${img.path}: ${d.error}`);
      c.skipped.push({ path: img.path, reason: d.error });
      continue;
    }
    keptImgs.push(img);
    if (want.pixels) pixels.push(d.pixels);
    if (!needOrt) {
      progress.tick();
      continue;
    }
    batchPix.set(d.pixels, inBatch * per);
    if (++inBatch === B) await flush();
  }
  await flush();
  progress.finish();
  const pooled = new Float32Array(keptImgs.length * pDim);
  let off = 0;
  for (const p of pooledParts) {
    pooled.set(p, off);
    off += p.length;
  }
  if (needOrt) {
    // Data first, the meta (with the key) last: it marks a complete cache.
    writeFileAtomic(pooledPath, encodeNpy(pooled, [keptImgs.length, pDim]));
    if (want.boundary) {
      writeFileAtomic(boundaryPath, [
        npyHeader('<f2', [keptImgs.length, bDim]),
        ...boundary.map((a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)),
      ]);
    }
    writeFileAtomic(
      metaPath,
      JSON.stringify({
        key: c.key,
        boundary: want.boundary,
        kept: keptImgs.map((i) => i.path),
        skipped: c.skipped.filter((s) => images.some((i) => i.path === s.path)),
      }) + '\n',
    );
  }
  return {
    images: keptImgs,
    labels: Int32Array.from(keptImgs.map((i) => i.label)),
    pooled: want.pooled ? pooled : undefined,
    boundary: want.boundary ? boundary : undefined,
    pixels: want.pixels ? pixels : undefined,
  };
}
