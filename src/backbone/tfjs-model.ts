/**
 * TF.js layers models on the local file system, without tfjs-node.
 *
 * - loadLayersModelFromDir / saveLayersModelToDir: custom tf.io.IOHandlers (the built-in file://
 *   handler is only registered by tfjs-node).
 * - readWeights: parses model.json's weightsManifest and the shard bytes in plain Node, no TF.js
 *   (used by the TF.js → ONNX converter).
 *
 * Directory layout (the standard TF.js layers format): model.json with
 * { modelTopology, weightsManifest: [{ paths: [shard files], weights: [{name, shape, dtype, quantization?}] }], ... }.
 * Each group's weights are stored back to back in the concatenation of its shard files, in manifest order.
 */
import { readFile } from 'node:fs/promises';
import { join, isAbsolute } from 'node:path';
import type * as tfTypes from '@tensorflow/tfjs';
import { initTf } from '../util/tf.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { UserError } from '../util/errors.ts';
import { fromHalf } from '../linalg/f16.ts';

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

/** Subset of tf.io.WeightsManifestEntry, typed here so readWeights does not depend on TF.js. */
export interface ManifestWeight {
  name: string;
  shape: number[];
  dtype: string;
  group?: string;
  quantization?: { dtype: string; scale?: number; min?: number; original_dtype?: string };
}
export interface ManifestGroup {
  paths: string[];
  weights: ManifestWeight[];
}

export interface ReadWeight {
  shape: number[];
  /** Always float32 values (int32 weights are converted exactly; |v| > 2^24 is rejected). */
  data: Float32Array;
  /** dtype in the manifest ('float32' | 'int32'); quantised weights report their original dtype. */
  dtype: 'float32' | 'int32';
}

// ---------------------------------------------------------------------------------------------
// model.json

interface ModelJsonFile {
  modelTopology: unknown;
  weightsManifest: ManifestGroup[];
  format?: string;
  generatedBy?: string;
  convertedBy?: string | null;
  trainingConfig?: unknown;
  userDefinedMetadata?: Record<string, unknown>;
  [k: string]: unknown;
}

async function readModelJson(dir: string): Promise<ModelJsonFile> {
  const path = join(dir, MODEL_JSON);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError(`no ${MODEL_JSON} in ${dir}`);
    throw e;
  }
  let json: ModelJsonFile;
  try {
    json = JSON.parse(text) as ModelJsonFile;
  } catch (e) {
    throw new UserError(`${path}: invalid JSON (${(e as Error).message})`);
  }
  if (json == null || typeof json !== 'object' || json.modelTopology == null) {
    throw new UserError(`${path}: not a TF.js layers model (no modelTopology)`);
  }
  if (!Array.isArray(json.weightsManifest)) throw new UserError(`${path}: no weightsManifest`);
  for (const g of json.weightsManifest) {
    if (!Array.isArray(g?.paths) || !Array.isArray(g?.weights))
      throw new UserError(`${path}: malformed weightsManifest group`);
  }
  return json;
}

