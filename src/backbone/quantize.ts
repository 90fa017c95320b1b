import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { encodeModel, int64Tensor, type OnnxModel, type OnnxNode, type OnnxTensor } from '../onnx/write.ts';
import { DataType } from '../onnx/schema.ts';
import { atInputSize, loadKerasGraph, type PreparedBackbone } from './backbone.ts';
import { convertKerasGraph } from './convert.ts';
import { readWeights } from './tfjs-model.ts';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import type { Logger } from '../util/log.ts';
import { addPatchGrams, gptqRound, type ConvGeometry } from './gptq.ts';

/**
 * `--precision int8`: the converted conv base with QuantizeLinear/DequantizeLinear (QDQ) pairs that
 * ONNX Runtime fuses into QLinearConv (u8 activations × s8 weights):
 * - weights: per output channel, symmetric, int8 (7-bit magnitude by default: on AVX2 without VNNI,
 *   MLAS's u8s8 kernels add pairs of u8·s8 products in int16, which 8-bit weights can overflow;
 *   the same reason onnxruntime's own quantizer offers reduce_range);
 * - biases: int32 at scale (input scale × weight scale), as the QLinearConv fusion requires;
 * - activations: uint8, asymmetric, ranges = min and an MSE-chosen max over calibration images (a
 *   seeded sample of the training images), quantized where they enter a Conv or a pooling node,
 *   except the inputs of the first FLOAT_LEADING_CONVS convs, which stay float (more accurate and,
 *   with ORT's kernels, faster there);
 * - weights rounded by GPTQ (roundWeights, gptq.ts) instead of to nearest: each channel's rounding
 *   errors are compensated on its remaining weights, for the conv's real input statistics;
 * - then each conv's bias is corrected for the mean shift int8 rounding causes (correctBiases).
 * The int8 graph is cached beside the fp32 one, keyed by the calibration images and these settings.
 */
export type Precision = 'fp32' | 'int8';

/**
 * fp32, by measurement (session 5; quantizer version 3 changes the balance, see README). Version 3
 * (GPTQ rounding, float leading convs, bias correction): feature cosine to fp32 0.99962 on the 1000
 * test photos (min 0.9983), every head within 0.1 pt; inference-only 1.6-2.0x fp32 in the same run;
 * preparation ~19 s of CPU (version 2: 0.9983, kNN +0.4 pt, 1.3-1.4x, ~13.5 s). int8 pays that
 * one-off preparation once per dataset, so the default dataset's first extraction gains little; it
 * also needs the cache's pinned graph at predict time and exists only for converted TF.js models.
 * Version 2 on a loaded machine (3000 default images, CPU seconds): fp32 44.9 / 49.9, int8 with its
 * graph cached 39.4 / 41.8, int8 building its graph 51.1 / 60.6. Tried before bias correction (8-bit
 * weights, test photos): 500 calibration images 0.986; the last conv's weights float 0.987; every
 * depthwise conv's weights float 0.991 but slower than fp32 (12.8 vs 9.2 ms of CPU per image). (Float
 * weights beside QDQ activations need ORT's WeightBiasQuantization transformer disabled: it
 * re-quantizes them per tensor, which put the depthwise variant at cosine 0.59. The float leading
 * convs have no QDQ input, so they are not affected.)
 */
export const DEFAULT_PRECISION: Precision = 'fp32';

/** Bumped when the quantized graph for the same inputs changes. */
export const QUANTIZE_VERSION = 3; // 2: empirical bias correction; 3: GPTQ rounding, float leading convs

const INT8 = 3 as DataType;

export interface QuantizeSettings {
  /** Magnitude bits of the int8 weights (7 avoids u8s8 int16 saturation on AVX2 without VNNI). */
  weightBits: 7 | 8;
}

export const DEFAULT_QUANTIZE: QuantizeSettings = { weightBits: 7 };

/**
 * Leading convs (in graph order) that stay float: their inputs get no Q/DQ pair, so ONNX Runtime
 * runs them as float convs and int8 starts after them. Measured (MobileNet v1 0.75 at 288 px,
 * GPTQ + bias correction, feature cosine to fp32 on 200 held-out training images; inference-only
 * img/s relative to fp32 in the same run, loaded machine):
 * 0 float convs 0.99856 (min 0.9919), 1.23-1.32x; 1 (conv1) 0.99865 (0.9938), 1.69x;
 * 2 (+ conv_dw_1) 0.99918 (0.9972), 1.69-1.86x; 3 (+ conv_pw_1) 0.99946 (0.9986), 1.51-1.56x;
 * 4 (+ conv_dw_2) 0.99962 (0.9992), 1.81x; 5 (+ conv_pw_2) 0.99965 (0.9994), 1.47x.
 * Quantizing the 3-channel input and the 144x144 activations costs most of the error (one at a
 * time: conv_dw_1's input alone 0.99924), and ORT's int8 kernels are slower than its float ones
 * there (the 3-channel first conv above all).
 */
