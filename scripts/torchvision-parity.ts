/**
 * Dev check (never part of npm test): torchvision exports through convcache's default cut give PyTorch's
 * pooled features. Runs scripts/torchvision_parity.py (needs python3-torch + python3-torchvision) when
 * the exports are missing, then for each architecture wraps the .onnx exactly as extract does (uint8
 * NHWC input, in-graph ImageNet normalisation, the default cut and pooling) and compares with the
 * features PyTorch's model.avgpool produced for the same image bytes. Writes data/bench/onnx-parity.json.
 *
 *   node --import tsx scripts/torchvision-parity.ts [--dir /tmp/convcache-parity] [--python /usr/bin/python3]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultOnnxCut } from '../src/backbone/onnx-cut.ts';
import { importOnnx } from '../src/backbone/onnx-import.ts';
import type { Pooling } from '../src/backbone/convert.ts';
import { describeOnnx } from '../src/onnx/read.ts';
import { IMAGENET_ONNX_PREPROCESSING } from '../src/backbone/onnx-config.ts';
import { decodeNpy } from '../src/store/npy.ts';
import { writeFileAtomic } from '../src/util/atomic.ts';
import { benchResultsDir, packageRoot } from '../src/util/paths.ts';
import { sharedDir } from '../test/helpers.ts';

const ARCHS = ['efficientnet_b0', 'mobilenet_v3_large', 'regnet_y_400mf', 'resnet18', 'convnext_tiny', 'vit_b_16'];
const { values } = parseArgs({ options: { dir: { type: 'string', default: '/tmp/convcache-parity' }, python: { type: 'string', default: process.env.PYTHON ?? 'python3' } } });
const dir = values.dir!;

if (!ARCHS.every((a) => existsSync(join(dir, a, 'features.npy')))) {
  mkdirSync(dir, { recursive: true });
  const pick = (cls: string) => join(sharedDir(), 'datasets', 'cats-vs-dogs', 'test', cls, readdirSync(join(sharedDir(), 'datasets', 'cats-vs-dogs', 'test', cls)).sort()[0]!);
  execFileSync(values.python!, [join(packageRoot(), 'scripts', 'torchvision_parity.py'), dir, pick('cats'), pick('dogs')], { stdio: 'inherit' });
}

const ort = await import('onnxruntime-node');
const images = decodeNpy(new Uint8Array(readFileSync(join(dir, 'images.npy'))));
const [n, h, w] = images.shape as [number, number, number, number];
const pre = { ...IMAGENET_ONNX_PREPROCESSING, size: [h, w] as [number, number] };

async function features(model: Uint8Array, tensor: string, pooling: Pooling, batch: Uint8Array, count: number): Promise<Float32Array> {
  const wrapped = importOnnx(model, { featureTensor: tensor, pooling, preprocessing: pre, layout: 'nchw' });
  const session = await ort.InferenceSession.create(wrapped, { intraOpNumThreads: 1 });
  try {
    const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor('uint8', batch, [count, h, w, 3]) });
    return out.features!.data as Float32Array;
  } finally {
    await session.release();
  }
}

const results = [];
for (const arch of ARCHS) {
  const model = new Uint8Array(readFileSync(join(dir, arch, 'model.onnx')));
  const ref = decodeNpy(new Uint8Array(readFileSync(join(dir, arch, 'features.npy'))));
  const cut = defaultOnnxCut(model);
  if (!cut) throw new Error(`${arch}: no default cut`);
  const t0 = Date.now();
  const got = await features(model, cut.tensor, cut.pooling, images.data as Uint8Array, n);
  const ms = Date.now() - t0;
  const want = ref.data as Float32Array;
  let maxAbs = 0, maxRef = 0;
  if (got.length === want.length) for (let i = 0; i < want.length; i++) { maxAbs = Math.max(maxAbs, Math.abs(got[i]! - want[i]!)); maxRef = Math.max(maxRef, Math.abs(want[i]!)); }
  // What the old rule (input of the first GlobalAveragePool) picked, for the record.
  const firstGap = describeOnnx(model).nodes.find((x) => x.opType === 'GlobalAveragePool')?.inputs[0];
  const oldDim = firstGap ? (await features(model, firstGap, 'avg', new Uint8Array(h * w * 3), 1)).length : undefined;
  const maxRel = maxRef > 0 ? maxAbs / maxRef : Infinity;
  const r = {
    arch, defaultCut: cut.tensor, why: cut.why, pooling: cut.pooling,
    featureDim: got.length / n, torchFeatureDim: ref.shape[1], images: n,
    maxAbsDiff: maxAbs, maxRelDiff: maxRel, pass: got.length === want.length && maxRel <= 1e-4,
    firstGlobalAveragePoolDim: oldDim ?? null, ms,
  };
  results.push(r);
  process.stderr.write(`${arch}: cut ${cut.tensor} (${cut.pooling}), D=${r.featureDim} (torch ${r.torchFeatureDim}), max |diff| ${maxAbs.toExponential(2)}, rel ${maxRel.toExponential(2)} ${r.pass ? 'PASS' : 'FAIL'}; first-GAP rule would give D=${oldDim}\n`);
}
const exportLog = existsSync(join(dir, 'export.log')) ? readFileSync(join(dir, 'export.log'), 'utf8') : '';
const report = {
  benchmark: 'onnx-parity',
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, loadavg: loadavg().map((x) => Number(x.toFixed(2))) },
  torch: /torch ([^,\s]+)/.exec(exportLog)?.[1], torchvision: /torchvision ([^,\s]+)/.exec(exportLog)?.[1],
  method: 'torchvision models with random weights (seed 0, BatchNorm statistics from two train-mode passes), torch.onnx.export opset 13; '
    + 'PyTorch features = flatten(model.avgpool output) on (x/255 - mean)/std; convcache = importOnnx at defaultOnnxCut with in-graph normalisation of the same uint8 images. '
    + 'maxRelDiff = max|a - b| / max|b|; pass when <= 1e-4.',
  tolerance: 1e-4,
  results,
};
writeFileAtomic(join(benchResultsDir(), 'onnx-parity.json'), JSON.stringify(report, null, 2) + '\n');
if (!results.every((r) => r.pass)) process.exitCode = 1;
