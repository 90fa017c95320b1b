import { readFileSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareBackbone } from '../backbone/backbone.ts';
import { OrtFeatureRunner } from '../backbone/ort-runner.ts';
import { scanDataset } from '../dataset/scan.ts';
import { decodeForModel, DEFAULT_MAX_PIXELS } from '../images/decode.ts';
import { extractFeatures } from '../pipeline/extract.ts';
import { loadLayersModelFromDir } from '../backbone/tfjs-model.ts';
import { initTf, tfBackendName } from '../util/tf.ts';
import { silentLogger, type Logger } from '../util/log.ts';
import { defaultDatasetDir } from '../util/paths.ts';
import { UserError } from '../util/errors.ts';
import { DEFAULT_SPLIT } from '../dataset/split.ts';
import { augmentImage, augmentSeed, parseAugmentSpec, sampleAugmentParams } from '../images/augment.ts';
import { seededRandom } from '../linalg/random.ts';
import { FINETUNE_DEFAULTS } from '../finetune/options.ts';

export interface ExtractBenchOptions {
  data?: string;
  model: string;
  batch: number;
  workers: number;
  threads: number;
  /** Images for the TF.js-wasm comparison pass. */
  tfjsImages: number;
  log: Logger;
}

function rate(n: number, ms: number): number {
  return Math.round((n / (ms / 1000)) * 10) / 10;
}