export const FLOAT_LEADING_CONVS = 4;

/**
 * Activation tensors that get a Q/DQ pair: inputs of Conv and pooling nodes, except the inputs of
 * the first `floatLeadingConvs` convs.
 */
export function quantizedActivations(model: OnnxModel, floatLeadingConvs = FLOAT_LEADING_CONVS): string[] {
  const inits = new Set(model.graph.initializers.map((t) => t.name));
  const float = new Set(
    model.graph.nodes
      .filter((n) => n.opType === 'Conv')
      .slice(0, floatLeadingConvs)
      .map((n) => n.inputs[0]!),
  );
  const out = new Set<string>();
  for (const n of model.graph.nodes) {
    const x = n.inputs[0]!;
    if (
      ['Conv', 'GlobalAveragePool', 'GlobalMaxPool', 'MaxPool', 'AveragePool'].includes(n.opType) &&
      !inits.has(x) &&
      !float.has(x)
    )
      out.add(x);
  }
  return [...out];
}

/**
 * Activation ranges from calibration batches: min/max, plus a strided sample of each tensor from
 * which the upper end is chosen to minimise the mean squared quantization error (clipping a few
 * outliers buys a finer step for everything else: with plain min/max every ReLU6 layer spans
 * 0..6 and MobileNet's int8 features fell to cosine ~0.96 of fp32).
 */
export class RangeObserver {
  private readonly minMax = new Map<string, [number, number]>();
  private readonly samples = new Map<string, number[]>();

  constructor(private readonly perBatch = 4096) {}

