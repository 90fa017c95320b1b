import * as ort from 'onnxruntime-node';
import type { FilesResult } from './ort-pool.ts';
import type { Preprocessing } from './preprocess.ts';

export interface RunnerOptions {
  /** Intra-op threads for ONNX Runtime (of each session, with `sessions`). */
  threads: number;
  /**
   * Sessions running batches side by side, each on a thread of its own (ort-pool.ts); default 1: one
   * session on the JS thread.
   */
  sessions?: number;
  /**
   * With sessions > 1: the session threads also decode files (FeatureRunner.runFiles; the fast JPEG
   * path, uint8 inputs).
   */
  decode?: { pre: Preprocessing; maxPixels: number };
}

export type InputType = 'uint8' | 'float32';

/** Runs a converted conv base (input 'image' uint8 NHWC, output 'features' float [N, D]). */
export interface FeatureRunner {
  /** Batches that run at once: keep this many run() calls in flight to use them all. */
  readonly parallel: number;
  /** A buffer for `images` model inputs that run() takes without a copy (leave it alone until that run() settles). */
  batchBuffer(images: number): Uint8Array | Float32Array;
  /** Run `n` images packed back to back in `batch`; returns n*D floats (a fresh copy). */
  run(batch: Uint8Array | Float32Array, n: number): Promise<Float32Array>;
  /** Present when the runner's threads decode files themselves (ort-pool.ts runFiles). */
  runFiles?(files: readonly string[], hash: boolean): Promise<FilesResult>;
  readonly decodes?: boolean;
  release(): Promise<void>;
}

/** Session options of every conv-base session (the JS thread's and the pool's). */
export function featureSessionOptions(threads: number): ort.InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    // The memory pattern pre-plans one block for every intermediate tensor of the batch on top of
    // the arena: extract's peak RSS was 764 MiB with it, 559 without (3000 images, batch 32), at
    // the same inference speed. The arena itself stays: without it every run() maps and faults in
    // its buffers afresh (600 images: 3x slower).
    enableMemPattern: false,
    // Spinning threads would steal the core that JPEG decoding needs between batches.
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
}

/** Values per image of an input shape (H, W, C). */
export function valuesPerImage(inputShape: readonly number[]): number {
  return inputShape.reduce((a, b) => a * b, 1);
}

/** An input buffer of `n` values of `type`, in shared memory (a session pool's batches) or not. */
export function inputBuffer(type: InputType, n: number, shared: boolean): Uint8Array | Float32Array {
  const bytes = type === 'uint8' ? n : n * 4;
  const buf = shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
  return type === 'uint8' ? new Uint8Array(buf) : new Float32Array(buf);
}

/** The conv base's input tensor: `data` (n images back to back) shaped [n, ...inputShape]. */
export function inputTensor(
  type: InputType,
  data: Uint8Array | Float32Array,
  n: number,
  inputShape: readonly number[],
): ort.Tensor {
  const shape = [n, ...inputShape];
  return type === 'uint8'
    ? new ort.Tensor('uint8', data as Uint8Array, shape)
    : new ort.Tensor('float32', data as Float32Array, shape);
}

/** One session on the JS thread (RunnerOptions.sessions 1), or a pool of them on threads of their own. */
export async function createFeatureRunner(
  model: Uint8Array | string,
  inputShape: readonly number[],
  featureDim: number,
  opts: RunnerOptions,
  inputType: InputType = 'uint8',
): Promise<FeatureRunner> {
  if ((opts.sessions ?? 1) <= 1) return OrtFeatureRunner.create(model, inputShape, featureDim, opts, inputType);
  const { OrtSessionPool } = await import('./ort-pool.ts');
  return OrtSessionPool.create(
    model,
    inputShape,
    featureDim,
    { sessions: opts.sessions!, threads: opts.threads, ...(opts.decode ? { decode: opts.decode } : {}) },
    inputType,
  );
}

/**
 * One session on the JS thread. Note: onnxruntime-node's run() executes on the JS thread, so callers
 * queue image decodes (decode threads, libuv pool) *before* calling run() to overlap the two.
 */
export class OrtFeatureRunner implements FeatureRunner {
  readonly parallel = 1;

  private constructor(
    private readonly session: ort.InferenceSession,
    readonly inputShape: readonly number[],
    readonly featureDim: number,
    readonly inputType: InputType,
  ) {}

  static async create(
    model: Uint8Array | string,
    inputShape: readonly number[],
    featureDim: number,
    opts: RunnerOptions,
    inputType: InputType = 'uint8',
  ): Promise<OrtFeatureRunner> {
    const session = await ort.InferenceSession.create(model as Uint8Array, featureSessionOptions(opts.threads));
    return new OrtFeatureRunner(session, inputShape, featureDim, inputType);
  }

  batchBuffer(images: number): Uint8Array | Float32Array {
    return inputBuffer(this.inputType, images * valuesPerImage(this.inputShape), false);
  }

  /** Run `n` images packed back to back in `batch`; returns n*D floats (a fresh copy). */
  async run(batch: Uint8Array | Float32Array, n: number): Promise<Float32Array> {
    const data = batch.subarray(0, n * valuesPerImage(this.inputShape));
    const tensor = inputTensor(this.inputType, data, n, this.inputShape);
    // Our converter names the input 'image'; wrapped foreign models use another name: take the only input.
    const out = await this.session.run({ [this.session.inputNames[0]!]: tensor });
    const f = out.features!.data as Float32Array;
    if (f.length !== n * this.featureDim)
      throw new Error(`runner: expected ${n * this.featureDim} features, got ${f.length}`);
    return new Float32Array(f);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
