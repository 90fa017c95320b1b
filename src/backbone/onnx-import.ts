import { UserError } from '../util/errors.ts';
import { DataType, encodeModel, floatTensor, int64Tensor, type OnnxNode, type OnnxTensor } from '../onnx/write.ts';
import { affineFromPreprocessing, type Preprocessing } from './preprocess.ts';
import type { Pooling } from './convert.ts';

/**
 * Use a foreign .onnx model (torchvision/timm export) as a conv base: read its graph with a minimal
 * protobuf reader, keep only what the chosen feature tensor depends on, and wrap it with our uint8
 * NHWC image input (scaling done in-graph) and a pooled 'features' output. Unknown fields are copied
 * through byte for byte.
 */

interface Field { no: number; wire: number; bytes: Uint8Array; varint?: bigint }

function readVarint(buf: Uint8Array, pos: number): [bigint, number] {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (pos >= buf.length) throw new UserError('.onnx file is truncated or not a protobuf');
    const b = buf[pos++]!;
    result |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [result, pos];
    shift += 7n;
  }
}

/** Split a protobuf message into its fields; `bytes` holds the whole field (tag included) for re-emission. */
function readFields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const start = pos;
    const [tag, p1] = readVarint(buf, pos);
    pos = p1;
    const no = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    let varint: bigint | undefined;
    let payloadStart = pos;
    if (wire === 0) [varint, pos] = readVarint(buf, pos);
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const [len, p2] = readVarint(buf, pos);
      payloadStart = p2;
      pos = p2 + Number(len);
    } else throw new UserError(`.onnx: unsupported protobuf wire type ${wire}`);
    if (pos > buf.length) throw new UserError('.onnx file is truncated');
    out.push({ no, wire, bytes: buf.subarray(start, pos), varint, ...(wire === 2 ? { payload: buf.subarray(payloadStart, pos) } : {}) } as Field);
  }
  return out;
}

const payload = (f: Field): Uint8Array => (f as Field & { payload: Uint8Array }).payload;
const str = (f: Field): string => new TextDecoder().decode(payload(f));

export interface OnnxNodeInfo { name: string; opType: string; inputs: string[]; outputs: string[] }
export interface OnnxGraphInfo {
  nodes: OnnxNodeInfo[];
  /** Real inputs (not initializers), with their shapes where declared. */
  inputs: { name: string; shape: (number | string)[] }[];
  outputs: string[];
  opset: number;
}

function parseNode(buf: Uint8Array): OnnxNodeInfo {
  const n: OnnxNodeInfo = { name: '', opType: '', inputs: [], outputs: [] };
  for (const f of readFields(buf)) {
    if (f.no === 1) n.inputs.push(str(f));
    else if (f.no === 2) n.outputs.push(str(f));
    else if (f.no === 3) n.name = str(f);
    else if (f.no === 4) n.opType = str(f);
  }
  return n;
}

function parseValueInfo(buf: Uint8Array): { name: string; shape: (number | string)[] } {
  let name = '';
  const shape: (number | string)[] = [];
  for (const f of readFields(buf)) {
    if (f.no === 1) name = str(f);
    if (f.no === 2) {
      for (const t of readFields(payload(f))) if (t.no === 1) for (const tt of readFields(payload(t))) if (tt.no === 2) {
        for (const d of readFields(payload(tt))) if (d.no === 1) {
          const dim = readFields(payload(d))[0];
          shape.push(dim === undefined ? '?' : dim.no === 1 ? Number(dim.varint) : str(dim));
        }
      }
    }
  }
  return { name, shape };
}

function graphField(model: Uint8Array): { fields: Field[]; graph: Field } {
  const fields = readFields(model);
  const graph = fields.find((f) => f.no === 7 && f.wire === 2);
  if (!graph) throw new UserError('.onnx file has no graph');
  return { fields, graph };
}