  observe(name: string, data: Float32Array): void {
    let lo = Infinity,
      hi = -Infinity;
    for (let i = 0; i < data.length; i++) {
      const v = data[i]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    this.observeMinMax(name, lo, hi);
    this.observeSample(name, data);
  }

  /** The tensor's min and max (computed elsewhere, e.g. inside the graph). */
  observeMinMax(name: string, lo: number, hi: number): void {
    const r = this.minMax.get(name);
    this.minMax.set(name, r ? [Math.min(r[0], lo), Math.max(r[1], hi)] : [lo, hi]);
  }

  /** Values of the tensor (all, or a subsample) for the MSE clip: up to `perBatch` of them are kept. */
  observeSample(name: string, data: Float32Array): void {
    const s = this.samples.get(name) ?? [];
    const n = Math.min(this.perBatch, data.length);
    // A prime stride walks across channels and positions instead of one channel's plane.
    for (let k = 0; k < n; k++) s.push(data[(k * 7919 + s.length) % data.length]!);
    this.samples.set(name, s);
  }

  get size(): number {
    return this.minMax.size;
  }

  /** [lo, hi] per tensor: lo = min (<= 0), hi = the MSE-optimal clip among 64 candidates up to max. */
  ranges(): Map<string, [number, number]> {
    const out = new Map<string, [number, number]>();
    for (const [name, [lo0, hi0]] of this.minMax) {
      const lo = Math.min(0, lo0),
        hi = Math.max(0, hi0);
      const xs = Float64Array.from(this.samples.get(name) ?? []);
      if (lo < 0 || xs.length === 0 || hi === 0) {
        out.set(name, [lo, hi]);
        continue;
      } // signed tensors: min/max
      let best = hi,
        bestErr = Infinity;
      for (let c = 64; c >= 1; c--) {
        const h = (hi * c) / 64;
        const step = h / 255;
        let err = 0;
        for (let i = 0; i < xs.length; i++) {
          const v = xs[i]!;
          const q = v >= h ? h : Math.round(v / step) * step;
          err += (q - v) * (q - v);
        }
        if (err < bestErr) {
          bestErr = err;
          best = h;
        }
      }
      out.set(name, [lo, best]);
    }
    return out;
  }
}

function tensor(
  name: string,
  dataType: DataType,
  dims: readonly number[],
  data: Float32Array | Int32Array | Int8Array | Uint8Array,
): OnnxTensor {
  return { name, dataType, dims, raw: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** uint8 asymmetric scale/zero point covering [min(lo,0), max(hi,0)]. */
export function activationQuant(lo: number, hi: number): { scale: number; zeroPoint: number } {
  lo = Math.min(lo, 0);
  hi = Math.max(hi, 0);
  const scale = hi - lo > 0 ? (hi - lo) / 255 : 1;
  const zeroPoint = Math.min(255, Math.max(0, Math.round(-lo / scale)));
  return { scale, zeroPoint };
}

/**
 * Per-output-channel scales of a conv's int8 weights (cout rows of wf): max |w| / qmax, floored for
 * dead channels. `bf` is the float bias and `xs` the input's activation scale.
 */
export function weightScales(
  wf: Float32Array,
  cout: number,
  qmax: number,
  bf: Float32Array | undefined,
  xs: number,
): Float32Array {
  const per = wf.length / cout;
  const ws = new Float32Array(cout);
  for (let o = 0; o < cout; o++) {
    let m = 0;
    for (let i = 0; i < per; i++) m = Math.max(m, Math.abs(wf[o * per + i]!));
    // Dead channels (BN-folded weights ~1e-15) would put the int32 bias scale (xs * ws) so
    // low that the bias overflows int32: floor the weight scale so the bias fits in 2^30.
    ws[o] = Math.max(m / qmax, bf ? Math.abs(bf[o]!) / (xs * 2 ** 30) : 0, 1e-30) || 1;
  }
  return ws;
}

/** The convs that get int8 weights: a calibrated (uint8) input and weights from an initializer. */
function isQuantizedConv(
  n: OnnxNode,
  ranges: ReadonlyMap<string, [number, number]>,
  inits: ReadonlyMap<string, OnnxTensor>,
): boolean {
  return n.opType === 'Conv' && ranges.has(n.inputs[0]!) && inits.has(n.inputs[1]!);
}

const floatsOf = (t: OnnxTensor): Float32Array => new Float32Array(t.raw.slice().buffer);

/**
 * A quantized conv's float weights and bias with its per-channel int8 weight scales: one place, so
 * that GPTQ (roundWeights) rounds at exactly the scales quantizeQdq writes.
 */
function convWeights(
  n: OnnxNode,
  ranges: ReadonlyMap<string, [number, number]>,
  inits: ReadonlyMap<string, OnnxTensor>,
  qmax: number,
): { w: OnnxTensor; wf: Float32Array; cout: number; bf: Float32Array | undefined; xs: number; scales: Float32Array } {
  const w = inits.get(n.inputs[1]!)!;
  const wf = floatsOf(w);
  const cout = w.dims[0]!;
  const bName = n.inputs[2];
  const bf = bName && inits.has(bName) ? floatsOf(inits.get(bName)!) : undefined;
  const xs = activationQuant(...ranges.get(n.inputs[0]!)!).scale;
  return { w, wf, cout, bf, xs, scales: weightScales(wf, cout, qmax, bf, xs) };
}

/**
 * `model` with nodes and initializers appended and `outputs` added after its own (with `only`, as
 * its only outputs): the calibration, bias-correction and GPTQ passes read intermediate tensors so.
 */
function extendGraph(
  model: OnnxModel,
  add: { nodes?: readonly OnnxNode[]; initializers?: readonly OnnxTensor[]; outputs: readonly OnnxValueInfoLike[] },
  only = false,
): OnnxModel {
  return {
    ...model,
    graph: {
      ...model.graph,
      nodes: [...model.graph.nodes, ...(add.nodes ?? [])],
      initializers: [...model.graph.initializers, ...(add.initializers ?? [])],
      outputs: only ? [...add.outputs] : [...model.graph.outputs, ...add.outputs],
    },
  };
}

/**
 * Insert QDQ pairs for activations (with the given ranges) and quantize Conv weights and biases.
 * `rounded`: int8 weights chosen elsewhere (roundWeights), by weight initializer name, at the
 * scales weightScales gives; other convs' weights are rounded to nearest.
 */
export function quantizeQdq(
  model: OnnxModel,
  ranges: ReadonlyMap<string, [number, number]>,
  settings: QuantizeSettings = DEFAULT_QUANTIZE,
  rounded?: ReadonlyMap<string, Int8Array>,
): OnnxModel {
  const inits = new Map(model.graph.initializers.map((t) => [t.name, t]));
  const newInits: OnnxTensor[] = [];
  const nodes: OnnxNode[] = [];
  // Q/DQ pairs right after the producer of each calibrated activation (or at the top for graph inputs).
  const dqName = (t: string): string => `${t}__dq`;
  const qdqFor = (t: string): OnnxNode[] => {
    const r = ranges.get(t);
    if (!r) return [];
    // Relu/Clip outputs have min 0, hence zero point 0: ORT then drops the Relu/Clip before the Q.
    const { scale, zeroPoint } = activationQuant(r[0], r[1]);
    newInits.push(
      tensor(`${t}__s`, DataType.FLOAT, [], new Float32Array([scale])),
      tensor(`${t}__z`, DataType.UINT8, [], new Uint8Array([zeroPoint])),
    );
    return [
      { opType: 'QuantizeLinear', inputs: [t, `${t}__s`, `${t}__z`], outputs: [`${t}__q`], name: `${t}__quant` },
      {
        opType: 'DequantizeLinear',
        inputs: [`${t}__q`, `${t}__s`, `${t}__z`],
        outputs: [dqName(t)],
        name: `${t}__dequant`,
      },
    ];
  };
  const graphInputs = new Set(model.graph.inputs.map((v) => v.name));
  for (const t of ranges.keys()) if (graphInputs.has(t)) nodes.push(...qdqFor(t));
  const qmax = 2 ** (settings.weightBits - 1) - 1; // 127 or 63
  for (const n of model.graph.nodes) {
    let node = n;
    const x = n.inputs[0];
    if (
      x !== undefined &&
      ranges.has(x) &&
      ['Conv', 'GlobalAveragePool', 'GlobalMaxPool', 'MaxPool', 'AveragePool'].includes(n.opType)
    ) {
      const inputs = [dqName(x), ...n.inputs.slice(1)];
      if (isQuantizedConv(n, ranges, inits)) {
        const { w, wf, cout, bf, xs, scales: ws } = convWeights(n, ranges, inits, qmax);
        const per = wf.length / cout;
        const wq = new Int8Array(wf.length);
        const bName = n.inputs[2];
        const given = rounded?.get(w.name);
        if (given) wq.set(given);
        else
          for (let o = 0; o < cout; o++)
            for (let i = 0; i < per; i++)
              wq[o * per + i] = Math.max(-qmax, Math.min(qmax, Math.round(wf[o * per + i]! / ws[o]!)));
        const wn = `${w.name}__q8`;
        newInits.push(
          tensor(wn, INT8, w.dims, wq),
          tensor(`${wn}_s`, DataType.FLOAT, [cout], ws),
          tensor(`${wn}_z`, INT8, [cout], new Int8Array(cout)),
        );
        nodes.push({
          opType: 'DequantizeLinear',
          inputs: [wn, `${wn}_s`, `${wn}_z`],
          outputs: [`${wn}_dq`],
          name: `${wn}_dequant`,
          attrs: [{ name: 'axis', kind: 'int', value: 0 }],
        });
        inputs[1] = `${wn}_dq`;
        if (bName && bf) {
          const bs = new Float32Array(cout);
          const bq = new Int32Array(cout);
          for (let o = 0; o < cout; o++) {
            bs[o] = xs * ws[o]!;
            bq[o] = Math.round(bf[o]! / bs[o]!);
          }
          const bn = `${bName}__q32`;
          newInits.push(
            tensor(bn, DataType.INT32, [cout], bq),
            tensor(`${bn}_s`, DataType.FLOAT, [cout], bs),
            tensor(`${bn}_z`, DataType.INT32, [cout], new Int32Array(cout)),
          );
          nodes.push({
            opType: 'DequantizeLinear',
            inputs: [bn, `${bn}_s`, `${bn}_z`],
            outputs: [`${bn}_dq`],
            name: `${bn}_dequant`,
            attrs: [{ name: 'axis', kind: 'int', value: 0 }],
          });
          inputs[2] = `${bn}_dq`;
        }
      }
      node = { ...n, inputs };
    }
    nodes.push(node);
    for (const o of n.outputs) if (ranges.has(o)) nodes.push(...qdqFor(o));
  }
  // Drop the float weights/biases no node reads any more.
  const used = new Set(nodes.flatMap((n) => n.inputs));
  const initializers = [...model.graph.initializers.filter((t) => used.has(t.name)), ...newInits];
  return { ...model, graph: { ...model.graph, nodes, initializers } };
}

/** The fp32 graph of a prepared TF.js backbone as an OnnxModel (re-converted: deterministic and cheap). */
export async function convertedModel(b: PreparedBackbone): Promise<OnnxModel> {
  if (b.config.modelFormat !== 'tfjs-layers')
    throw new UserError(
      '--precision int8 is available for TF.js layers models (converted by convcache); run foreign .onnx models with --precision fp32',
    );
  const { layer, pooling, preprocessing } = b.config;
  const { graph } = atInputSize(loadKerasGraph(b.resolved.location), preprocessing.size, layer);
  const weights = await readWeights(b.resolved.location);
  return convertKerasGraph(graph, weights, {
    layer,
    pooling,
    preprocessing,
    metadata: {
      'convcache.model': b.config.modelId,
      'convcache.weightsHash': b.config.weightsHash,
      'convcache.layer': layer,
      'convcache.pooling': pooling,
    },
  }).model;
}

/**
 * Calibration images the bias correction measures on (the first of the seeded sample). Measured
 * (MobileNet v1 0.75 at 288 px, feature cosine to fp32 on 200 held-out training images): 16 images
 * 0.99832 (min 0.9909), 32: 0.99836 (0.9913), 64: 0.99836 (0.9922), 200: 0.9983. Each conv's
 * correction is one int8 pass up to that conv over these images, in a session of its own.
 */
export const BIAS_CORRECTION_IMAGES = 32;

export interface Int8Options {
  /** Calibration images as model-input pixels (H*W*3 each), produced on demand. */
  calibration: { keys: readonly string[]; pixels: () => AsyncIterable<Uint8Array> };
  threads: number;
  settings?: QuantizeSettings;
  log: Logger;
}

/** Path of the int8 graph beside the fp32 one, for these calibration images and settings. */
export function int8PathFor(
  onnxPath: string,
  calibrationKeys: readonly string[],
  settings: QuantizeSettings = DEFAULT_QUANTIZE,
): string {
  const key = createHash('sha256')
    .update(JSON.stringify({ v: QUANTIZE_VERSION, settings, calib: [...calibrationKeys].sort() }))
    .digest('hex')
    .slice(0, 12);
  return onnxPath.replace(/\.onnx$/, '') + `-int8-${key}.onnx`;
}

/** Calibrate and write the int8 graph (or reuse the cached one); returns its path. */
export async function prepareInt8(b: PreparedBackbone, opts: Int8Options): Promise<string> {
  const settings = opts.settings ?? DEFAULT_QUANTIZE;
  const path = int8PathFor(b.onnxPath, opts.calibration.keys, settings);
  if (existsSync(path)) return path;
  const model = await convertedModel(b);
  const acts = quantizedActivations(model);
  opts.log.info(
    `int8: calibrating ${acts.length} activation ranges on ${opts.calibration.keys.length} training images ...`,
  );
  const images: Uint8Array[] = [];
  for await (const px of opts.calibration.pixels()) images.push(px);
  const size = b.config.preprocessing.size;
  const ranges = await calibrate(model, acts, size, images, opts.threads);
  const rw = images.slice(0, ROUNDING_IMAGES);
  opts.log.info(`int8: rounding the weights (GPTQ) on ${rw.length} of them ...`);
  const rounded = await roundWeights(model, ranges, settings, size, rw, opts.threads);
  const bc = images.slice(0, BIAS_CORRECTION_IMAGES);
  opts.log.info(`int8: correcting the biases of the quantized convs on ${bc.length} of them ...`);
  const corrected = await correctBiases(model, ranges, settings, size, bc, opts.threads, rounded);
  writeFileAtomic(path, encodeModel(quantizeQdq(corrected, ranges, settings, rounded)));
  return path;
}

/** Run `model` over the images in batches of 8, handing each batch's named outputs to `each`. */
async function runBatches(
  model: OnnxModel,
  outputs: readonly string[],
  size: readonly [number, number],
  images: readonly Uint8Array[],
  threads: number,
  each: (out: Record<string, Float32Array>, shapes: Record<string, readonly number[]>) => void,
  // 'basic': no QDQ fusion, so a quantized graph runs as its exact float simulation; 'all': as extract runs it.
  level: 'basic' | 'all' = 'basic',
): Promise<void> {
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(encodeModel(model), {
    intraOpNumThreads: threads,
    graphOptimizationLevel: level,
    enableMemPattern: false,
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  });
  const [h, w] = size;
  const per = h * w * 3;
  // Batches of 8: the peak RSS of an int8 extraction that builds its graph (3000 images) was 920 MiB with 16,
  // 583 with 8 (an fp32 extraction: 680).
  const B = 8;
  const batch = new Uint8Array(B * per);
  try {
    for (let s = 0; s < images.length; s += B) {
      const n = Math.min(B, images.length - s);
      for (let i = 0; i < n; i++) batch.set(images[s + i]!, i * per);
      const out = await session.run(
        { [session.inputNames[0]!]: new ort.Tensor('uint8', batch.subarray(0, n * per), [n, h, w, 3]) },
        outputs as string[],
      );
      each(
        Object.fromEntries(outputs.map((o) => [o, out[o]!.data as Float32Array])),
        Object.fromEntries(outputs.map((o) => [o, out[o]!.dims])),
      );
    }
  } finally {
    await session.release();
  }
}

/** Stride over each activation's last two (spatial) axes for the sample the MSE clip is chosen from. */
const SAMPLE_STRIDE = 3;

/**
 * The calibration graph: for each activation, its min and max (ReduceMin/ReduceMax over the whole
 * batch tensor) and a spatially strided copy (Slice, every 3rd row and column) as extra outputs.
 * Copying every full activation out instead cost ~10x the inference itself (fresh buffers per batch).
 */
export function withCalibrationOutputs(model: OnnxModel, acts: readonly string[]): OnnxModel {
  const nodes: OnnxNode[] = [];
  const outputs: OnnxValueInfoLike[] = [];
  const big = 2 ** 31 - 1;
  const inits = [
    int64Tensor('calib__starts', [0, 0]),
    int64Tensor('calib__ends', [big, big]),
    int64Tensor('calib__axes', [-2, -1]),
    int64Tensor('calib__steps', [SAMPLE_STRIDE, SAMPLE_STRIDE]),
  ];
  for (const t of acts) {
    for (const op of ['ReduceMin', 'ReduceMax'] as const) {
      const out = `${t}__${op === 'ReduceMin' ? 'min' : 'max'}`;
      nodes.push({
        opType: op,
        inputs: [t],
        outputs: [out],
        name: out,
        attrs: [{ name: 'keepdims', kind: 'int', value: 0 }],
      });
      outputs.push({ name: out, dataType: DataType.FLOAT, shape: [] });
    }
    nodes.push({
      opType: 'Slice',
      inputs: [t, 'calib__starts', 'calib__ends', 'calib__axes', 'calib__steps'],
      outputs: [`${t}__sample`],
      name: `${t}__sample`,
    });
    outputs.push({ name: `${t}__sample`, dataType: DataType.FLOAT, shape: ['n', 'c', 'h', 'w'] });
  }
  return extendGraph(model, { nodes, initializers: inits, outputs });
}

/** Min/max (and an MSE-optimal clip) of each activation over the calibration images, on the fp32 graph. */
export async function calibrate(
  model: OnnxModel,
  acts: readonly string[],
  size: readonly [number, number],
  images: readonly Uint8Array[],
  threads: number,
): Promise<Map<string, [number, number]>> {
  const obs = new RangeObserver();
  const names = acts.flatMap((a) => [`${a}__min`, `${a}__max`, `${a}__sample`]);
  await runBatches(
    withCalibrationOutputs(model, acts),
    names,
    size,
    images,
    threads,
    (out) => {
      for (const a of acts) {
        obs.observeMinMax(a, out[`${a}__min`]![0]!, out[`${a}__max`]![0]!);
        obs.observeSample(a, out[`${a}__sample`]!);
      }
    },
    // ORT's fused, NCHWc-blocked float kernels (as extract runs fp32): the same ranges as 'basic', less CPU.
    'all',
  );
  if (obs.size === 0) throw new UserError('int8 calibration needs at least one decodable training image');
  return obs.ranges();
}

/**
 * The nodes (and initializers) `outputs` depend on, with `outputs` as the graph's only outputs: a
 * bias-correction step for one conv runs the network only up to that conv.
 */
export function prefixGraph(model: OnnxModel, outputs: readonly OnnxValueInfoLike[]): OnnxModel {
  const producer = new Map<string, OnnxNode>();
  for (const n of model.graph.nodes) for (const o of n.outputs) producer.set(o, n);
  const keep = new Set<OnnxNode>();
  const todo = outputs.map((o) => o.name);
  while (todo.length > 0) {
    const n = producer.get(todo.pop()!);
    if (!n || keep.has(n)) continue;
    keep.add(n);
    todo.push(...n.inputs);
  }
  const nodes = model.graph.nodes.filter((n) => keep.has(n));
  const used = new Set(nodes.flatMap((n) => n.inputs));
  return {
    ...model,
    graph: {
      ...model.graph,
      nodes,
      initializers: model.graph.initializers.filter((t) => used.has(t.name)),
      outputs: [...outputs],
    },
  };
}

type OnnxValueInfoLike = OnnxModel['graph']['outputs'][number];

/** `model` plus, for each named NCHW tensor, a `<name>__chmean` output: its mean per image and channel [n, c]. */
export function withChannelMeans(model: OnnxModel, tensors: readonly string[]): OnnxModel {
  const nodes: OnnxNode[] = tensors.map((t) => ({
    opType: 'ReduceMean', // opset 13: axes is an attribute
    inputs: [t],
    outputs: [`${t}__chmean`],
    name: `${t}__chmean`,
    attrs: [
      { name: 'axes', kind: 'ints', value: [2, 3] },
      { name: 'keepdims', kind: 'int', value: 0 },
    ],
  }));
  return extendGraph(model, {
    nodes,
    outputs: tensors.map((t) => ({ name: `${t}__chmean`, dataType: DataType.FLOAT, shape: ['n', 'c'] })),
  });
}

/** Mean over the images of each tensor's per-channel means (float64 sums). */
async function channelMeans(
  model: OnnxModel,
  tensors: readonly string[],
  images: readonly Uint8Array[],
  opts: { size: readonly [number, number]; threads: number; level: 'basic' | 'all'; prefix?: boolean },
): Promise<Map<string, Float64Array>> {
  let m = withChannelMeans(model, tensors);
  const names = tensors.map((t) => `${t}__chmean`);
  if (opts.prefix)
    m = prefixGraph(
      m,
      m.graph.outputs.filter((o) => names.includes(o.name)),
    );
  const sums = new Map<string, Float64Array>();
  let count = 0;
  await runBatches(
    m,
    names,
    opts.size,
    images,
    opts.threads,
    (out, shapes) => {
      for (const [k, name] of names.entries()) {
        const [n, c] = shapes[name]! as [number, number];
        const d = out[name]!;
        const s = sums.get(tensors[k]!) ?? new Float64Array(c);
        for (let i = 0; i < n; i++) for (let ch = 0; ch < c; ch++) s[ch] += d[i * c + ch]!;
        sums.set(tensors[k]!, s);
      }
      count += shapes[names[0]!]![0]!;
    },
    opts.level,
  );
  for (const s of sums.values()) for (let i = 0; i < s.length; i++) s[i]! /= count;
  return sums;
}

/**
 * Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", §4.2; as in AIMET and
 * Finkelstein et al. 2019): rounding the weights shifts each output channel's mean (most in the
 * depthwise convs, which have 9 weights per channel), and ReLU6 turns the shifts into errors that
 * grow layer after layer. Conv by conv, in graph order, add E[y_fp32 − y_int8] over the calibration
 * images to the conv's bias, measured on the int8 graph as extract runs it, with every earlier conv
 * already corrected (so each correction also absorbs the drift arriving from upstream).
 * Measured (MobileNet v1 0.75 at 288 px, 200 held-out training images): feature cosine to fp32
 * 0.984 -> 0.998 with 8-bit weights, 0.964 -> 0.997 with 7-bit. Returns the float model with
 * corrected biases.
 */
export async function correctBiases(
  model: OnnxModel,
  ranges: ReadonlyMap<string, [number, number]>,
  settings: QuantizeSettings,
  size: readonly [number, number],
  images: readonly Uint8Array[],
  threads: number,
  rounded?: ReadonlyMap<string, Int8Array>,
): Promise<OnnxModel> {
  const inits = new Map(model.graph.initializers.map((t) => [t.name, t]));
  const convs = model.graph.nodes.filter(
    (n) => isQuantizedConv(n, ranges, inits) && n.inputs[2] !== undefined && inits.has(n.inputs[2]),
  );
  if (convs.length === 0 || images.length === 0) return model;
  const reference = await channelMeans(
    model,
    convs.map((c) => c.outputs[0]!),
    images,
    { size, threads, level: 'all' },
  );
  const biases = new Map(convs.map((c) => [c.inputs[2]!, floatsOf(inits.get(c.inputs[2]!)!)]));
  // Weights are quantized once; each step re-rounds only the int32 biases (at their scale in the graph).
  const q0 = quantizeQdq(model, ranges, settings, rounded);
  const q0Inits = new Map(q0.graph.initializers.map((t) => [t.name, t]));
  const withQuantizedBiases = (): OnnxModel => ({
    ...q0,
    graph: {
      ...q0.graph,
      initializers: q0.graph.initializers.map((t) => {
        const b = t.name.endsWith('__q32') ? biases.get(t.name.slice(0, -'__q32'.length)) : undefined;
        if (!b) return t;
        const scale = floatsOf(q0Inits.get(`${t.name}_s`)!);
        return { ...t, raw: new Uint8Array(Int32Array.from(b, (v, o) => Math.round(v / scale[o]!)).buffer) };
      }),
    },
  });
  for (const c of convs) {
    const y = c.outputs[0]!;
    // 'all': the earlier convs run fused (QLinearConv), exactly as in extract; this conv's output is
    // a graph output here, which keeps it unfused: the float conv of int8-rounded inputs and weights.
    const quantized = await channelMeans(withQuantizedBiases(), [y], images, {
      size,
      threads,
      level: 'all',
      prefix: true,
    });
    const b = biases.get(c.inputs[2]!)!;
    const want = reference.get(y)!,
      got = quantized.get(y)!;
    for (let o = 0; o < b.length; o++) b[o] = b[o]! + (want[o]! - got[o]!);
  }
  return {
    ...model,
    graph: {
      ...model.graph,
      initializers: model.graph.initializers.map((t) => {
        const b = biases.get(t.name);
        return b ? { ...t, raw: new Uint8Array(b.slice().buffer) } : t;
      }),
    },
  };
}

/** Geometry of a Conv node (ONNX attributes with their defaults for a 2-D conv). */
function convGeometry(n: OnnxNode, weightDims: readonly number[]): ConvGeometry {
  const ints = (name: string, dflt: number[]): number[] =>
    (n.attrs?.find((a) => a.name === name)?.value as number[] | undefined) ?? dflt;
  const group = n.attrs?.find((a) => a.name === 'group')?.value as number | undefined;
  const k = ints('kernel_shape', [weightDims[2]!, weightDims[3]!]);
  const s = ints('strides', [1, 1]);
  const p = ints('pads', [0, 0, 0, 0]);
  return { kernel: [k[0]!, k[1]!], strides: [s[0]!, s[1]!], pads: [p[0]!, p[1]!, p[2]!, p[3]!], group: group ?? 1 };
}

/**
 * Images whose conv inputs give the Gram matrices for GPTQ rounding: the first of the seeded
 * calibration sample, and fewer for the 3×3 convs, whose 9-wide patches are many per image and
 * summed in JS. Measured (float first convs, held-out training images): 32 and 64 images gave the
 * same fidelity (0.99962 / 0.99963 mean cosine); 3×3 patches from 8 images instead of 32 the same
 * mean (min 0.99936 vs 0.99919) at a quarter of the cost (~11 s of the preparation's CPU).
 */
export const ROUNDING_IMAGES = 32;
export const PATCH_ROUNDING_IMAGES = 8;

/**
 * GPTQ rounding (gptq.ts) of every quantized conv's weights: the Gram matrix of each conv's input
 * patches, measured on the float graph (1×1 convs: a MatMul inside the graph, over `images`; 3×3
 * depthwise and other convs: patches summed in JS, over the first PATCH_ROUNDING_IMAGES), then
 * each output channel rounded to minimise its output error on those inputs. Returns int8 weights by
 * weight initializer name, at weightScales' scales, for quantizeQdq.
 */
export async function roundWeights(
  model: OnnxModel,
  ranges: ReadonlyMap<string, [number, number]>,
  settings: QuantizeSettings,
  size: readonly [number, number],
  images: readonly Uint8Array[],
  threads: number,
): Promise<Map<string, Int8Array>> {
  const inits = new Map(model.graph.initializers.map((t) => [t.name, t]));
  const convs = model.graph.nodes.filter((n) => isQuantizedConv(n, ranges, inits));
  const geometry = new Map(convs.map((c) => [c, convGeometry(c, inits.get(c.inputs[1]!)!.dims)]));
  const isPointwise = (c: OnnxNode): boolean => {
    const g = geometry.get(c)!;
    return g.group === 1 && g.kernel.every((k) => k === 1) && g.strides.every((s) => s === 1);
  };
  const grams = new Map<OnnxNode, Float64Array[]>(convs.map((c) => [c, []]));
  // 1×1 convs: X Xᵀ inside the graph ([n, c, h, w] -> [c, n·h·w] -> [c, c]).
  const pointwise = convs.filter(isPointwise);
  if (pointwise.length > 0) {
    const nodes: OnnxNode[] = [];
    const shapes: OnnxTensor[] = [];
    for (const c of pointwise) {
      const t = `${c.name}__gram`;
      shapes.push(int64Tensor(`${t}_shape`, [inits.get(c.inputs[1]!)!.dims[1]!, -1]));
      nodes.push(
        {
          opType: 'Transpose',
          inputs: [c.inputs[0]!],
          outputs: [`${t}_t`],
          name: `${t}_t`,
          attrs: [{ name: 'perm', kind: 'ints', value: [1, 0, 2, 3] }],
        },
        { opType: 'Reshape', inputs: [`${t}_t`, `${t}_shape`], outputs: [`${t}_x`], name: `${t}_x` },
        {
          opType: 'Transpose',
          inputs: [`${t}_x`],
          outputs: [`${t}_xt`],
          name: `${t}_xt`,
          attrs: [{ name: 'perm', kind: 'ints', value: [1, 0] }],
        },
        { opType: 'MatMul', inputs: [`${t}_x`, `${t}_xt`], outputs: [t], name: t },
      );
    }
    const names = pointwise.map((c) => `${c.name}__gram`);
    await runBatches(
      extendGraph(
        model,
        {
          nodes,
          initializers: shapes,
          outputs: names.map((name) => ({ name, dataType: DataType.FLOAT, shape: ['c', 'c'] })),
        },
        true,
      ),
      names,
      size,
      images,
      threads,
      (out) => {
        for (const c of pointwise) {
          const g = out[`${c.name}__gram`]!;
          const acc = (grams.get(c)![0] ??= new Float64Array(g.length));
          for (let i = 0; i < g.length; i++) acc[i] += g[i]!;
        }
      },
      'all',
    );
  }
  // Other convs (3×3 depthwise, the first conv): their input tensors, patches summed in JS.
  const patched = convs.filter((c) => !isPointwise(c));
  if (patched.length > 0) {
    const names = [...new Set(patched.map((c) => c.inputs[0]!))];
    await runBatches(
      extendGraph(
        model,
        { outputs: names.map((name) => ({ name, dataType: DataType.FLOAT, shape: ['n', 'c', 'h', 'w'] })) },
        true,
      ),
      names,
      size,
      images.slice(0, PATCH_ROUNDING_IMAGES),
      threads,
      (out, shapes) => {
        for (const c of patched)
          addPatchGrams(grams.get(c)!, out[c.inputs[0]!]!, shapes[c.inputs[0]!]!, geometry.get(c)!);
      },
      'all',
    );
  }
  const qmax = 2 ** (settings.weightBits - 1) - 1;
  const result = new Map<string, Int8Array>();
  for (const c of convs) {
    const list = grams.get(c)!;
    if (list.length === 0) continue; // no calibration image reached it: round to nearest
    const { w, wf, cout, scales } = convWeights(c, ranges, inits, qmax);
    // One Gram matrix per group: a depthwise conv's output channel sees only its own input channel.
    const perGroup = cout / list.length;
    const d = wf.length / cout;
    const q = new Int8Array(wf.length);
    for (let grp = 0; grp < list.length; grp++) {
      const rows = wf.subarray(grp * perGroup * d, (grp + 1) * perGroup * d);
      const s = scales.subarray(grp * perGroup, (grp + 1) * perGroup);
      q.set(gptqRound(rows, perGroup, d, list[grp]!, s, qmax), grp * perGroup * d);
    }
    result.set(w.name, q);
  }
  return result;
}

/** Cosine similarity of two feature rows (the int8 fidelity measure). */
export function cosine(a: Float32Array, b: Float32Array): number {
  let ab = 0,
    aa = 0,
    bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return aa === 0 || bb === 0 ? (aa === bb ? 1 : 0) : ab / Math.sqrt(aa * bb);
}
