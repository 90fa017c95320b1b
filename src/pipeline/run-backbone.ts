import type { BackboneConfig } from '../backbone/backbone.ts';
import type { FeatureRunner } from '../backbone/ort-runner.ts';
import { augmentImage, type AugmentParams } from '../images/augment.ts';
import { decodeAhead, type DecodedImage } from '../images/decode-queue.ts';
import { resolveDecoder, type DecoderChoice } from '../images/decode.ts';
import { DecodePool } from '../images/decode-pool.ts';
import { filesInSessions, isDecodingRunner } from './files-in-sessions.ts';
import {
  decodeLookahead,
  decodeSlots,
  DEFAULT_DECODE_NICE,
  decodesInSessions,
  sessionsFor,
  threadsPerSession,
} from './schedule.ts';

export interface BackboneRunOptions {
  batch: number;
  /** Decodes kept in flight (on the libuv pool) while ONNX Runtime runs a batch. */
  workers: number;
  /** ONNX Runtime intra-op threads, over all sessions. */
  threads: number;
  /**
   * Sessions running batches side by side, each on a thread of its own with threads/sessions intra-op
   * threads (ort-pool.ts); default schedule.ts defaultSessions. 1: one session on the JS thread.
   */
  sessions?: number;
  maxPixels: number;
  /** Default: the fast JPEG path where available (decode.ts resolveDecoder). */
  decoder?: DecoderChoice;
  /** Priority drop of the decode threads (schedule.ts DEFAULT_DECODE_NICE). */
  decodeNice?: number;
  /**
   * Decode threads already started (extract starts them before hashing, so their start-up, ~0.5-1.4 s
   * of loading code in each thread, overlaps it instead of idling ONNX Runtime). Closed here at the end.
   */
  pool?: DecodePool;
  /**
   * The conv base's runner, already being created (extract starts it before hashing, so the sessions
   * load the graph on their threads meanwhile). Released here at the end.
   */
  runner?: Promise<FeatureRunner>;
  /** Have the threads that read the files also compute each one's content key (ImageResult.key); fast path only. */
  hash?: boolean;
  /** Sessions decode their own batches where they can (schedule.ts decodesInSessions; default DECODE_IN_SESSIONS). */
  decodeInSessions?: boolean;
}

/** One finished image view: its features, or why the image could not be used; `key` as DecodedImage's. */
export type ImageResult<T> = (
  { item: T; view: number; features: Float32Array } | { item: T; view: number; error: string }
) & {
  key?: string;
};

/**
 * An image to run; `views` lists augmentations to apply to the decoded image (null = the image as
 * is). The image is decoded once and every view goes through the conv base. Default: [null].
 */
export interface BackboneItem {
  absPath: string;
  views?: readonly (AugmentParams | null)[];
}

/**
 * Stream images through decode → conv base, one batch at a time, in input order. Where it applies
 * (schedule.ts decodesInSessions) the sessions decode their own batches (files-in-sessions.ts); else
 * decodes run ahead on their threads while ORT's sessions run batches (on threads of their own; a single session on the
 * JS thread, where onnxruntime-node's run() blocks), with bounded look-ahead so memory stays flat
 * however many images there are. With several sessions, that many batches run at once and a finished
 * one is yielded while the others still run.
 */
