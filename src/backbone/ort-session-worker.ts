import '../util/ort-telemetry.ts';
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { Preprocessing } from './preprocess.ts';
import type { FastFileOutcome } from '../images/fast-file.ts';
import { featureSessionOptions, inputBuffer, inputTensor, valuesPerImage, type InputType } from './ort-runner.ts';

/**
 * One inference thread of OrtSessionPool (ort-pool.ts): a session of its own on `threads` intra-op
 * threads, running the batches it is sent (their pixels usually sit in the pool's shared memory)
 * and sending the features back. With `decode`, it also takes batches of files, decodes them itself
 * (the fast JPEG path, images/fast-file.ts) and runs them.
 */
export interface SessionWorkerData {
  model: string | Uint8Array;
  threads: number;
  inputShape: readonly number[];
  featureDim: number;
  inputType: InputType;
  /** Decode files here too (FilesRequest); uint8 inputs only. */
  decode?: { pre: Preprocessing; maxPixels: number };
}
export interface RunRequest {
  id: number;
  input: Uint8Array | Float32Array;
  n: number;
}
/** Decode these files and run the ones the fast path decoded, in order. */
export interface FilesRequest {
  id: number;
  files: readonly string[];
  /** Also return each file's content key. */
  hash: boolean;
}
/** Per file its outcome; `features` holds the rows of the `ok` ones, in order. */
export type FileOutcome = FastFileOutcome;
export type SessionReply =
  | { ready: true }
  | { initError: string }
  | { id: number; features: Float32Array; outcomes?: FileOutcome[] }
  | { id: number; error: string };

const data = workerData as SessionWorkerData;
const port = parentPort!;
const per = valuesPerImage(data.inputShape);

/**
 * onnxruntime-node rejects tensors over a SharedArrayBuffer ('Invalid argument'), so a batch from the
 * pool's shared memory is copied into a buffer of this thread's own, reused from batch to batch
 * (~0.3 ms per 16-image batch at 288 px).
 */
let own = inputBuffer(data.inputType, 0, false);
function ownCopy(src: Uint8Array | Float32Array, n: number): Uint8Array | Float32Array {
  if (!(src.buffer instanceof SharedArrayBuffer)) return src.subarray(0, n);
  if (own.length < n) own = inputBuffer(data.inputType, n, false);
  own.set(src.subarray(0, n));
  return own.subarray(0, n);
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Decoding where the batch runs: the thread decodes a batch, then runs it, so decode and inference
 * never compete for a core within one thread, and no pixels cross threads. Measured against decode
 * threads of their own beside the sessions: see pipeline/schedule.ts DECODE_IN_SESSIONS.
 */
const fastFile = data.decode && data.inputType === 'uint8' ? await import('../images/fast-file.ts') : undefined;

function decodeBatch(r: FilesRequest): { input: Uint8Array; n: number; outcomes: FileOutcome[] } {
  if (!fastFile || !data.decode) throw new Error('this session thread does not decode files');
  const { decodeFileFast } = fastFile;
  if (own.length < r.files.length * per) own = inputBuffer('uint8', r.files.length * per, false);
  const input = own as Uint8Array;
  let n = 0;
  const outcomes = r.files.map((file): FileOutcome => {
    const o = decodeFileFast(
      file,
      data.decode!.pre,
      data.decode!.maxPixels,
      input.subarray(n * per, (n + 1) * per),
      r.hash,
    );
    if ('ok' in o) n++;
    return o;
  });
  return { input: input.subarray(0, n * per), n, outcomes };
}

try {
  const session = await ort.InferenceSession.create(data.model as Uint8Array, featureSessionOptions(data.threads));
  const inputName = session.inputNames[0]!;
  const runBatch = async (input: Uint8Array | Float32Array, n: number): Promise<Float32Array> => {
    if (n === 0) return new Float32Array(0);
    const out = await session.run({ [inputName]: inputTensor(data.inputType, input, n, data.inputShape) });
    return new Float32Array(out.features!.data as Float32Array);
  };
  // One request at a time, in arrival order: they share `own`, and a second batch's decode must not
  // run beside the first one's inference.
  let queue = Promise.resolve();
  port.on('message', (r: RunRequest | FilesRequest) => {
    queue = queue.then(async () => {
      try {
        let reply: SessionReply;
        if ('files' in r) {
          const b = decodeBatch(r);
          reply = { id: r.id, features: await runBatch(b.input, b.n), outcomes: b.outcomes };
        } else {
          reply = { id: r.id, features: await runBatch(ownCopy(r.input, r.n * per), r.n) };
        }
        const transfer: ArrayBuffer[] = [reply.features.buffer as ArrayBuffer];
        for (const o of reply.outcomes ?? []) if ('bytes' in o) transfer.push(o.bytes.buffer as ArrayBuffer);
        port.postMessage(reply, transfer);
      } catch (e) {
        port.postMessage({ id: r.id, error: errorText(e) } satisfies SessionReply);
      }
    });
  });
  port.postMessage({ ready: true } satisfies SessionReply);
} catch (e) {
  port.postMessage({ initError: errorText(e) } satisfies SessionReply);
}
