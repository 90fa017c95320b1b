import { parentPort, workerData } from 'node:worker_threads';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { decodeFileFast, type FastFileOutcome } from './fast-file.ts';
import { lowerThreadPriority } from './thread-priority.ts';

/**
 * One decode thread of DecodePool (decode-pool.ts): reads a file and runs the fast JPEG path
 * synchronously, off the JS thread that runs ONNX Runtime, writing the pixels straight into the
 * pool's shared memory (the slot named in the request). Images the fast path declines are sent back
 * as bytes for sharp. It imports only the fast path (not sharp): each thread is a V8 isolate of its
 * own, and peak RSS is a target.
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
export type DecodeReply = { id: number } & FastFileOutcome;

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

parentPort!.on('message', (m: DecodeRequest) => {
  const slot = new Uint8Array(data.shared, m.slot * data.slotBytes, data.slotBytes);
  const r = decodeFileFast(m.path, data.pre, data.maxPixels, slot, m.hash === true);
  parentPort!.postMessage(
    { id: m.id, ...r } satisfies DecodeReply,
    'bytes' in r ? [r.bytes.buffer as ArrayBuffer] : [],
  );
});
