import type { Worker } from 'node:worker_threads';
import { startWorker } from '../util/worker.ts';
import { inputBuffer, valuesPerImage, type FeatureRunner, type InputType } from './ort-runner.ts';
import type { Preprocessing } from './preprocess.ts';
import type { FileOutcome, FilesRequest, RunRequest, SessionReply, SessionWorkerData } from './ort-session-worker.ts';

export interface SessionPoolOptions {
  /** Sessions, each on a thread of its own, running batches side by side. */
  sessions: number;
  /** Intra-op threads of each session. */
  threads: number;
  /** The session threads also decode files themselves (runFiles; the fast JPEG path, uint8 inputs). */
  decode?: { pre: Preprocessing; maxPixels: number };
}

/** A batch of files run by runFiles: per file its outcome, and the features of the decoded ones, in order. */
export interface FilesResult {
  outcomes: FileOutcome[];
  features: Float32Array;
}

/**
 * Requests queued per session thread: the next batch waits in the thread's port while the current one
 * runs, so a thread that decodes its own batches goes straight on to the next one.
 */
const DEPTH = 2;

/**
 * Several ONNX Runtime sessions of one graph, each on a worker thread of its own, running different
 * batches at once. Why: one session's intra-op threads meet at a barrier after every operator, so a
 * decode thread that preempts one of them idles the others; single-threaded sessions have no barrier,
 * and a preempted one delays only its own batch (schedule.ts has the measurements). Batches are best
 * built in batchBuffer()s (shared memory: no copy per run). run() does not block the JS thread.
 */
export class OrtSessionPool implements FeatureRunner {
  private readonly outstanding: number[];
  private readonly waiting: ((worker: number) => void)[] = [];
  private readonly pending = new Map<
    number,
    {
      worker: number;
      resolve: (r: Extract<SessionReply, { features: Float32Array }>) => void;
      reject: (e: Error) => void;
    }
  >();
  private nextId = 0;
  private failure: Error | undefined;
  private closing = false;

  private constructor(
    private readonly workers: Worker[],
    private readonly inputType: InputType,
    private readonly featureDim: number,
    private readonly perImage: number,
    /** runFiles() is available (the threads were started with `decode`). */
    readonly decodes: boolean,
  ) {
    this.outstanding = workers.map(() => 0);
    workers.forEach((w) => {
      w.on('message', (r: SessionReply) => this.onReply(r));
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => this.fail(new Error(`an inference thread stopped (exit code ${code})`)));
    });
  }

  get parallel(): number {
    return this.workers.length;
  }

  static async create(
    model: Uint8Array | string,
    inputShape: readonly number[],
    featureDim: number,
    opts: SessionPoolOptions,
    inputType: InputType = 'uint8',
  ): Promise<OrtSessionPool> {
    const decode = opts.decode && inputType === 'uint8' ? { decode: opts.decode } : {};
    const data: SessionWorkerData = { model, threads: opts.threads, inputShape, featureDim, inputType, ...decode };
    const workers = Array.from({ length: Math.max(1, opts.sessions) }, () =>
      startWorker(import.meta.url, 'ort-session-worker', data),
    );
    const started = await Promise.allSettled(
      workers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            w.once('message', (r: SessionReply) =>
              'ready' in r ? resolve() : reject(new Error('initError' in r ? r.initError : 'session thread: no start')),
            );
            w.once('error', reject);
            w.once('exit', (code) => reject(new Error(`session thread exited (${code}) before it started`)));
          }),
      ),
    );
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw failed.reason;
    }
    // Only these events' listeners: removeAllListeners() would also drop the Worker's own
    // newListener hook, and replies would then never be delivered.
    for (const w of workers) for (const ev of ['message', 'error', 'exit'] as const) w.removeAllListeners(ev);
    return new OrtSessionPool(workers, inputType, featureDim, valuesPerImage(inputShape), 'decode' in decode);
  }

  batchBuffer(images: number): Uint8Array | Float32Array {
    return inputBuffer(this.inputType, images * this.perImage, true);
  }

  run(batch: Uint8Array | Float32Array, n: number): Promise<Float32Array> {
    // A batch outside shared memory is copied by postMessage, so the caller may reuse it at once.
    const input = batch.subarray(0, n * this.perImage);
    return this.submit((id) => ({ id, input, n }) satisfies RunRequest).then((r) =>
      r.features.length === n * this.featureDim
        ? r.features
        : Promise.reject(lengthError(n * this.featureDim, r.features)),
    );
  }

  /**
   * Decode `files` on a session thread (the fast JPEG path) and run the ones it decoded. Files it
   * declines come back as bytes (for sharp), unusable ones as errors; a failed run rejects.
   */
  runFiles(files: readonly string[], hash: boolean): Promise<FilesResult> {
    if (!this.decodes) return Promise.reject(new Error('runner: these session threads do not decode files'));
    return this.submit((id) => ({ id, files, hash }) satisfies FilesRequest).then((r) => {
      const outcomes = r.outcomes ?? [];
      const ok = outcomes.filter((o) => 'ok' in o).length;
      if (outcomes.length !== files.length || r.features.length !== ok * this.featureDim)
        return Promise.reject(lengthError(ok * this.featureDim, r.features));
      return { outcomes, features: r.features };
    });
  }

  /** Send a request to the thread with the fewest queued (at most DEPTH each; else wait for one). */
  private submit(
    message: (id: number) => RunRequest | FilesRequest,
  ): Promise<Extract<SessionReply, { features: Float32Array }>> {
    if (this.closing) return Promise.reject(new Error('runner: run() after release()'));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const start = (worker: number): void => {
        if (this.failure) {
          reject(this.failure);
          return;
        }
        const id = this.nextId++;
        this.outstanding[worker]!++;
        this.pending.set(id, { worker, resolve, reject });
        this.workers[worker]!.postMessage(message(id));
      };
      const worker = this.leastBusy();
      if (worker !== undefined) start(worker);
      else this.waiting.push(start);
    });
  }

  private leastBusy(): number | undefined {
    let best = 0;
    for (let k = 1; k < this.outstanding.length; k++) if (this.outstanding[k]! < this.outstanding[best]!) best = k;
    return this.outstanding[best]! < DEPTH ? best : undefined;
  }

  private onReply(r: SessionReply): void {
    if (!('id' in r)) return;
    const p = this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id);
    this.outstanding[p.worker]!--;
    const next = this.waiting.shift();
    if (next) next(p.worker);
    if ('features' in r) p.resolve(r);
    else p.reject(new Error(r.error));
  }

  private fail(e: Error): void {
    if (this.closing) return;
    this.failure ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    for (const start of this.waiting.splice(0)) start(-1); // each rejects with the failure
  }

  async release(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

function lengthError(expected: number, f: Float32Array): Error {
  return new Error(`runner: expected ${expected} features, got ${f.length}`);
}
