import type { BackboneConfig } from '../backbone/backbone.ts';
import type { OrtFeatureRunner } from '../backbone/ort-runner.ts';
import { augmentImage, type AugmentParams } from '../images/augment.ts';
import { decodeAhead, type DecodedImage } from '../images/decode-queue.ts';
import { resolveDecoder, type DecoderChoice } from '../images/decode.ts';
import { DecodePool } from '../images/decode-pool.ts';
import { decodeLookahead, decodeSlots, DEFAULT_DECODE_NICE } from './schedule.ts';

export interface BackboneRunOptions {
  batch: number;
  /** Decodes kept in flight (on the libuv pool) while ONNX Runtime runs a batch. */
  workers: number;
  threads: number;
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
  /** Have the decode threads also compute each file's content key (ImageResult.key); fast path only. */
  hash?: boolean;
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
 * Stream images through decode → conv base, one batch at a time, in input order. Decodes run ahead
 * on the libuv pool while ORT runs a batch on the JS thread (onnxruntime-node's run() is synchronous
 * there), with bounded look-ahead so memory stays flat however many images there are.
 */
export async function* runBackbone<T extends BackboneItem>(
  items: readonly T[],
  onnxPath: string,
  cfg: BackboneConfig,
  opts: BackboneRunOptions,
): AsyncGenerator<ImageResult<T>[]> {
  const { OrtFeatureRunner } = await import('../backbone/ort-runner.ts');
  const [h, w] = cfg.preprocessing.size;
  const per = h * w * 3;
  let runner: OrtFeatureRunner;
  try {
    runner = await OrtFeatureRunner.create(onnxPath, [h, w, 3], cfg.featureDim, { threads: opts.threads });
  } catch (e) {
    await opts.pool?.close(); // ours to close, and its threads would keep the process alive
    throw e;
  }
  let batchBuf: Uint8Array = new Uint8Array(opts.batch * per);
  type Decoded = DecodedImage<T>;
  const decoder = resolveDecoder(opts.decoder);
  // Fast path: decode threads of our own (ORT's run() blocks this thread); sharp: the libuv pool.
  const pool =
    decoder === 'fast'
      ? (opts.pool ??
        new DecodePool(opts.workers, cfg.preprocessing, opts.maxPixels, {
          nice: opts.decodeNice ?? DEFAULT_DECODE_NICE,
          slots: decodeSlots(opts.batch, opts.workers),
        }))
      : undefined;
  const images = decodeAhead(items, (item) => item.absPath, cfg.preprocessing, {
    lookahead: decodeLookahead(opts.batch, opts.workers),
    maxPixels: opts.maxPixels,
    decoder,
    pool,
    hash: opts.hash,
  });
  let exhausted = false;
  try {
    while (!exhausted) {
      // A batch holds whole images (all their views), so it may exceed opts.batch by views-1.
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
            if (ok * per >= batchBuf.length) batchBuf = growBuffer(batchBuf, (ok + 1) * per);
            const dst = batchBuf.subarray(ok++ * per, ok * per);
            if (view) augmentImage(d.pixels, w, h, view, dst);
            else dst.set(d.pixels);
          }
          d.release?.(); // copied: the decode pool may reuse its slot
        }
        decoded.push(d);
      }
      if (decoded.length === 0) break;
      const feats = ok > 0 ? await runner.run(batchBuf, ok) : new Float32Array(0);
      let row = 0;
      const results: ImageResult<T>[] = [];
      for (const d of decoded) {
        const views = d.item.views ?? [null];
        const key = d.key === undefined ? {} : { key: d.key };
        for (let v = 0; v < views.length; v++) {
          results.push(
            'pixels' in d
              ? {
                  item: d.item,
                  view: v,
                  features: feats.subarray(row * cfg.featureDim, ++row * cfg.featureDim),
                  ...key,
                }
              : { item: d.item, view: v, error: d.error, ...key },
          );
        }
      }
      yield results;
    }
  } finally {
    await images.return(undefined);
    await runner.release();
    await pool?.close();
  }
}

function growBuffer(buf: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(Math.max(size, buf.length * 2));
  out.set(buf);
  return out;
}
