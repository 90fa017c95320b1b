import { readFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { decodeJpegFast, FastDecodeRefusal } from './jpeg-fast.ts';
import { lowerThreadPriority } from './thread-priority.ts';

/**
 * One decode thread of DecodePool (decode-pool.ts): reads a file and runs the fast JPEG path
 * synchronously, off the JS thread that runs ONNX Runtime. Images the fast path declines are sent
 * back as bytes for sharp. It imports only the fast path (not sharp): each thread is a V8 isolate of
 * its own, and peak RSS is a target.
 */
export interface DecodeRequest {
  id: number;
  path: string;
  pre: Preprocessing;
  maxPixels: number;
}
export type DecodeReply =
  { id: number; pixels: Uint8Array } | { id: number; bytes: Uint8Array } | { id: number; error: string };

export interface DecodeWorkerData {
  nice: number;
}

lowerThreadPriority((workerData as DecodeWorkerData | undefined)?.nice ?? 0);

parentPort!.on('message', (m: DecodeRequest) => {
  let buf: Buffer;
  try {
    buf = readFileSync(m.path);
  } catch (e) {
    const code = e && typeof e === 'object' && 'code' in e ? String((e as { code: unknown }).code) : 'error';
    parentPort!.postMessage({ id: m.id, error: `unreadable file (${code})` } satisfies DecodeReply);
    return;
  }
  if (buf.length === 0) {
    parentPort!.postMessage({ id: m.id, error: 'empty file' } satisfies DecodeReply);
    return;
  }
  let px: Uint8Array | null = null;
  try {
    px = decodeJpegFast(buf, m.pre, m.maxPixels);
  } catch (e) {
    if (e instanceof FastDecodeRefusal) {
      parentPort!.postMessage({ id: m.id, error: e.message } satisfies DecodeReply);
      return;
    }
    px = null; // anything unexpected: sharp tries (and words the error)
  }
  if (px) parentPort!.postMessage({ id: m.id, pixels: px } satisfies DecodeReply, [px.buffer as ArrayBuffer]);
  else parentPort!.postMessage({ id: m.id, bytes: buf } satisfies DecodeReply);
});
