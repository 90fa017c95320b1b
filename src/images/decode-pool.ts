import type { Worker } from 'node:worker_threads';
import { startWorker } from '../util/worker.ts';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { DecodeError, decodeWithSharp } from './decode.ts';
import type { DecodeReply, DecodeRequest, DecodeWorkerData } from './decode-worker.ts';

/** Model-input pixels held in one of the pool's shared slots until `release()`. */
export interface SharedPixels {
  pixels: Uint8Array;
  /** Give the slot back (the pixels must not be read afterwards). Idempotent. */
  release(): void;
  /** The file's content key (sha1 of its bytes), when asked for. */
  key?: string;
}

/** A DecodeError (unusable image) that also carries the file's content key, when it was asked for and read. */
export class KeyedDecodeError extends DecodeError {
  constructor(
    message: string,
    readonly key: string | undefined,
  ) {
    super(message);
  }
}

export interface DecodePoolOptions {
  /** How far the decode threads lower their own priority (thread-priority.ts; 0 = not). */
  nice?: number;
  /**
   * Shared slots (one model input each): decodes in flight plus decoded images not yet released.
   * More requests than slots wait for one (in request order). Default 64.
   */
  slots?: number;
}

/**
 * Worker threads running the fast JPEG path (decode-worker.ts), so decoding overlaps ONNX Runtime,
 * whose run() blocks the JS thread. The threads write pixels into slots of one SharedArrayBuffer:
 * no allocation, copy or transfer per image on their side. A request goes to the thread with the
 * fewest outstanding requests and queues in its message port, so a thread keeps decoding while the JS
 * thread is inside run(). Images the fast path declines go to sharp here (libuv pool), as before.
 */
export class DecodePool {
  private readonly workers: Worker[];
  private readonly outstanding: number[];
  private readonly pending = new Map<
    number,
    { slot: number; worker: number; resolve: (v: SharedPixels) => void; reject: (e: Error) => void }
  >();
  private readonly shared: SharedArrayBuffer;
  private readonly slotBytes: number;
  private readonly free: number[];
  /** Requests waiting for a slot, oldest first. */
  private readonly waiting: ((slot: number) => void)[] = [];
  private nextId = 0;
  private failure: Error | undefined;
  readonly slots: number;

  constructor(
    size: number,
    private readonly pre: Preprocessing,
    private readonly maxPixels: number,
    opts: DecodePoolOptions | number = {},
  ) {
    const o = typeof opts === 'number' ? { nice: opts } : opts;
    this.slots = Math.max(1, o.slots ?? 64);
    this.slotBytes = pre.size[0] * pre.size[1] * 3;
    this.shared = new SharedArrayBuffer(this.slots * this.slotBytes);
    this.free = Array.from({ length: this.slots }, (_, i) => this.slots - 1 - i); // pop() gives slot 0 first
    const data: DecodeWorkerData = {
      nice: o.nice ?? 0,
      pre,
      maxPixels,
      shared: this.shared,
      slotBytes: this.slotBytes,
    };
    this.workers = Array.from({ length: Math.max(1, size) }, () => {
      const w = startWorker(import.meta.url, 'decode-worker', data);
      w.on('message', (r: DecodeReply) => this.onReply(r));
      w.on('error', (e) => this.fail(e));
      return w;
    });
    this.outstanding = this.workers.map(() => 0);
  }

  private release(slot: number): void {
    const next = this.waiting.shift();
    if (next) next(slot);
    else this.free.push(slot);
  }

  private onReply(r: DecodeReply): void {
    const p = this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id);
    this.outstanding[p.worker]!--;
    const keyed = r.key === undefined ? {} : { key: r.key };
    if ('ok' in r) {
      let held = true;
      const release = (): void => {
        if (held) this.release(p.slot);
        held = false;
      };
      const pixels = new Uint8Array(this.shared, p.slot * this.slotBytes, this.slotBytes);
      p.resolve({ pixels, release, ...keyed });
      return;
    }
    this.release(p.slot); // not used for this image
    if ('error' in r) p.reject(new KeyedDecodeError(r.error, r.key));
    else
      decodeWithSharp(Buffer.from(r.bytes.buffer, r.bytes.byteOffset, r.bytes.length), this.pre, {
        maxPixels: this.maxPixels,
      }).then(
        (pixels) => p.resolve({ pixels, release: () => {}, ...keyed }),
        (e: unknown) => p.reject(e instanceof DecodeError ? new KeyedDecodeError(e.message, r.key) : (e as Error)),
      );
  }

  private fail(e: Error): void {
    this.failure = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  /**
   * Model-input pixels of one file in a shared slot (rejects with DecodeError for unusable images).
   * The caller must release() them once read: until then the slot is not reused. With `hash`, the
   * result (or the KeyedDecodeError) also carries the file's content key.
   */
  decodeShared(path: string, opts: { hash?: boolean } = {}): Promise<SharedPixels> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const start = (slot: number): void => {
        if (this.failure) {
          this.release(slot);
          reject(this.failure);
          return;
        }
        const id = this.nextId++;
        let worker = 0;
        for (let k = 1; k < this.workers.length; k++) if (this.outstanding[k]! < this.outstanding[worker]!) worker = k;
        this.outstanding[worker]!++;
        this.pending.set(id, { slot, worker, resolve, reject });
        this.workers[worker]!.postMessage({
          id,
          path,
          slot,
          ...(opts.hash ? { hash: true } : {}),
        } satisfies DecodeRequest);
      };
      const slot = this.free.pop();
      if (slot !== undefined) start(slot);
      else this.waiting.push(start);
    });
  }

  /** Model-input pixels of one file, in an array of their own (rejects with DecodeError for unusable images). */
  async decode(path: string): Promise<Uint8Array> {
    const s = await this.decodeShared(path);
    const copy = s.pixels.slice();
    s.release();
    return copy;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
