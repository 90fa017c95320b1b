import { UserError } from '../util/errors.ts';
import { payload, readFields } from '../onnx/read.ts';
import { readCutGraph, type CutGraph } from './onnx-cut.ts';

/**
 * Shapes of a foreign ONNX graph's intermediate tensors, for `layers`: the float tensors computed from
 * the image are added as graph outputs and ONNX Runtime runs one zero image through the model. Exact
 * for whatever the exporter emitted, with no shape-inference rules of our own to keep up to date.
 */

/** Ops whose (first) output is never a float image-derived tensor. */
const NOT_FLOAT = new Set([
  'Shape',
  'Size',
  'NonZero',
  'ArgMax',
  'ArgMin',
  'Equal',
  'Less',
  'Greater',
  'LessOrEqual',
  'GreaterOrEqual',
  'Not',
  'And',
  'Or',
  'Xor',
  'IsNaN',
  'IsInf',
  'Constant',
  'ConstantOfShape',
  'Range',
  'EyeLike',
]);

/** First outputs of nodes that compute float data from the image input (so declaring them FLOAT is right). */
export function floatTensors(g: CutGraph): string[] {
  const floats = new Set(g.inputs.slice(0, 1));
  const out: string[] = [];
  for (const n of g.nodes) {
    if (NOT_FLOAT.has(n.opType)) continue;
    if (n.opType === 'Cast' && n.ints.to?.[0] !== 1) continue;
    if (!n.inputs.some((t) => floats.has(t))) continue;
    const o = n.outputs[0];
    if (!o) continue;
    floats.add(o);
    out.push(o);
  }
  return out;
}

function varint(v: number): number[] {
  const b: number[] = [];
  while (v >= 0x80) {
    b.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  b.push(v);
  return b;
}

function ld(no: number, data: Uint8Array | number[]): number[] {
  return [...varint((no << 3) | 2), ...varint(data.length), ...data];
}

/** The model with extra FLOAT graph outputs of unknown shape. */
export function withExtraOutputs(model: Uint8Array, names: readonly string[]): Uint8Array {
  const enc = new TextEncoder();
  const fields = readFields(model);
  const graph = fields.find((f) => f.no === 7 && f.wire === 2);
  if (!graph) throw new UserError('.onnx file has no graph');
  // ValueInfoProto { name = 1; type = 2 { tensor_type = 1 { elem_type = 1 (FLOAT) } } }
  const extra = names.map((n) => ld(12, [...ld(1, enc.encode(n)), ...ld(2, ld(1, [8, 1]))]));
  const extraLen = extra.reduce((a, e) => a + e.length, 0);
  const gp = payload(graph);
  const newGraph = new Uint8Array(gp.length + extraLen);
  newGraph.set(gp);
  let off = gp.length;
  for (const e of extra) {
    newGraph.set(e, off);
    off += e.length;
  }
  const parts: Uint8Array[] = fields.map((f) => (f === graph ? Uint8Array.from(ld(7, newGraph)) : f.bytes));
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Run one zero input of `inputShape` and return the dims (batch 1 included) of every float tensor. */
export async function onnxTensorShapes(
  model: Uint8Array,
  inputShape: readonly number[],
): Promise<Map<string, number[]>> {
  const g = readCutGraph(model);
  const declared = new Set(g.outputs);
  const wanted = floatTensors(g).filter((t) => !declared.has(t));
  const ort = await import('onnxruntime-node');
  let session;
  try {
    session = await ort.InferenceSession.create(withExtraOutputs(model, wanted), {
      graphOptimizationLevel: 'disabled',
      intraOpNumThreads: 1,
    });
  } catch (e) {
    throw new UserError(
      `ONNX Runtime cannot load the model to measure its shapes: ${String(e instanceof Error ? e.message : e).split('\n')[0]}`,
    );
  }
  try {
    const n = inputShape.reduce((a, b) => a * b, 1);
    const res = await session.run({
      [session.inputNames[0]!]: new ort.Tensor('float32', new Float32Array(n), [...inputShape]),
    });
    const shapes = new Map<string, number[]>();
    for (const [name, t] of Object.entries(res)) shapes.set(name, t.dims.map(Number));
    return shapes;
  } finally {
    await session.release();
  }
}

/** How a tensor reads in a listing: channels-last per image, and the feature width with and without pooling. */
export function describeTensor(
  dims: readonly number[],
  layout: 'nchw' | 'nhwc',
): { shape: number[]; pooled?: number; flat: number } {
  const per = dims.slice(1);
  const flat = per.reduce((a, b) => a * b, 1);
  if (per.length === 3) {
    const shape = layout === 'nchw' ? [per[1]!, per[2]!, per[0]!] : [...per];
    return { shape, pooled: shape[2]!, flat };
  }
  return { shape: per, flat };
}