/** Concatenated bytes of one manifest group's shard files. */
async function readGroupBytes(dir: string, group: ManifestGroup): Promise<Buffer> {
  const parts = await Promise.all(
    group.paths.map(async (p) => {
      if (isAbsolute(p) || /^[a-z]+:\/\//i.test(p))
        throw new UserError(`weight shard path must be relative to model.json: ${p}`);
      try {
        return await readFile(join(dir, p));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError(`missing weight shard ${join(dir, p)}`);
        throw e;
      }
    }),
  );
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------
// TF.js IOHandlers

/** A tf.io.IOHandler that loads a layers model (model.json + shards) from a local directory. */
export function dirLoadHandler(dir: string): tfTypes.io.IOHandler {
  return {
    async load(): Promise<tfTypes.io.ModelArtifacts> {
      const json = await readModelJson(dir);
      const groups = await Promise.all(json.weightsManifest.map((g) => readGroupBytes(dir, g)));
      const total = groups.reduce((n, b) => n + b.byteLength, 0);
      // One fresh ArrayBuffer: Buffers from readFile may be views into a larger (pooled) buffer.
      const weightData = new Uint8Array(total);
      let off = 0;
      for (const b of groups) {
        weightData.set(b, off);
        off += b.byteLength;
      }
      const artifacts: tfTypes.io.ModelArtifacts = {
        modelTopology: json.modelTopology as {},
        weightSpecs: json.weightsManifest.flatMap((g) => g.weights) as tfTypes.io.WeightsManifestEntry[],
        weightData: weightData.buffer,
      };
      if (json.format != null) artifacts.format = json.format;
      if (json.generatedBy != null) artifacts.generatedBy = json.generatedBy;
      if (json.convertedBy != null) artifacts.convertedBy = json.convertedBy;
      if (json.trainingConfig != null) artifacts.trainingConfig = json.trainingConfig as tfTypes.io.TrainingConfig;
      if (json.userDefinedMetadata != null)
        artifacts.userDefinedMetadata = json.userDefinedMetadata as { [k: string]: {} };
      return artifacts;
    },
  };
}

/**
 * A tf.io.IOHandler that saves to `dir`/model.json + `dir`/weights.bin (one shard). Each file is
 * written to a temp file and renamed; weights.bin goes first so model.json never points at
 * missing bytes.
 */
export function dirSaveHandler(dir: string): tfTypes.io.IOHandler {
  return {
    async save(artifacts: tfTypes.io.ModelArtifacts): Promise<tfTypes.io.SaveResult> {
      if (artifacts.modelTopology instanceof ArrayBuffer) {
        throw new Error('saveLayersModelToDir: binary (GraphDef) topologies are not supported');
      }
      const tf = await initTf();
      const specs = artifacts.weightSpecs ?? [];
      const data = artifacts.weightData;
      const bytes: ArrayBuffer =
        data == null ? new ArrayBuffer(0) : Array.isArray(data) ? tf.io.CompositeArrayBuffer.join(data) : data;
      const modelJson: Record<string, unknown> = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy ?? null,
        weightsManifest: [{ paths: [WEIGHTS_BIN], weights: specs }],
      };
      if (artifacts.trainingConfig != null) modelJson.trainingConfig = artifacts.trainingConfig;
      if (artifacts.userDefinedMetadata != null) modelJson.userDefinedMetadata = artifacts.userDefinedMetadata;
      writeFileAtomic(join(dir, WEIGHTS_BIN), new Uint8Array(bytes));
      writeFileAtomic(join(dir, MODEL_JSON), JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    },
  };
}

/** Load a TF.js layers model from a directory (initialises the TF.js backend if needed). */
export async function loadLayersModelFromDir(
  dir: string,
  opts: { strict?: boolean } = {},
): Promise<tfTypes.LayersModel> {
  const tf = await initTf();
  return tf.loadLayersModel(dirLoadHandler(dir), { strict: opts.strict ?? true });
}

/** Save a layers model as `dir`/model.json + `dir`/weights.bin (directory created if missing). */
export async function saveLayersModelToDir(model: tfTypes.LayersModel, dir: string): Promise<tfTypes.io.SaveResult> {
  await initTf();
  return model.save(dirSaveHandler(dir));
}

// ---------------------------------------------------------------------------------------------
// readWeights: manifest + shard bytes → Float32Arrays, plain Node

const BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 };

/** Bytes a manifest entry occupies in its group's buffer. */
export function manifestWeightByteLength(w: ManifestWeight): number {
  const size = w.shape.reduce((a, b) => a * b, 1);
  const storage = w.quantization ? w.quantization.dtype : w.dtype;
  const per = BYTES[storage];
  if (per == null) throw new UserError(`weight ${w.name}: unsupported dtype ${storage}`);
  return size * per;
}

/**
 * Read every weight of a TF.js model directory without TF.js. Names are the manifest names
 * (e.g. 'conv1/kernel'); shapes as in the manifest (conv kernels HWIO, depthwise HWC1).
 * Quantised weights (uint8/uint16 with scale/min, or float16) are dequantised to float32.
 */
export async function readWeights(dir: string): Promise<Map<string, ReadWeight>> {
  const json = await readModelJson(dir);
  const out = new Map<string, ReadWeight>();
  for (const group of json.weightsManifest) {
    const buf = await readGroupBytes(dir, group);
    let off = 0;
    for (const w of group.weights) {
      if (out.has(w.name)) throw new UserError(`duplicate weight name in manifest: ${w.name}`);
      const n = w.shape.reduce((a, b) => a * b, 1);
      const len = manifestWeightByteLength(w);
      if (off + len > buf.byteLength) {
        throw new UserError(
          `weight ${w.name} needs bytes [${off}, ${off + len}) but its shard group has ${buf.byteLength}`,
        );
      }
      // Copy into a fresh, aligned ArrayBuffer (shard Buffers may be pooled / unaligned views).
      const raw = new Uint8Array(len);
      raw.set(buf.subarray(off, off + len));
      off += len;
      out.set(w.name, { shape: [...w.shape], ...decodeWeight(w, raw.buffer, n) });
    }
    if (off !== buf.byteLength) {
      throw new UserError(
        `shard group [${group.paths.join(', ')}] has ${buf.byteLength} bytes but its weights use ${off}`,
      );
    }
  }
  return out;
}

/** Values are little-endian (TF.js format, and every platform Node runs on). */
function decodeWeight(
  w: ManifestWeight,
  bytes: ArrayBuffer,
  n: number,
): { data: Float32Array; dtype: 'float32' | 'int32' } {
  const q = w.quantization;
  const dtype = (q?.original_dtype ?? w.dtype) as string;
  if (dtype !== 'float32' && dtype !== 'int32') throw new UserError(`weight ${w.name}: unsupported dtype ${dtype}`);
  let data: Float32Array;
  if (q == null) {
    if (w.dtype === 'float32') data = new Float32Array(bytes);
    else data = int32ToFloat32(new Int32Array(bytes), w.name);
  } else if (q.dtype === 'float16') {
    data = new Float32Array(n);
    fromHalf(new Uint16Array(bytes).subarray(0, n), data);
  } else if (q.dtype === 'uint8' || q.dtype === 'uint16') {
    if (typeof q.scale !== 'number' || typeof q.min !== 'number') {
      throw new UserError(`weight ${w.name}: ${q.dtype} quantization needs numeric scale and min`);
    }
    const src = q.dtype === 'uint8' ? new Uint8Array(bytes) : new Uint16Array(bytes);
    data = new Float32Array(n);
    const { scale, min } = q;
    // Same formula as tf.io.decodeWeights; int32 originals are rounded like TF.js does.
    if (dtype === 'int32') for (let i = 0; i < n; i++) data[i] = Math.round(src[i]! * scale + min);
    else for (let i = 0; i < n; i++) data[i] = src[i]! * scale + min;
  } else {
    throw new UserError(`weight ${w.name}: unsupported quantization dtype ${q.dtype}`);
  }
  return { data, dtype };
}

function int32ToFloat32(src: Int32Array, name: string): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    if (v > 16777216 || v < -16777216) throw new UserError(`weight ${name}: int32 value ${v} is not exact in float32`);
    out[i] = v;
  }
  return out;
}
