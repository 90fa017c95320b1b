import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { BackboneConfig } from '../backbone/backbone.ts';
import type { SplitName } from '../dataset/scan.ts';
import { UserError } from '../util/errors.ts';

/** Bump when the cache layout changes incompatibly (the README documents the contract). */
export const CACHE_FORMAT_VERSION = 2;
export const MANIFEST_FILE = 'manifest.json';
export const ARROW_FILE = 'features.arrow';

export interface SplitCounts {
  total: number;
  perClass: Record<string, number>;
}

export interface Manifest {
  format: 'convcache-features';
  formatVersion: number;
  toolVersion: string;
  dataRoot: string;
  /** 'folders' when the root had train/val/test folders, else the seeded stratified split used. */
  split: { mode: 'folders' } | { mode: 'stratified'; fractions: [number, number, number]; seed: number };
  classes: string[];
  /** Images per split (augmented views not included). */
  counts: Partial<Record<SplitName, SplitCounts>>;
  /** Augmented training views stored beside the originals (extract --augment SPEC --views K), or null. */
  augment: { spec: string; views: number; seed: number; rows: number } | null;
  /** With extract --tta: every image's feature is the mean over these fixed views (src/images/tta.ts). */
  tta?: { spec: string; views: string[] };
  backbone: BackboneConfig;
  rowOrder: string;
  files: {
    arrow: string;
    npy: Partial<Record<SplitName, { features: string; labels: string; rows: number }>>;
    /** Augmented views of the training images: train_aug_{features,labels,views}.npy. */
    augmentedNpy?: { features: string; labels: string; views: string; rows: number };
    arrowSha256: string;
  };
  skipped: { path: string; reason: string }[];
  timings: {
    scanSeconds: number;
    hashSeconds: number;
    extractSeconds: number;
    writeSeconds: number;
    totalSeconds: number;
    computed: number;
    reused: number;
    extractImagesPerSecond: number | null;
  };
}

export function readManifest(cacheDir: string): Manifest {
  const path = join(cacheDir, MANIFEST_FILE);
  if (!existsSync(path))
    throw new UserError(`'${cacheDir}' is not a feature cache (no ${MANIFEST_FILE}); run 'convcache extract' first`);
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new UserError(`${path} is not valid JSON`);
  }
  if (m.format !== 'convcache-features') throw new UserError(`${path} is not a convcache feature manifest`);
  if (m.formatVersion !== CACHE_FORMAT_VERSION)
    throw new UserError(
      `${path} has cache format ${m.formatVersion}; this convcache reads format ${CACHE_FORMAT_VERSION} (re-run extract)`,
    );
  return m;
}
