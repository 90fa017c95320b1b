import type { BackboneConfig } from '../backbone/backbone.ts';
import type { FilesResult } from '../backbone/ort-pool.ts';
import type { FeatureRunner } from '../backbone/ort-runner.ts';
import { DecodeError, decodeWithSharp } from '../images/decode.ts';
import type { BackboneItem, ImageResult } from './run-backbone.ts';

/** A runner whose session threads decode files themselves (ort-pool.ts runFiles). */
export type DecodingRunner = FeatureRunner & Required<Pick<FeatureRunner, 'runFiles'>>;

export function isDecodingRunner(r: FeatureRunner): r is DecodingRunner {
  return r.decodes === true && typeof r.runFiles === 'function';
}

export interface FilesInSessionsOptions {
  batch: number;
  maxPixels: number;
  /** Have the session threads compute each file's content key (ImageResult.key). */
  hash?: boolean;
}

/**
 * runBackbone when the sessions decode their own batches (schedule.ts decodesInSessions): batches of
 * file paths go to the session threads, two per thread queued so none waits for the next one, and
 * come back as features in input order. The JS thread only sends paths and receives rows; the images
 * the fast path declines (not JPEG, CMYK, libjpeg warnings) come back as bytes, are decoded here by
 * sharp and run as a pixel batch of their own.
 */
export async function* filesInSessions<T extends BackboneItem>(
  items: readonly T[],
  runner: DecodingRunner,
  cfg: BackboneConfig,
  opts: FilesInSessionsOptions,
): AsyncGenerator<ImageResult<T>[]> {
  // Each batch's results, completed as soon as its session thread answers (sharp's images decoded
  // and run then, not when the batch's turn to be yielded comes), so sharp overlaps the sessions:
  // 300 PNGs took 5.4-6.1 s when they were decoded in turn, 4.0 s so (decode threads: 3.7-4.1 s).
  const inFlight: Promise<ImageResult<T>[]>[] = [];
  const depth = 2 * runner.parallel;
  let next = 0;
  const send = (): void => {
    while (inFlight.length < depth && next < items.length) {
      const batch = items.slice(next, (next += opts.batch));
      const results = runner
        .runFiles(
          batch.map((i) => i.absPath),
          opts.hash === true,
        )
        .then((r) => toResults(batch, r, runner, cfg, opts.maxPixels));
      results.catch(() => {}); // awaited in order below; a failure must not go unhandled meanwhile
      inFlight.push(results);
    }
  };
  try {
    send();
    while (inFlight.length > 0) {
      const results = await inFlight.shift()!;
      send();
      yield results;
    }
  } finally {
    await Promise.allSettled(inFlight);
  }
}

/** One batch's results in input order; declined images decoded by sharp and run here. */
async function toResults<T extends BackboneItem>(
  batch: readonly T[],
  r: FilesResult,
  runner: FeatureRunner,
  cfg: BackboneConfig,
  maxPixels: number,
): Promise<ImageResult<T>[]> {
  const dim = cfg.featureDim;
  const [h, w] = cfg.preprocessing.size;
  const per = h * w * 3;
  const results: ImageResult<T>[] = [];
  // Each settles to its pixels or its error (a handler on every one at once: none rejects unheard).
  const bySharp: { at: number; decoded: Promise<Uint8Array | { error: unknown }> }[] = [];
  let row = 0;
  for (let i = 0; i < batch.length; i++) {
    const o = r.outcomes[i]!;
    const item = batch[i]!;
    const key = o.key === undefined ? {} : { key: o.key };
    if ('ok' in o) {
      results.push({ item, view: 0, features: r.features.subarray(row * dim, ++row * dim), ...key });
    } else if ('error' in o) {
      results.push({ item, view: 0, error: o.error, ...key });
    } else {
      // Decoded side by side on the libuv pool; the row is filled in below.
      const bytes = Buffer.from(o.bytes.buffer, o.bytes.byteOffset, o.bytes.length);
      const decoded = decodeWithSharp(bytes, cfg.preprocessing, { maxPixels }).catch((error: unknown) => ({ error }));
      bySharp.push({ at: results.length, decoded });
      results.push({ item, view: 0, features: new Float32Array(0), ...key });
    }
  }
  const decoded: { at: number; pixels: Uint8Array }[] = [];
  for (const s of bySharp) {
    const px = await s.decoded;
    if (px instanceof Uint8Array) {
      decoded.push({ at: s.at, pixels: px });
      continue;
    }
    if (!(px.error instanceof DecodeError)) throw px.error;
    const res = results[s.at]!;
    results[s.at] = {
      item: res.item,
      view: 0,
      error: px.error.message,
      ...(res.key === undefined ? {} : { key: res.key }),
    };
  }
  if (decoded.length > 0) {
    const buf = runner.batchBuffer(decoded.length) as Uint8Array;
    decoded.forEach((s, k) => buf.set(s.pixels, k * per));
    const feats = await runner.run(buf, decoded.length);
    decoded.forEach((s, k) => {
      const res = results[s.at]!;
      if ('features' in res) res.features = feats.subarray(k * dim, (k + 1) * dim);
    });
  }
  return results;
}
