import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { UserError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import type { Pooling } from './convert.ts';
import { describeOnnx, payload, readFields, str } from '../onnx/read.ts';
import { defaultOnnxCut } from './onnx-cut.ts';
import type { Preprocessing } from './preprocess.ts';
import type { OnnxZooEntry } from './onnx-zoo.ts';

/**
 * Preprocessing that travels with a .onnx model (timm's data config, for files). Read, strongest first:
 *   1. a sidecar `<file>.onnx.json` next to the model (our format, below);
 *   2. the model's metadata_props entry `convcache.preprocessing` (same JSON, as a string);
 *   3. a timm `config.json` (its `pretrained_cfg`) or a Hugging Face `preprocessor_config.json` in the
 *      model's folder or the folder above (Hub repos keep ONNX files in onnx/);
 * then the registry entry for known names, then the ImageNet/torchvision convention. Flags beat all.
 *
 * Our format (every key optional):
 *   { "input_size": [224, 224], "resize": "center-crop" | "squash", "crop_pct": 0.875,
 *     "interpolation": "bilinear" | "bicubic" | "nearest" | "lanczos", "mean": [r, g, b], "std": [r, g, b],
 *     "channel_order": "rgb" | "bgr", "layout": "nchw" | "nhwc", "feature_node": "<tensor>", "pooling": "avg" | "max" | "none" }
 */
export interface OnnxDataConfig {
  preprocessing: Partial<Preprocessing>;
  layout?: 'nchw' | 'nhwc';
  featureNode?: string;
  pooling?: Pooling;
  /** Where each part came from, for logs and the manifest. */
  sources: string[];
}

/** torchvision/timm convention for foreign .onnx models unless the model or the user says otherwise. */
export const IMAGENET_ONNX_PREPROCESSING: Preprocessing = {
  size: [224, 224],
  resize: 'center-crop',
  cropPct: 0.875,
  kernel: 'cubic',
  channelOrder: 'rgb',
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
};

export const METADATA_KEY = 'convcache.preprocessing';

const KERNELS: Record<string, Preprocessing['kernel']> = {
  bilinear: 'linear',
  linear: 'linear',
  bicubic: 'cubic',
  cubic: 'cubic',
  nearest: 'nearest',
  lanczos: 'lanczos3',
  lanczos3: 'lanczos3',
};
/** PIL resample codes used by Hugging Face image processors. */
const PIL_RESAMPLE: Record<number, Preprocessing['kernel']> = { 0: 'nearest', 1: 'lanczos3', 2: 'linear', 3: 'cubic' };

function bad(source: string, key: string, v: unknown): never {
  throw new UserError(`${source}: invalid "${key}": ${JSON.stringify(v)}`);
}

function triple(source: string, key: string, v: unknown): [number, number, number] {
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x)))
    bad(source, key, v);
  return v as [number, number, number];
}

/** Parse our JSON format. */
export function parseDataConfig(json: unknown, source: string): OnnxDataConfig {
  if (!json || typeof json !== 'object' || Array.isArray(json))
    throw new UserError(`${source}: expected a JSON object`);
  const o = json as Record<string, unknown>;
  const pre: Partial<Preprocessing> = {};
  const out: OnnxDataConfig = { preprocessing: pre, sources: [source] };
  const known = new Set([
    'input_size',
    'resize',
    'crop_pct',
    'interpolation',
    'mean',
    'std',
    'channel_order',
    'layout',
    'feature_node',
    'pooling',
  ]);
  for (const k of Object.keys(o))
    if (!known.has(k)) throw new UserError(`${source}: unknown key "${k}" (known: ${[...known].join(', ')})`);
  if (o.input_size !== undefined) {
    const s = o.input_size;
    if (!Array.isArray(s) || !(s.length === 2 || s.length === 3) || !s.every((x) => Number.isInteger(x) && x > 0))
      bad(source, 'input_size', s);
    pre.size = [s[s.length - 2], s[s.length - 1]];
  }
  if (o.resize !== undefined) {
    if (o.resize !== 'squash' && o.resize !== 'center-crop') bad(source, 'resize', o.resize);
    pre.resize = o.resize;
  }
  if (o.crop_pct !== undefined) {
    if (typeof o.crop_pct !== 'number' || !(o.crop_pct > 0 && o.crop_pct <= 1)) bad(source, 'crop_pct', o.crop_pct);
    pre.cropPct = o.crop_pct;
  }
  if (o.interpolation !== undefined) {
    const k = KERNELS[String(o.interpolation)];
    if (!k) bad(source, 'interpolation', o.interpolation);
    pre.kernel = k;
  }
  if (o.mean !== undefined) pre.mean = triple(source, 'mean', o.mean);
  if (o.std !== undefined) {
    pre.std = triple(source, 'std', o.std);
    if (pre.std.some((x) => x <= 0)) bad(source, 'std', o.std);
  }
  if (o.channel_order !== undefined) {
    if (o.channel_order !== 'rgb' && o.channel_order !== 'bgr') bad(source, 'channel_order', o.channel_order);
    pre.channelOrder = o.channel_order;
  }
  if (o.layout !== undefined) {
    if (o.layout !== 'nchw' && o.layout !== 'nhwc') bad(source, 'layout', o.layout);
    out.layout = o.layout;
  }
  if (o.feature_node !== undefined) {
    if (typeof o.feature_node !== 'string' || !o.feature_node) bad(source, 'feature_node', o.feature_node);
    out.featureNode = o.feature_node;
  }
  if (o.pooling !== undefined) {
    if (!['avg', 'max', 'none'].includes(String(o.pooling))) bad(source, 'pooling', o.pooling);
    out.pooling = o.pooling as Pooling;
  }
  return out;
}

