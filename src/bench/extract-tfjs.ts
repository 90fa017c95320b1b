import { readFileSync } from 'node:fs';
import type { PreparedBackbone } from '../backbone/backbone.ts';
import { loadLayersModelFromDir } from '../backbone/tfjs-model.ts';
import { decodeForModel, DEFAULT_MAX_PIXELS } from '../images/decode.ts';
import { initTf, tfBackendName } from '../util/tf.ts';

/** The same conv base in TF.js (wasm backend) on `k` images: img/s and ORT's speed-up over it. */
export async function loadTfjsComparison(
  bb: PreparedBackbone,
  files: readonly string[],
  k: number,
  ortImagesPerSecond: number,
): Promise<Record<string, unknown>> {
  const pre = bb.config.preprocessing;
  const [h, w] = pre.size;
  const tf = await initTf();
  const model = await loadLayersModelFromDir(bb.resolved.location);
  const sub = tf.model({ inputs: model.inputs, outputs: model.getLayer(bb.config.layer).output as any });
  k = Math.min(k, files.length);
  const pix = new Float32Array(k * h * w * 3);
  for (let i = 0; i < k; i++) {
    const px = await decodeForModel(readFileSync(files[i]!), pre, { maxPixels: DEFAULT_MAX_PIXELS });
    for (let j = 0; j < px.length; j++) pix[i * px.length + j] = px[j]! / 127.5 - 1;
  }
  tf.tidy(() => {
    (sub.predict(tf.tensor4d(pix.subarray(0, h * w * 3), [1, h, w, 3])) as any).dataSync();
  });
  const t = performance.now();
  for (let s = 0; s < k; s += 16) {
    const m = Math.min(16, k - s);
    tf.tidy(() => {
      (sub.predict(tf.tensor4d(pix.subarray(s * h * w * 3, (s + m) * h * w * 3), [m, h, w, 3])) as any)
        .mean([1, 2])
        .dataSync();
    });
  }
  const tfRate = Math.round((k / ((performance.now() - t) / 1000)) * 10) / 10;
  model.dispose();
  return {
    backend: tfBackendName(),
    images: k,
    imagesPerSecond: tfRate,
    ortFp32Speedup: Math.round((ortImagesPerSecond / tfRate) * 10) / 10,
  };
}
