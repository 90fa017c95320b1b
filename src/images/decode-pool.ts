import { Worker } from 'node:worker_threads';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { DecodeError, decodeWithSharp } from './decode.ts';
import type { DecodeReply, DecodeRequest, DecodeWorkerData } from './decode-worker.ts';

/**
 * Worker threads running the fast JPEG path (decode-worker.ts), so decoding overlaps ONNX Runtime,
 * whose run() blocks the JS thread. Requests are spread over the threads round-robin and queue in
 * each thread's message port: a thread keeps decoding while the JS thread is inside run().
 * Images the fast path declines go to sharp here (libuv pool), as before.
 */
export class DecodePool {
  private readonly workers: Worker[];
  private readonly pending = new Map<number, { resolve: (v: Uint8Array) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private failure: Error | undefined;

  /** `nice`: how far the decode threads lower their own priority (thread-priority.ts; 0 = not). */
  constructor(
    size: number,
    private readonly pre: Preprocessing,
    private readonly maxPixels: number,
    nice = 0,
  ) {
    this.workers = Array.from({ length: Math.max(1, size) }, () => {
      const w = startWorker({ nice } satisfies DecodeWorkerData);
      w.on('message', (r: DecodeReply) => this.onReply(r));
      w.on('error', (e) => this.fail(e));
      return w;
    });
  }

  private onReply(r: DecodeReply): void {
    const p = this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id);
    if ('pixels' in r) p.resolve(r.pixels);
    else if ('error' in r) p.reject(new DecodeError(r.error));
    else
      decodeWithSharp(Buffer.from(r.bytes.buffer, r.bytes.byteOffset, r.bytes.length), this.pre, {
        maxPixels: this.maxPixels,
      }).then(p.resolve, p.reject);
  }

  private fail(e: Error): void {
    this.failure = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  /** Model-input pixels of one file (rejects with DecodeError for unusable images). */
  decode(path: string): Promise<Uint8Array> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.workers[id % this.workers.length]!.postMessage({
        id,
        path,
        pre: this.pre,
        maxPixels: this.maxPixels,
      } satisfies DecodeRequest);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/**
 * From compiled JS the worker file runs as is. From TypeScript sources (tsx), the loader hooks of
 * the parent thread do not reach the worker, so it registers tsx itself before importing the file.
 */
function startWorker(workerData: DecodeWorkerData): Worker {
  if (!import.meta.url.endsWith('.ts'))
    return new Worker(new URL('./decode-worker.js', import.meta.url), { workerData });
  const api = import.meta.resolve('tsx/esm/api');
  const file = new URL('./decode-worker.ts', import.meta.url).href;
  return new Worker(
    `import(${JSON.stringify(api)}).then((t) => { t.register(); return import(${JSON.stringify(file)}); });`,
    { eval: true, workerData },
  );
}
