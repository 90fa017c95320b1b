import '../util/ort-telemetry.ts';
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { featureSessionOptions, inputBuffer, inputTensor, valuesPerImage, type InputType } from './ort-runner.ts';

/**
 * One inference thread of OrtSessionPool (ort-pool.ts): a session of its own on `threads` intra-op
 * threads, running the batches it is sent (their pixels usually sit in the pool's shared memory)
 * and sending the features back.
 */
export interface SessionWorkerData {
  model: string | Uint8Array;
  threads: number;
  inputShape: readonly number[];
  featureDim: number;
  inputType: InputType;
}
export interface RunRequest {
  id: number;
  input: Uint8Array | Float32Array;
  n: number;
}
export type SessionReply =
  { ready: true } | { initError: string } | { id: number; features: Float32Array } | { id: number; error: string };

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

try {
  const session = await ort.InferenceSession.create(data.model as Uint8Array, featureSessionOptions(data.threads));
  const inputName = session.inputNames[0]!;
  port.on('message', (r: RunRequest) => {
    void (async () => {
      try {
        const tensor = inputTensor(data.inputType, ownCopy(r.input, r.n * per), r.n, data.inputShape);
        const out = await session.run({ [inputName]: tensor });
        const features = new Float32Array(out.features!.data as Float32Array);
        port.postMessage({ id: r.id, features } satisfies SessionReply, [features.buffer]);
      } catch (e) {
        port.postMessage({ id: r.id, error: errorText(e) } satisfies SessionReply);
      }
    })();
  });
  port.postMessage({ ready: true } satisfies SessionReply);
} catch (e) {
  port.postMessage({ initError: errorText(e) } satisfies SessionReply);
}
