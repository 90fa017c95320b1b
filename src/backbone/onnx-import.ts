import { UserError } from '../util/errors.ts';
import {
  concatBytes,
  encodeModel,
  floatTensor,
  int64Tensor,
  lengthDelimited,
  type OnnxNode,
  type OnnxTensor,
} from '../onnx/write.ts';
import { describeOnnx, graphField, parseValueInfo, payload, readFields } from '../onnx/read.ts';
import { DataType, GraphProto, ModelProto } from '../onnx/schema.ts';
import { affineFromPreprocessing, type Preprocessing } from './preprocess.ts';
import type { Pooling } from './convert.ts';

/**
 * Use a foreign .onnx model (torchvision/timm export) as a conv base: read its graph with
 * onnx/read.ts, keep only what the chosen feature tensor depends on, and wrap it with our uint8
 * NHWC image input (scaling done in-graph) and a pooled 'features' output. Unknown fields are copied
 * through byte for byte.
 */

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
  if (info.inputs.length !== 1)
    throw new UserError(
      `.onnx model has ${info.inputs.length} inputs (${info.inputs.map((i) => i.name).join(', ')}); convcache needs exactly one image input`,
    );
  const origInput = info.inputs[0]!.name;
  const producer = info.nodes.find((n) => n.outputs.includes(opts.featureTensor));
  if (!producer && opts.featureTensor !== origInput) {
    const near = info.nodes
      .flatMap((n) => n.outputs)
      .filter((o) => o.includes(opts.featureTensor))
      .slice(0, 5);
    throw new UserError(
      `no tensor named '${opts.featureTensor}' in the .onnx graph${near.length ? ` (did you mean: ${near.join(', ')}?)` : ''}; list them with 'convcache layers --model FILE.onnx'`,
    );
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
  if (opts.layout === 'nchw') {
    pre.push({
      opType: 'Transpose',
      inputs: [IMPORTED_INPUT],
      outputs: [x],
      name: 'cc_to_nchw',
      attrs: perm([0, 3, 1, 2]),
    });
  } else x = IMPORTED_INPUT;
  pre.push({
    opType: 'Cast',
    inputs: [x],
    outputs: ['cc_float'],
    name: 'cc_cast',
    attrs: [{ name: 'to', kind: 'int', value: DataType.FLOAT }],
  });
  let cur = 'cc_float';
  const ch = opts.layout === 'nchw' ? [1, 3, 1, 1] : [1, 1, 1, 3];
  if (opts.preprocessing.channelOrder === 'bgr') {
    inits.push(int64Tensor('cc_bgr_idx', [2, 1, 0]));
    pre.push({
      opType: 'Gather',
      inputs: [cur, 'cc_bgr_idx'],
      outputs: ['cc_bgr'],
      name: 'cc_bgr',
      attrs: [{ name: 'axis', kind: 'int', value: opts.layout === 'nchw' ? 1 : 3 }],
    });
    cur = 'cc_bgr';
  }
  inits.push(
    floatTensor('cc_scale', ch, new Float32Array(scale)),
    floatTensor('cc_offset', ch, new Float32Array(offset)),
  );
  pre.push({ opType: 'Mul', inputs: [cur, 'cc_scale'], outputs: ['cc_scaled'], name: 'cc_scale' });
  pre.push({ opType: 'Add', inputs: ['cc_scaled', 'cc_offset'], outputs: [origInput], name: 'cc_normalise' });

  if (opts.pooling === 'avg' || opts.pooling === 'max') {
    post.push({
      opType: opts.pooling === 'avg' ? 'GlobalAveragePool' : 'GlobalMaxPool',
      inputs: [opts.featureTensor],
      outputs: ['cc_pooled'],
      name: 'cc_pool',
    });
    post.push({
      opType: 'Flatten',
      inputs: ['cc_pooled'],
      outputs: ['features'],
      name: 'cc_flatten',
      attrs: [{ name: 'axis', kind: 'int', value: 1 }],
    });
  } else {
    post.push({
      opType: 'Flatten',
      inputs: [opts.featureTensor],
      outputs: ['features'],
      name: 'cc_flatten',
      attrs: [{ name: 'axis', kind: 'int', value: 1 }],
    });
  }
  const [h, w] = opts.preprocessing.size;

  // Encode our additions with the writer, as a throwaway model, and splice its graph fields in.
  const ours = encodeModel({
    producer: 'convcache',
    opset: 13,
    graph: {
      name: 'cc',
      nodes: [...pre, ...post],
      initializers: inits,
      inputs: [{ name: IMPORTED_INPUT, dataType: DataType.UINT8, shape: ['N', h, w, 3] }],
      outputs: [{ name: 'features', dataType: DataType.FLOAT, shape: ['N', 'D'] }],
    },
  });
  const oursGraph = readFields(payload(graphField(ours).graph));
  const oursNodes = oursGraph.filter((f) => f.no === GraphProto.node);
  const preFields = oursNodes.slice(0, pre.length);
  const postFields = oursNodes.slice(pre.length);
  const { fields, graph } = graphField(model);
  let nodeIndex = 0;
  const graphParts: Uint8Array[] = [...preFields.map((f) => f.bytes)];
  for (const f of readFields(payload(graph))) {
    if (f.no === GraphProto.node) {
      if (keep.has(nodeIndex++)) graphParts.push(f.bytes);
      continue;
    }
    if (f.no === GraphProto.output) continue; // outputs replaced
    if (f.no === GraphProto.input && parseValueInfo(payload(f)).name === origInput) continue; // input replaced
    graphParts.push(f.bytes);
  }
  graphParts.push(...postFields.map((f) => f.bytes));
  graphParts.push(
    ...oursGraph
      .filter((f) => f.no === GraphProto.initializer || f.no === GraphProto.input || f.no === GraphProto.output)
      .map((f) => f.bytes),
  );
  const graphPayload = concatBytes(graphParts);
  const modelParts: Uint8Array[] = [];
  for (const f of fields) {
    if (f === graph) modelParts.push(lengthDelimited(ModelProto.graph, graphPayload));
    else modelParts.push(f.bytes);
  }
  return concatBytes(modelParts);
}
