import { readFile } from 'node:fs/promises';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { decodeForModel, DecodeError, type DecoderChoice } from './decode.ts';
import { KeyedDecodeError, type DecodePool } from './decode-pool.ts';

/**
 * A decoded image, or why it could not be used (a bad or unreadable file is a result, not a throw).
 * `release`, when present, hands the pixels' memory back to the decode pool: call it once they are
 * copied (until then they stay valid; afterwards they may be overwritten).
 */
export type DecodedImage<T> = ({ item: T; pixels: Uint8Array; release?: () => void } | { item: T; error: string }) & {
  /** The file's content key (sha1 of its bytes), with DecodeAheadOptions.hash when the decode thread read it. */
  key?: string;
};

export interface DecodeAheadOptions {
  /** Decodes kept in flight on the libuv pool. */
  lookahead: number;
  maxPixels: number;
  /** Decode path (default: decode.ts resolveDecoder). */
  decoder?: DecoderChoice;
  /** Worker threads running the fast JPEG path (they read the files themselves). */
  pool?: DecodePool;
  /** Ask the pool's threads for each file's content key too (extract's first run: pipeline/extract.ts). */
  hash?: boolean;
}

async function decodeItem<T>(
  item: T,
  absPath: string,
  pre: Preprocessing,
  opts: DecodeAheadOptions,
): Promise<DecodedImage<T>> {
  try {
    if (opts.pool) {
      return { item, ...(await opts.pool.decodeShared(absPath, { hash: opts.hash })) };
    }
    const buf = await readFile(absPath);
    return { item, pixels: await decodeForModel(buf, pre, { maxPixels: opts.maxPixels, decoder: opts.decoder }) };
  } catch (e) {
    if (e instanceof KeyedDecodeError && e.key !== undefined) return { item, error: e.message, key: e.key };
    if (e instanceof DecodeError) return { item, error: e.message };
    if (e && typeof e === 'object' && 'code' in e)
      return { item, error: `unreadable file (${String((e as { code: unknown }).code)})` };
    throw e;
  }
}

/**
 * The one decode queue (extraction's runBackbone and fine-tuning's splits): decode `items` in input
 * order with bounded look-ahead on the libuv pool, so a consumer that runs ONNX Runtime between
 * pulls overlaps the two while memory stays flat however many images there are.
 */
export async function* decodeAhead<T>(
  items: readonly T[],
  absPath: (item: T) => string,
  pre: Preprocessing,
  opts: DecodeAheadOptions,
): AsyncGenerator<DecodedImage<T>> {
  const queue: Promise<DecodedImage<T>>[] = [];
  let next = 0;
  const refill = (): void => {
    while (queue.length < opts.lookahead && next < items.length) {
      const item = items[next++]!;
      queue.push(decodeItem(item, absPath(item), pre, opts));
    }
  };
  refill();
  while (queue.length > 0) {
    const d = await queue.shift()!;
    refill();
    yield d;
  }
}