/** timm's pretrained_cfg (config.json of a timm model on the Hub). */
export function fromTimmConfig(json: any, source: string): OnnxDataConfig | undefined {
  const c = json?.pretrained_cfg;
  if (!c || typeof c !== 'object') return undefined;
  const pre: Partial<Preprocessing> = {};
  if (Array.isArray(c.input_size) && c.input_size.length === 3) pre.size = [c.input_size[1], c.input_size[2]];
  if (typeof c.crop_pct === 'number') pre.cropPct = c.crop_pct;
  if (c.crop_mode === 'squash') pre.resize = 'squash';
  else if (c.crop_mode === undefined || c.crop_mode === 'center') pre.resize = 'center-crop';
  else throw new UserError(`${source}: crop_mode '${c.crop_mode}' is not supported (center or squash); give --resize`);
  if (c.interpolation !== undefined) {
    const k = KERNELS[String(c.interpolation)];
    if (!k) bad(source, 'interpolation', c.interpolation);
    pre.kernel = k;
  }
  if (c.mean !== undefined) pre.mean = triple(source, 'mean', c.mean);
  if (c.std !== undefined) pre.std = triple(source, 'std', c.std);
  return { preprocessing: pre, sources: [source] };
}

/** Hugging Face image processor config (preprocessor_config.json). */
export function fromHfPreprocessor(json: any, source: string): OnnxDataConfig | undefined {
  if (
    !json ||
    typeof json !== 'object' ||
    !('image_mean' in json || 'crop_size' in json || 'size' in json || 'crop_pct' in json)
  )
    return undefined;
  const pre: Partial<Preprocessing> = {};
  const crop = json.crop_size;
  const cropHw: [number, number] | undefined =
    typeof crop === 'number'
      ? [crop, crop]
      : crop && typeof crop.height === 'number'
        ? [crop.height, crop.width]
        : undefined;
  const size = json.size;
  const shortest = typeof size === 'number' ? size : size?.shortest_edge;
  if (typeof json.crop_pct === 'number' && typeof shortest === 'number') {
    // ConvNextImageProcessor: below 384, resize the short side to shortest_edge / crop_pct and crop
    // shortest_edge; from 384 on, warp to shortest_edge x shortest_edge.
    pre.size = [shortest, shortest];
    if (shortest < 384) {
      pre.resize = 'center-crop';
      pre.cropPct = json.crop_pct;
    } else pre.resize = 'squash';
  } else if (json.do_center_crop && cropHw) {
    pre.size = cropHw;
    pre.resize = 'center-crop';
    if (typeof shortest === 'number') pre.cropPct = Math.max(cropHw[0], cropHw[1]) / shortest;
  } else if (size && typeof size.height === 'number') {
    pre.size = [size.height, size.width];
    pre.resize = 'squash';
  }
  if (typeof json.resample === 'number' && PIL_RESAMPLE[json.resample]) pre.kernel = PIL_RESAMPLE[json.resample];
  if (json.image_mean !== undefined) pre.mean = triple(source, 'image_mean', json.image_mean);
  if (json.image_std !== undefined) pre.std = triple(source, 'image_std', json.image_std);
  if (json.do_normalize === false) {
    pre.mean = [0, 0, 0];
    pre.std = [1, 1, 1];
  }
  if (json.do_rescale === false) throw new UserError(`${source}: do_rescale=false (0..255 inputs) is not supported`);
  return { preprocessing: pre, sources: [source] };
}

/** metadata_props of a model (ModelProto field 14). */
export function readOnnxMetadata(model: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readFields(model)) {
    if (f.no !== 14 || f.wire !== 2) continue;
    let k = '',
      v = '';
    for (const e of readFields(payload(f))) {
      if (e.no === 1) k = str(e);
      else if (e.no === 2) v = str(e);
    }
    out[k] = v;
  }
  return out;
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new UserError(`${path}: not valid JSON (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`);
  }
}