/** Decode-only, inference-only and end-to-end img/s, peak RSS, and a TF.js-wasm pass for the ratio. */
export async function benchExtract(opts: ExtractBenchOptions): Promise<Record<string, unknown>> {
  const data = opts.data ?? defaultDatasetDir();
  if (!data) throw new UserError('no dataset found for the benchmark (give --data)');
  const scan = scanDataset(data, silentLogger);
  const bb = await prepareBackbone({ model: opts.model, log: silentLogger });
  const pre = bb.config.preprocessing;
  const [h, w] = pre.size;
  const n = scan.images.length;

  opts.log.info(`decode-only: ${n} images, ${opts.workers} in flight ...`);
  const files = scan.images.map((i) => i.absPath);
  let t = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: opts.workers }, async () => {
    while (next < files.length) {
      const f = files[next++]!;
      try { await decodeForModel(readFileSync(f), pre, { maxPixels: DEFAULT_MAX_PIXELS }); } catch { /* counted by extract */ }
    }
  }));
  const decodeMs = performance.now() - t;

  // Augmentation speed (was a timed unit test): ms per image with fine-tuning's default spec, and its
  // ratio to a decode measured in the same run.
  opts.log.info('augment-only: fine-tuning\'s default augmentation ...');
  const augImages = await Promise.all(files.slice(0, Math.min(20, n)).map((f) => decodeForModel(readFileSync(f), pre, { maxPixels: DEFAULT_MAX_PIXELS }).catch(() => null)));
  const srcs = augImages.filter((p): p is Uint8Array => p !== null);
  const spec = parseAugmentSpec(FINETUNE_DEFAULTS.augment);
  const augOut = new Uint8Array(h * w * 3);
  const augRounds = 10;
  for (let i = 0; i < srcs.length; i++) augmentImage(srcs[i]!, w, h, sampleAugmentParams(spec, seededRandom(augmentSeed(1, 0, i))), augOut); // warm-up
  t = performance.now();
  for (let r = 0; r < augRounds; r++) {
    for (let i = 0; i < srcs.length; i++) augmentImage(srcs[i]!, w, h, sampleAugmentParams(spec, seededRandom(augmentSeed(1, r + 1, i))), augOut);
  }
  const augMsPerImage = (performance.now() - t) / Math.max(1, augRounds * srcs.length);

  opts.log.info(`inference-only: ORT, batch ${opts.batch}, ${opts.threads} threads ...`);
  const runner = await OrtFeatureRunner.create(bb.onnxPath, [h, w, 3], bb.config.featureDim, { threads: opts.threads });
  const batch = new Uint8Array(opts.batch * h * w * 3).map((_, i) => (i * 131) & 255);
  await runner.run(batch, opts.batch);
  const iters = Math.max(1, Math.round(640 / opts.batch));
  t = performance.now();
  for (let i = 0; i < iters; i++) await runner.run(batch, opts.batch);
  const inferMs = performance.now() - t;
  await runner.release();

  opts.log.info('end-to-end: extract into a fresh cache ...');
  const out = mkdtempSync(join(tmpdir(), 'convcache-bench-'));
  let e2e;
  try {
    t = performance.now();
    const res = await extractFeatures({
      data, out, model: opts.model, split: DEFAULT_SPLIT, seed: 42, batch: opts.batch,
      workers: opts.workers, threads: opts.threads, maxPixels: DEFAULT_MAX_PIXELS, quiet: true, log: silentLogger,
    });
    const ms = performance.now() - t;
    t = performance.now();
    await extractFeatures({
      data, out, model: opts.model, split: DEFAULT_SPLIT, seed: 42, batch: opts.batch,
      workers: opts.workers, threads: opts.threads, maxPixels: DEFAULT_MAX_PIXELS, quiet: true, log: silentLogger,
    });
    e2e = { images: n, seconds: Math.round(ms) / 1000, imagesPerSecond: rate(n, ms), rerunSeconds: Math.round(performance.now() - t) / 1000, timings: res.manifest.timings };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }

  opts.log.info(`TF.js pass on ${opts.tfjsImages} images ...`);
  const tf = await initTf();
  const model = await loadLayersModelFromDir(bb.resolved.location);
  const sub = tf.model({ inputs: model.inputs, outputs: model.getLayer(bb.config.layer).output as any });
  const k = Math.min(opts.tfjsImages, n);
  const pix = new Float32Array(k * h * w * 3);
  for (let i = 0; i < k; i++) {
    const px = await decodeForModel(readFileSync(files[i]!), pre, { maxPixels: DEFAULT_MAX_PIXELS });
    for (let j = 0; j < px.length; j++) pix[i * px.length + j] = px[j]! / 127.5 - 1;
  }
  tf.tidy(() => { (sub.predict(tf.tensor4d(pix.subarray(0, h * w * 3), [1, h, w, 3])) as any).dataSync(); });
  t = performance.now();
  for (let s = 0; s < k; s += 16) {
    const m = Math.min(16, k - s);
    tf.tidy(() => { (sub.predict(tf.tensor4d(pix.subarray(s * h * w * 3, (s + m) * h * w * 3), [m, h, w, 3])) as any).mean([1, 2]).dataSync(); });
  }
  const tfMs = performance.now() - t;
  model.dispose();
  const ortRate = rate(iters * opts.batch, inferMs);
  const tfRate = rate(k, tfMs);
  return {
    benchmark: 'extract',
    date: new Date().toISOString(),
    machine: { cpus: (await import('node:os')).cpus().length },
    model: bb.config.modelId, layer: bb.config.layer, pooling: bb.config.pooling, dataset: data,
    settings: { batch: opts.batch, workers: opts.workers, threads: opts.threads, kernel: pre.kernel },
    decodeOnly: { images: n, imagesPerSecond: rate(n, decodeMs) },
    augmentOnly: {
      spec: FINETUNE_DEFAULTS.augment, images: augRounds * srcs.length, msPerImage: Math.round(augMsPerImage * 100) / 100,
      // One augmentation over one image's share of the decode-only wall time (same run): < 1 means augmenting is cheaper.
      perDecodedImage: Math.round((augMsPerImage / (decodeMs / n)) * 100) / 100,
    },
    inferenceOnly: { images: iters * opts.batch, imagesPerSecond: ortRate },
    endToEnd: e2e,
    tfjs: { backend: tfBackendName(), images: k, imagesPerSecond: tfRate, ortSpeedup: Math.round((ortRate / tfRate) * 10) / 10 },
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    target: { endToEndImagesPerSecond: 250 },
  };
}