export function describeOnnx(model: Uint8Array): OnnxGraphInfo {
  const { fields, graph } = graphField(model);
  const gf = readFields(payload(graph));
  const inits = new Set(gf.filter((f) => f.no === 5).map((f) => readFields(payload(f)).filter((t) => t.no === 8).map(str)[0] ?? ''));
  let opset = 0;
  for (const f of fields) if (f.no === 8) {
    const o = readFields(payload(f));
    const domain = o.find((x) => x.no === 1);
    if (!domain || str(domain) === '' || str(domain) === 'ai.onnx') opset = Number(o.find((x) => x.no === 2)?.varint ?? 0n);
  }
  return {
    nodes: gf.filter((f) => f.no === 1).map((f) => parseNode(payload(f))),
    inputs: gf.filter((f) => f.no === 11).map((f) => parseValueInfo(payload(f))).filter((v) => !inits.has(v.name)),
    outputs: gf.filter((f) => f.no === 12).map((f) => parseValueInfo(payload(f)).name),
    opset,
  };
}

/** Name of the uint8 image input we add (distinct from any name an exporter is likely to use). */
export const IMPORTED_INPUT = 'convcache_image';

export interface OnnxImportOptions {
  /** Tensor name (a node output) to cut at. */
  featureTensor: string;
  pooling: Pooling;
  preprocessing: Preprocessing;
  /** Layout the model's input expects. */
  layout: 'nchw' | 'nhwc';
}