/** Weaker configs first; later ones override field by field. */
function merge(configs: (OnnxDataConfig | undefined)[]): OnnxDataConfig {
  const out: OnnxDataConfig = { preprocessing: {}, sources: [] };
  for (const c of configs) {
    if (!c) continue;
    Object.assign(out.preprocessing, c.preprocessing);
    if (c.layout) out.layout = c.layout;
    if (c.featureNode) out.featureNode = c.featureNode;
    if (c.pooling) out.pooling = c.pooling;
    out.sources.push(...c.sources);
  }
  return out;
}

/** Everything that travels with the .onnx file at `path`, merged by precedence. */
export function readOnnxDataConfig(path: string, model: Uint8Array): OnnxDataConfig {
  const dir = dirname(path);
  const hub: (OnnxDataConfig | undefined)[] = [];
  for (const d of [dirname(dir), dir]) {
    // the model's own folder wins over the one above
    const timm = join(d, 'config.json');
    if (existsSync(timm)) hub.push(fromTimmConfig(readJson(timm), timm));
    const hf = join(d, 'preprocessor_config.json');
    if (existsSync(hf)) hub.push(fromHfPreprocessor(readJson(hf), hf));
  }
  const meta = readOnnxMetadata(model)[METADATA_KEY];
  let fromMeta: OnnxDataConfig | undefined;
  if (meta !== undefined) {
    let json: unknown;
    try {
      json = JSON.parse(meta);
    } catch {
      throw new UserError(`${basename(path)}: metadata_props '${METADATA_KEY}' is not valid JSON`);
    }
    fromMeta = parseDataConfig(json, `${basename(path)} metadata_props '${METADATA_KEY}'`);
  }
  const sidecarPath = `${path}.json`;
  const sidecar = existsSync(sidecarPath) ? parseDataConfig(readJson(sidecarPath), sidecarPath) : undefined;
  return merge([...hub, fromMeta, sidecar]);
}

export interface OnnxSetupOptions {
  layer?: string;
  pooling?: Pooling;
  preprocessing?: Partial<Preprocessing>;
  onnxLayout?: 'nchw' | 'nhwc';
  log?: Logger;
}

export interface OnnxSetup {
  preprocessing: Preprocessing;
  layout: 'nchw' | 'nhwc';
  layer: string;
  pooling: Pooling;
  /** Why the layer was chosen (default cut, model config, registry or flag). */
  layerWhy: string;
}

/** Resolve preprocessing, layout, cut and pooling for a .onnx model: flags > model's own config > registry > defaults. */
export function resolveOnnxSetup(
  bytes: Uint8Array,
  resolved: { location: string; onnxEntry?: OnnxZooEntry },
  opts: OnnxSetupOptions,
): OnnxSetup {
  const carried = readOnnxDataConfig(resolved.location, bytes);
  const entry = resolved.onnxEntry;
  const layout = opts.onnxLayout ?? carried.layout ?? 'nchw';
  const info = describeOnnx(bytes);
  const inShape = info.inputs[0]?.shape ?? [];
  const hw = layout === 'nchw' ? [inShape[2], inShape[3]] : [inShape[1], inShape[2]];
  const fromInput: Partial<Preprocessing> =
    typeof hw[0] === 'number' && typeof hw[1] === 'number' ? { size: [hw[0], hw[1]] } : {};
  const preprocessing: Preprocessing = {
    ...IMAGENET_ONNX_PREPROCESSING,
    ...fromInput,
    ...entry?.preprocessing,
    ...carried.preprocessing,
    ...opts.preprocessing,
  };
  let layer: string;
  let layerWhy: string;
  let cutPooling: Pooling | undefined;
  if (opts.layer) {
    layer = opts.layer;
    layerWhy = '--layer';
  } else if (carried.featureNode) {
    layer = carried.featureNode;
    layerWhy = `feature_node from ${carried.sources.join(', ')}`;
  } else if (entry?.featureNode) {
    layer = entry.featureNode;
    layerWhy = `registry entry ${entry.name}`;
    cutPooling = entry.pooling;
  } else {
    const cut = defaultOnnxCut(bytes);
    if (!cut)
      throw new UserError(
        `cannot find the features the classifier sees in ${resolved.location} (no pooling before a classifier); name a tensor with --layer (list them with 'convcache layers --model ${resolved.location}')`,
      );
    layer = cut.tensor;
    layerWhy = cut.why;
    cutPooling = cut.pooling;
  }
  const pooling: Pooling = opts.pooling ?? carried.pooling ?? cutPooling ?? 'avg';
  if (carried.sources.length) opts.log?.info(`preprocessing from ${carried.sources.join(', ')}`);
  opts.log?.info(`cut at '${layer}' (${layerWhy}), pooling ${pooling}`);
  return { preprocessing, layout, layer, pooling, layerWhy };
}
