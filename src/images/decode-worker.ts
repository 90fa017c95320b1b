import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { decodeJpegFast, FastDecodeRefusal } from './jpeg-fast.ts';
import { lowerThreadPriority } from './thread-priority.ts';

/**
 * One decode thread of DecodePool (decode-pool.ts): reads a file and runs the fast JPEG path
 * synchronously, off the JS thread that runs ONNX Runtime, writing the pixels straight into the
 * pool's shared memory (the slot named in the request). Images the fast path declines are sent back
 * as bytes for sharp. It imports only the fast path (not sharp): each thread is a V8 isolate of its
 * own, and peak RSS is a target.
 *
 * Nothing is allocated per image on the fast path (the file is read into a buffer that grows to the
 * largest file, the resize writes into the slot): a fresh 250 KB array per image and its transfer
 * cost ~0.6 ms of kernel time per image in page faults and unmapping, half of the decode itself.
 */
export interface DecodeRequest {
  id: number;
  path: string;
  /** Index of the shared slot to write the pixels to. */
  slot: number;
  /** Also return the file's content key (sha1 of its bytes, as store/file-keys.ts computes it). */
  hash?: boolean;
}
/** `key`: the content key, when asked for and the file could be read. */
export type DecodeReply = { id: number; key?: string } & ({ ok: true } | { bytes: Uint8Array } | { error: string });

export interface DecodeWorkerData {
  nice: number;
  pre: Preprocessing;
  maxPixels: number;
  /** The pool's slots, slotBytes each (the model input, H*W*3). */
  shared: SharedArrayBuffer;
  slotBytes: number;
}

const data = workerData as DecodeWorkerData;
lowerThreadPriority(data.nice);

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

parentPort!.on('message', (m: DecodeRequest) => {
  let buf: Buffer;
  try {
    buf = readWhole(m.path);
  } catch (e) {
    const code = e && typeof e === 'object' && 'code' in e ? String((e as { code: unknown }).code) : 'error';
    parentPort!.postMessage({ id: m.id, error: `unreadable file (${code})` } satisfies DecodeReply);
    return;
  }
  // Hashing here, from the bytes this thread reads anyway, saves extract a pass that read every file
  // on the JS thread before the first batch could run (3000 photos: ~0.7 s of wall time, ~1 s of CPU).
  const key = m.hash ? createHash('sha1').update(buf).digest('hex') : undefined;
  const reply = (r: DecodeReply, transfer: ArrayBuffer[] = []): void =>
    parentPort!.postMessage(key === undefined ? r : { ...r, key }, transfer);
  if (buf.length === 0) {
    reply({ id: m.id, error: 'empty file' });
    return;
  }
  let px: Uint8Array | null = null;
  try {
    px = decodeJpegFast(
      buf,
      data.pre,
      data.maxPixels,
      undefined,
      new Uint8Array(data.shared, m.slot * data.slotBytes, data.slotBytes),
    );
  } catch (e) {
    if (e instanceof FastDecodeRefusal) {
      reply({ id: m.id, error: e.message });
      return;
    }
    px = null; // anything unexpected: sharp tries (and words the error)
  }
  if (px) reply({ id: m.id, ok: true });
  else {
    const bytes = Uint8Array.from(buf); // the read buffer is reused: sharp gets its own copy
    reply({ id: m.id, bytes }, [bytes.buffer]);
  }
});
