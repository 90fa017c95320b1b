import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { keyOfBytes } from '../store/file-keys.ts';
import { decodeJpegFast, FastDecodeRefusal } from './jpeg-fast.ts';

/**
 * One file through the fast JPEG path, synchronously, on the thread that calls it: the decode threads
 * (decode-worker.ts) and the sessions that decode their own batches (backbone/ort-session-worker.ts).
 * The file is read into a buffer reused from one file to the next and the pixels are written into
 * `out`, so nothing is allocated per image on the fast path: a fresh 250 KB array per image and its
 * transfer cost ~0.6 ms of kernel time per image in page faults and unmapping, half of the decode itself.
 */

/**
 * `ok`: the pixels are in `out`; `bytes`: the fast path declined the image (not a JPEG, CMYK, a libjpeg
 * warning), here are the file's bytes for sharp; `error`: unusable, with the reason. `key`: the file's
 * content key (store/file-keys.ts keyOfBytes) when asked for and the file was read.
 */
export type FastFileOutcome = { key?: string } & ({ ok: true } | { bytes: Uint8Array } | { error: string });

let readBuf = Buffer.allocUnsafeSlow(1 << 20);

/** The whole file, in a buffer reused from one file to the next (valid until the next call). */
function readWhole(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size; // 0 for some special files: then read to the end
    let n = 0;
    for (;;) {
      if (n === readBuf.length || size > readBuf.length) {
        const bigger = Buffer.allocUnsafeSlow(Math.max(size, readBuf.length * 2));
        readBuf.copy(bigger, 0, 0, n);
        readBuf = bigger;
      }
      const r = readSync(fd, readBuf, n, readBuf.length - n, null);
      n += r;
      if (r === 0 || (size > 0 && n >= size)) break;
    }
    return readBuf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

export function decodeFileFast(
  path: string,
  pre: Preprocessing,
  maxPixels: number,
  out: Uint8Array,
  hash: boolean,
): FastFileOutcome {
  let buf: Buffer;
  try {
    buf = readWhole(path);
  } catch (e) {
    const code = e && typeof e === 'object' && 'code' in e ? String((e as { code: unknown }).code) : 'error';
    return { error: `unreadable file (${code})` };
  }
  // Hashing here, from the bytes this thread reads anyway, saves extract a pass that read every file
  // on the JS thread before the first batch could run (3000 photos: ~0.7 s of wall time, ~1 s of CPU).
  const keyed = hash ? { key: keyOfBytes(buf) } : {};
  if (buf.length === 0) return { error: 'empty file', ...keyed };
  let px: Uint8Array | null = null;
  try {
    px = decodeJpegFast(buf, pre, maxPixels, undefined, out);
  } catch (e) {
    if (e instanceof FastDecodeRefusal) return { error: e.message, ...keyed };
    px = null; // anything unexpected: sharp tries (and words the error)
  }
  if (px) return { ok: true, ...keyed };
  return { bytes: Uint8Array.from(buf), ...keyed }; // the read buffer is reused: sharp gets its own copy
}