export async function* runBackbone<T extends BackboneItem>(
  items: readonly T[],
  onnxPath: string,
  cfg: BackboneConfig,
  opts: BackboneRunOptions,
): AsyncGenerator<ImageResult<T>[]> {
  const [h, w] = cfg.preprocessing.size;
  const per = h * w * 3;
  const sessions = sessionsFor(opts.sessions, opts.threads, items.length, opts.batch);
  const decoder = resolveDecoder(opts.decoder);
  const inSessions = decodesInSessions(opts.decodeInSessions, decoder, sessions, plainImages(items));
  let runner: FeatureRunner;
  try {
    runner = await (opts.runner ??
      startRunner(onnxPath, cfg, opts.threads, sessions, inSessions ? opts.maxPixels : undefined));
  } catch (e) {
    await opts.pool?.close(); // ours to close, and its threads would keep the process alive
    throw e;
  }
  if (inSessions && isDecodingRunner(runner)) {
    try {
      yield* filesInSessions(items, runner, cfg, opts);
    } finally {
      await runner.release();
      await opts.pool?.close();
    }
    return;
  }
  const parallel = runner.parallel;
  // One batch buffer per batch in flight: batch k is built in buffers[k % parallel], which the run of
  // batch k - parallel has finished with (it is awaited before batch k is built).
  const buffers = Array.from({ length: parallel }, () => runner.batchBuffer(opts.batch) as Uint8Array);
  type Decoded = DecodedImage<T>;
  // Fast path: decode threads of our own (a single session's run() blocks this thread); sharp: the libuv pool.
  const pool =
    decoder === 'fast'
      ? (opts.pool ??
        new DecodePool(opts.workers, cfg.preprocessing, opts.maxPixels, {
          nice: opts.decodeNice ?? DEFAULT_DECODE_NICE,
          slots: decodeSlots(opts.batch, opts.workers, parallel),
        }))
      : undefined;
  const images = decodeAhead(items, (item) => item.absPath, cfg.preprocessing, {
    lookahead: decodeLookahead(opts.batch, opts.workers, parallel),
    maxPixels: opts.maxPixels,
    decoder,
    pool,
    hash: opts.hash,
  });
  const inFlight: { decoded: Decoded[]; features: Promise<Float32Array> }[] = [];
  const finish = async (): Promise<ImageResult<T>[]> => {
    const b = inFlight.shift()!;
    return toResults(b.decoded, await b.features, cfg.featureDim);
  };
  let exhausted = false;
  try {
    for (let k = 0; !exhausted; k++) {
      // A batch holds whole images (all their views), so it may exceed opts.batch by views-1.
      let batchBuf = buffers[k % buffers.length]!;
      const decoded: Decoded[] = [];
      let ok = 0;
      while (ok < opts.batch) {
        const r = await images.next();
        if (r.done) {
          exhausted = true;
          break;
        }
        const d = r.value;
        if ('pixels' in d) {
          for (const view of d.item.views ?? [null]) {
            if (ok * per >= batchBuf.length) {
              batchBuf = growBuffer(runner, batchBuf, ok + 1, per);
              buffers[k % buffers.length] = batchBuf;
            }
            const dst = batchBuf.subarray(ok++ * per, ok * per);
            if (view) augmentImage(d.pixels, w, h, view, dst);
            else dst.set(d.pixels);
          }
          d.release?.(); // copied: the decode pool may reuse its slot
        }
        decoded.push(d);
      }
      if (decoded.length === 0) break;
      const features = ok > 0 ? runner.run(batchBuf, ok) : Promise.resolve(new Float32Array(0));
      features.catch(() => {}); // awaited in order below; a failure must not go unhandled meanwhile
      inFlight.push({ decoded, features });
      if (inFlight.length >= parallel) yield await finish();
    }
    while (inFlight.length > 0) yield await finish();
  } finally {
    await Promise.allSettled(inFlight.map((b) => b.features));
    await images.return(undefined);
    await runner.release();
    await pool?.close();
  }
}

/**
 * The conv base's runner: `sessions` sessions sharing `threads` intra-op threads (schedule.ts); with
 * `decodeMaxPixels`, session threads that also decode files (schedule.ts decodesInSessions).
 */
export async function startRunner(
  onnxPath: string,
  cfg: BackboneConfig,
  threads: number,
  sessions: number,
  decodeMaxPixels?: number,
): Promise<FeatureRunner> {
  const { createFeatureRunner } = await import('../backbone/ort-runner.ts');
  const [h, w] = cfg.preprocessing.size;
  return createFeatureRunner(onnxPath, [h, w, 3], cfg.featureDim, {
    threads: threadsPerSession(threads, sessions),
    sessions,
    ...(decodeMaxPixels !== undefined ? { decode: { pre: cfg.preprocessing, maxPixels: decodeMaxPixels } } : {}),
  });
}

/** Every item is run as it is (no augmented or TTA views to make from its pixels). */
export function plainImages(items: readonly BackboneItem[]): boolean {
  return items.every((i) => i.views === undefined || (i.views.length === 1 && i.views[0] === null));
}

function toResults<T>(decoded: readonly DecodedImage<T>[], feats: Float32Array, dim: number): ImageResult<T>[] {
  let row = 0;
  const results: ImageResult<T>[] = [];
  for (const d of decoded) {
    const views = (d.item as BackboneItem).views ?? [null];
    const key = d.key === undefined ? {} : { key: d.key };
    for (let v = 0; v < views.length; v++) {
      results.push(
        'pixels' in d
          ? { item: d.item, view: v, features: feats.subarray(row * dim, ++row * dim), ...key }
          : { item: d.item, view: v, error: d.error, ...key },
      );
    }
  }
  return results;
}

/** A bigger batch buffer (from the runner: shared memory for a session pool) holding `buf`'s pixels. */
function growBuffer(runner: FeatureRunner, buf: Uint8Array, images: number, per: number): Uint8Array {
  const out = runner.batchBuffer(Math.max(images, (2 * buf.length) / per)) as Uint8Array;
  out.set(buf);
  return out;
}
