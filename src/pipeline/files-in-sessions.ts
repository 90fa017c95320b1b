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
  const inFlight: { batch: readonly T[]; result: Promise<FilesResult> }[] = [];
  const depth = 2 * runner.parallel;
  let next = 0;
  const send = (): void => {
    while (inFlight.length < depth && next < items.length) {
      const batch = items.slice(next, (next += opts.batch));
      const result = runner.runFiles(
        batch.map((i) => i.absPath),
        opts.hash === true,
      );
      result.catch(() => {}); // awaited in order below; a failure must not go unhandled meanwhile
      inFlight.push({ batch, result });
    }
  };
  try {
    send();
    while (inFlight.length > 0) {
      const b = inFlight.shift()!;
      const r = await b.result;
      send();
      yield await toResults(b.batch, r, runner, cfg, opts.maxPixels);
    }
  } finally {
    await Promise.allSettled(inFlight.map((b) => b.result));
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
  const bySharp: { at: number; pixels: Uint8Array }[] = [];
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
      try {
        const pixels = await decodeWithSharp(
          Buffer.from(o.bytes.buffer, o.bytes.byteOffset, o.bytes.length),
          cfg.preprocessing,
          {
            maxPixels,
          },
        );
        bySharp.push({ at: results.length, pixels });
        results.push({ item, view: 0, features: new Float32Array(0), ...key }); // rows filled in below
      } catch (e) {
        if (!(e instanceof DecodeError)) throw e;
        results.push({ item, view: 0, error: e.message, ...key });
      }
    }
  }
  if (bySharp.length > 0) {
    const buf = runner.batchBuffer(bySharp.length) as Uint8Array;
    bySharp.forEach((s, k) => buf.set(s.pixels, k * per));
    const feats = await runner.run(buf, bySharp.length);
    bySharp.forEach((s, k) => {
      const res = results[s.at]!;
      if ('features' in res) res.features = feats.subarray(k * dim, (k + 1) * dim);
    });
  }
  return results;
}