/** Wrap a foreign ONNX model: uint8 NHWC 'image' in, pooled float 'features' [N, D] out. */
export function importOnnx(model: Uint8Array, opts: OnnxImportOptions): Uint8Array {
  const info = describeOnnx(model);
  if (info.inputs.length !== 1) throw new UserError(`.onnx model has ${info.inputs.length} inputs (${info.inputs.map((i) => i.name).join(', ')}); convcache needs exactly one image input`);
  const origInput = info.inputs[0]!.name;
  const producer = info.nodes.find((n) => n.outputs.includes(opts.featureTensor));
  if (!producer && opts.featureTensor !== origInput) {
    const near = info.nodes.flatMap((n) => n.outputs).filter((o) => o.includes(opts.featureTensor)).slice(0, 5);
    throw new UserError(`no tensor named '${opts.featureTensor}' in the .onnx graph${near.length ? ` (did you mean: ${near.join(', ')}?)` : ''}; list them with 'npm run layers -- --model FILE.onnx'`);
  }
  // Keep only the nodes the feature tensor depends on.
  const producerOf = new Map<string, number>();
  info.nodes.forEach((n, i) => n.outputs.forEach((o) => producerOf.set(o, i)));
  const keep = new Set<number>();
  const stack = [opts.featureTensor];
  while (stack.length) {
    const t = stack.pop()!;
    const i = producerOf.get(t);
    if (i === undefined || keep.has(i)) continue;
    keep.add(i);
    stack.push(...info.nodes[i]!.inputs.filter(Boolean));
  }

  const pre: OnnxNode[] = [];
  const post: OnnxNode[] = [];
  const inits: OnnxTensor[] = [];
  const { scale, offset } = affineFromPreprocessing(opts.preprocessing);
  const perm = (p: number[]) => [{ name: 'perm', kind: 'ints' as const, value: p }];
  let x = 'cc_image_u8';
  if (opts.layout === 'nchw') { pre.push({ opType: 'Transpose', inputs: [IMPORTED_INPUT], outputs: [x], name: 'cc_to_nchw', attrs: perm([0, 3, 1, 2]) }); } else x = IMPORTED_INPUT;
  pre.push({ opType: 'Cast', inputs: [x], outputs: ['cc_float'], name: 'cc_cast', attrs: [{ name: 'to', kind: 'int', value: DataType.FLOAT }] });
  let cur = 'cc_float';
  const ch = opts.layout === 'nchw' ? [1, 3, 1, 1] : [1, 1, 1, 3];
  if (opts.preprocessing.channelOrder === 'bgr') {
    inits.push(int64Tensor('cc_bgr_idx', [2, 1, 0]));
    pre.push({ opType: 'Gather', inputs: [cur, 'cc_bgr_idx'], outputs: ['cc_bgr'], name: 'cc_bgr', attrs: [{ name: 'axis', kind: 'int', value: opts.layout === 'nchw' ? 1 : 3 }] });
    cur = 'cc_bgr';
  }
  inits.push(floatTensor('cc_scale', ch, new Float32Array(scale)), floatTensor('cc_offset', ch, new Float32Array(offset)));
  pre.push({ opType: 'Mul', inputs: [cur, 'cc_scale'], outputs: ['cc_scaled'], name: 'cc_scale' });
  pre.push({ opType: 'Add', inputs: ['cc_scaled', 'cc_offset'], outputs: [origInput], name: 'cc_normalise' });

  if (opts.pooling === 'avg' || opts.pooling === 'max') {
    post.push({ opType: opts.pooling === 'avg' ? 'GlobalAveragePool' : 'GlobalMaxPool', inputs: [opts.featureTensor], outputs: ['cc_pooled'], name: 'cc_pool' });
    post.push({ opType: 'Flatten', inputs: ['cc_pooled'], outputs: ['features'], name: 'cc_flatten', attrs: [{ name: 'axis', kind: 'int', value: 1 }] });
  } else {
    post.push({ opType: 'Flatten', inputs: [opts.featureTensor], outputs: ['features'], name: 'cc_flatten', attrs: [{ name: 'axis', kind: 'int', value: 1 }] });
  }
  const [h, w] = opts.preprocessing.size;

  // Encode our additions with the writer, as a throwaway model, and splice its graph fields in.
  const ours = encodeModel({
    producer: 'convcache', opset: 13,
    graph: {
      name: 'cc', nodes: [...pre, ...post], initializers: inits,
      inputs: [{ name: IMPORTED_INPUT, dataType: DataType.UINT8, shape: ['N', h, w, 3] }],
      outputs: [{ name: 'features', dataType: DataType.FLOAT, shape: ['N', 'D'] }],
    },
  });
  const oursGraph = readFields(payload(graphField(ours).graph));
  const oursNodes = oursGraph.filter((f) => f.no === 1);
  const preFields = oursNodes.slice(0, pre.length);
  const postFields = oursNodes.slice(pre.length);
  const { fields, graph } = graphField(model);
  let nodeIndex = 0;
  const graphParts: Uint8Array[] = [...preFields.map((f) => f.bytes)];
  for (const f of readFields(payload(graph))) {
    if (f.no === 1) { if (keep.has(nodeIndex++)) graphParts.push(f.bytes); continue; }
    if (f.no === 12) continue; // outputs replaced
    if (f.no === 11 && parseValueInfo(payload(f)).name === origInput) continue; // input replaced
    graphParts.push(f.bytes);
  }
  graphParts.push(...postFields.map((f) => f.bytes));
  graphParts.push(...oursGraph.filter((f) => f.no === 5 || f.no === 11 || f.no === 12).map((f) => f.bytes));
  const graphPayload = concat(graphParts);
  const modelParts: Uint8Array[] = [];
  for (const f of fields) {
    if (f === graph) modelParts.push(lengthDelimited(7, graphPayload));
    else modelParts.push(f.bytes);
  }
  return concat(modelParts);
}

function varintBytes(v: number): number[] {
  const out: number[] = [];
  while (v >= 0x80) { out.push((v & 0x7f) | 0x80); v = Math.floor(v / 128); }
  out.push(v);
  return out;
}

function lengthDelimited(no: number, data: Uint8Array): Uint8Array {
  return concat([new Uint8Array([...varintBytes((no << 3) | 2), ...varintBytes(data.length)]), data]);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}
