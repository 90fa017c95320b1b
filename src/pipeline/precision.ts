import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { BackboneConfig, PreparedBackbone } from '../backbone/backbone.ts';
import {
  DEFAULT_QUANTIZE,
  int8PathFor,
  prepareInt8,
  QUANTIZE_VERSION,
  type Precision,
  type QuantizeSettings,
} from '../backbone/quantize.ts';
import type { ImageEntry } from '../dataset/scan.ts';
import { decoderId, resolveDecoder, type DecoderChoice } from '../images/jpeg-fast.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { UserError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import { cpus } from 'node:os';

/**
 * What the conv base runs as for one extraction: the decode path and the precision, recorded in
 * the backbone config (so in the manifest, the cache key and every head's metadata), and the graph
 * file to run. For int8, the calibration images are chosen once per cache folder and pinned in
 * `int8-calibration.json`, so adding images later never re-quantizes a cache half-extracted.
 */
export const CALIBRATION_FILE = 'int8-calibration.json';
export const DEFAULT_CALIBRATION_IMAGES = 200;

export interface RunGraphOptions {
  precision: Precision;
  decoder?: DecoderChoice;
  images: readonly ImageEntry[];
  seed: number;
  calibrationImages?: number;
  threads: number;
  maxPixels: number;
  log: Logger;
}

/** Config fields that depend on the run, not the model: decoder and precision. */
export function runConfig(
  backbone: PreparedBackbone,
  opts: { precision: Precision; decoder?: DecoderChoice },
): BackboneConfig {
  return {
    ...backbone.config,
    decoder: decoderId(resolveDecoder(opts.decoder)),
    precision: opts.precision,
    ...(opts.precision === 'int8' ? { quantizer: QUANTIZE_VERSION } : {}),
  };
}

/**
 * AVX2 without VNNI adds pairs of u8·s8 products in int16 (MLAS), which full 8-bit weights can
 * overflow: use 7-bit weights there. VNNI (and non-x86 CPUs) accumulate in int32.
 */
export function quantizeSettingsForCpu(): QuantizeSettings {
  if (process.arch !== 'x64') return { weightBits: 8 };
  try {
    const flags = readFileSync('/proc/cpuinfo', 'utf8');
    return { weightBits: /\b(avx512_vnni|avx_vnni)\b/.test(flags) ? 8 : 7 };
  } catch {
    return DEFAULT_QUANTIZE;
  }
}

/** A seeded, stable sample of training images: the n whose hash(seed, path) is smallest. */
export function calibrationSample(images: readonly ImageEntry[], seed: number, n: number): ImageEntry[] {
  const train = images.filter((i) => i.split === 'train');
  const rank = (p: string): string => createHash('sha1').update(`${seed}\0${p}`).digest('hex');
  return train
    .map((i) => ({ i, r: rank(i.path) }))
    .sort((a, b) => (a.r < b.r ? -1 : a.r > b.r ? 1 : 0))
    .slice(0, n)
    .map((x) => x.i);
}

interface Pinned {
  paths: string[];
  keys: string[];
  settings: QuantizeSettings;
  /** The int8 graph's file name (written once the graph exists). */
  graph?: string;
}

/** The graph file to run for this cache folder: the fp32 conversion, or its calibrated int8 version. */
export async function graphForCache(
  backbone: PreparedBackbone,
  cacheDir: string,
  opts: RunGraphOptions,
): Promise<string> {
  if (opts.precision === 'fp32') return backbone.onnxPath;
  const pinFile = join(cacheDir, CALIBRATION_FILE);
  let pin: Pinned;
  if (existsSync(pinFile)) {
    pin = JSON.parse(readFileSync(pinFile, 'utf8'));
    // A cache quantized by another version of the quantizer: its records came from another graph, and
    // new ones must not be mixed in (default cache folders are keyed by the version; --out ones are not).
    const now = basename(int8PathFor(backbone.onnxPath, pin.keys, pin.settings));
    if (pin.graph !== undefined && pin.graph !== now)
      throw new UserError(
        `${cacheDir} holds int8 features from another version of the int8 quantizer (${pin.graph}); extract into a new --out folder or delete this one`,
      );
  } else {
    const sample = calibrationSample(opts.images, opts.seed, opts.calibrationImages ?? DEFAULT_CALIBRATION_IMAGES);
    if (sample.length === 0) throw new UserError('--precision int8 needs training images to calibrate on');
    const keys = await Promise.all(
      sample.map(async (s) =>
        createHash('sha1')
          .update(await readFile(s.absPath))
          .digest('hex'),
      ),
    );
    pin = { paths: sample.map((s) => s.path), keys, settings: quantizeSettingsForCpu() };
  }
  // Loaded here, not at the top: a no-op extract (fp32, or int8 already calibrated) never loads sharp.
  const { decodeForModel, DecodeError } = await import('../images/decode.ts');
  const byPath = new Map(opts.images.map((i) => [i.path, i.absPath]));
  const decoder = resolveDecoder(opts.decoder);
  const pre = backbone.config.preprocessing;
  const path = await prepareInt8(backbone, {
    calibration: {
      keys: pin.keys,
      pixels: async function* () {
        for (const p of pin.paths) {
          const abs = byPath.get(p);
          if (!abs) continue;
          try {
            yield await decodeForModel(await readFile(abs), pre, { maxPixels: opts.maxPixels, decoder });
          } catch (e) {
            if (!(e instanceof DecodeError)) throw e; // unusable images are skipped (and reported by extract)
          }
        }
      },
    },
    threads: opts.threads || cpus().length,
    settings: pin.settings,
    log: opts.log,
  });
  if (!existsSync(pinFile)) writeFileAtomic(pinFile, JSON.stringify({ ...pin, graph: basename(path) }, null, 2) + '\n');
  return path;
}

/** For predict: the int8 graph a cache was extracted with (recorded in its calibration file). */
export function pinnedInt8Graph(cacheDir: string, fp32Path: string): string {
  const pinFile = join(cacheDir, CALIBRATION_FILE);
  if (!existsSync(pinFile))
    throw new UserError(
      `${cacheDir} was extracted in int8 but has no ${CALIBRATION_FILE}; re-run extract with --precision int8`,
    );
  const graph = join(dirname(fp32Path), JSON.parse(readFileSync(pinFile, 'utf8')).graph as string);
  if (!existsSync(graph))
    throw new UserError(
      `the int8 graph ${graph} is gone; re-run extract with --precision int8 on ${cacheDir} to rebuild it`,
    );
  return graph;
}
