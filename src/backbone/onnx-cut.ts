import { UserError } from '../util/errors.ts';
import { payload, readFields, str, type Field } from '../onnx/read.ts';
import type { Pooling } from './convert.ts';

/**
 * The default cut of a foreign ONNX network = the features its classifier sees (Keras's
 * include_top=False): the input of the last spatial pooling on the way to the classifier, or for a
 * transformer with no spatial map the pooled / class-token vector entering the classifier.
 *
 * "Last" matters: squeeze-and-excitation blocks (EfficientNet, MobileNetV3, RegNetY) contain global
 * pools whose result gates the trunk again; taking the first GlobalAveragePool gave a 32-, 72- or
 * 48-wide "feature" from the first SE block. A pool is a candidate only if no other spatial pool lies
 * between it and the graph output and its result never multiplies back into the trunk it came from.
 */

export interface CutNode {
  name: string;
  opType: string;
  inputs: string[];
  outputs: string[];
  /** Integer attributes (ints and int), enough for axes / keepdims / kernel shapes. */
  ints: Record<string, number[]>;
}

export interface CutGraph {
  nodes: CutNode[];
  /** Initializer names, with small int64 values decoded (for ReduceMean axes given as an input). */
  initializers: Map<string, number[] | undefined>;
  inputs: string[];
  outputs: string[];
}

export interface OnnxCut {
  /** Tensor name to cut at (--layer). */
  tensor: string;
  /** Pooling to apply at the cut: 'avg'/'max' for a spatial map, 'none' when the tensor is already a vector. */
  pooling: Pooling;
  /** Why this tensor: printed by `layers` and logged by extract. */
  why: string;
}

const intOf = (f: Field): number => Number(BigInt.asIntN(64, f.varint ?? 0n));

function readPackedOrSingle(f: Field, into: number[]): void {
  if (f.wire === 0) {
    into.push(intOf(f));
    return;
  }
  // packed varints
  const buf = payload(f);
  let pos = 0;
  while (pos < buf.length) {
    let v = 0n,
      shift = 0n;
    for (;;) {
      const b = buf[pos++]!;
      v |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) break;
      shift += 7n;
    }
    into.push(Number(BigInt.asIntN(64, v)));
  }
}

function tensorInts(buf: Uint8Array): { name: string; values?: number[] } {
  let name = '';
  let dataType = 0;
  let raw: Uint8Array | undefined;
  const ints: number[] = [];
  let n = 1;
  for (const f of readFields(buf)) {
    if (f.no === 1) {
      const d: number[] = [];
      readPackedOrSingle(f, d);
      n *= d.reduce((a, b) => a * b, 1);
    } else if (f.no === 2) dataType = intOf(f);
    else if (f.no === 7) readPackedOrSingle(f, ints);
    else if (f.no === 8) name = str(f);
    else if (f.no === 9) raw = payload(f);
  }
  if (dataType !== 7 || n > 16) return { name }; // only small int64 tensors are of interest (axes)
  if (raw) {
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    return { name, values: Array.from({ length: raw.byteLength / 8 }, (_, i) => Number(dv.getBigInt64(i * 8, true))) };
  }
  return { name, values: ints };
}

function parseCutNode(buf: Uint8Array, constants: Map<string, number[] | undefined>): CutNode {
  const n: CutNode = { name: '', opType: '', inputs: [], outputs: [], ints: {} };
  const attrs: Uint8Array[] = [];
  for (const f of readFields(buf)) {
    if (f.no === 1) n.inputs.push(str(f));
    else if (f.no === 2) n.outputs.push(str(f));
    else if (f.no === 3) n.name = str(f);
    else if (f.no === 4) n.opType = str(f);
    else if (f.no === 5) attrs.push(payload(f));
  }
  for (const a of attrs) {
    let name = '';
    const vals: number[] = [];
    let tensor: Uint8Array | undefined;
    for (const f of readFields(a)) {
      if (f.no === 1) name = str(f);
      else if (f.no === 3 || f.no === 8) readPackedOrSingle(f, vals);
      else if (f.no === 5) tensor = payload(f);
    }
    if (vals.length) n.ints[name] = vals;
    if (n.opType === 'Constant' && tensor && n.outputs[0]) constants.set(n.outputs[0], tensorInts(tensor).values);
  }
  return n;
}

export function readCutGraph(model: Uint8Array): CutGraph {
  const graph = readFields(model).find((f) => f.no === 7 && f.wire === 2);
  if (!graph) throw new UserError('.onnx file has no graph');
  const initializers = new Map<string, number[] | undefined>();
  const nodes: CutNode[] = [];
  const inputs: string[] = [];
  const outputs: string[] = [];
  const valueName = (buf: Uint8Array) => {
    const f = readFields(buf).find((x) => x.no === 1);
    return f ? str(f) : '';
  };
  for (const f of readFields(payload(graph))) {
    if (f.no === 1) nodes.push(parseCutNode(payload(f), initializers));
    else if (f.no === 5) {
      const t = tensorInts(payload(f));
      initializers.set(t.name, t.values);
    } else if (f.no === 11) inputs.push(valueName(payload(f)));
    else if (f.no === 12) outputs.push(valueName(payload(f)));
  }
  return { nodes, initializers, inputs: inputs.filter((i) => !initializers.has(i)), outputs };
}

type PoolKind = { kind: 'spatial'; pooling: 'avg' | 'max'; layout: 'nchw' | 'nhwc' } | { kind: 'tokens' } | undefined;

function reduceAxes(n: CutNode, g: CutGraph): number[] | undefined {
  if (n.ints.axes) return n.ints.axes;
  const second = n.inputs[1];
  return second ? g.initializers.get(second) : undefined; // opset 18: axes as an input
}

/** What kind of pooling a node is, judged from its op and axes. */
function poolKind(n: CutNode, g: CutGraph): PoolKind {
  if (n.opType === 'GlobalAveragePool') return { kind: 'spatial', pooling: 'avg', layout: 'nchw' };
  if (n.opType === 'GlobalMaxPool') return { kind: 'spatial', pooling: 'max', layout: 'nchw' };
  if (n.opType === 'ReduceMean' || n.opType === 'ReduceMax') {
    const axes = reduceAxes(n, g);
    if (!axes) return undefined;
    const s = [...axes].sort((a, b) => a - b).join(',');
    const pooling = n.opType === 'ReduceMean' ? 'avg' : 'max';
    if (s === '2,3' || s === '-2,-1') return { kind: 'spatial', pooling, layout: 'nchw' };
    if (s === '1,2') return { kind: 'spatial', pooling, layout: 'nhwc' };
    if (s === '1' && pooling === 'avg') return { kind: 'tokens' }; // mean over tokens [N, T, D] -> [N, D]
    return undefined;
  }
  return undefined;
}

const COMBINE = new Set(['Mul', 'Add', 'Sub', 'Div', 'Concat']);
const PASS_THROUGH = new Set(['Flatten', 'Reshape', 'Squeeze', 'Unsqueeze', 'Identity', 'Dropout', 'Cast']);

/** Does an AveragePool feed a classifier (Flatten/Reshape → Gemm/MatMul) directly? */
function averagePoolFeedsClassifier(n: CutNode, consumers: Map<string, CutNode[]>): boolean {
  const stack = [...n.outputs];
  const seen = new Set<string>();
  while (stack.length) {
    const t = stack.pop()!;
    if (seen.has(t)) continue;
    seen.add(t);
    for (const c of consumers.get(t) ?? []) {
      if (c.opType === 'Gemm' || c.opType === 'MatMul') return true;
      if (PASS_THROUGH.has(c.opType)) stack.push(...c.outputs);
    }
  }
  return false;
}

export function defaultOnnxCut(model: Uint8Array | CutGraph): OnnxCut | undefined {
  const g = model instanceof Uint8Array ? readCutGraph(model) : model;
  const producer = new Map<string, number>();
  const consumers = new Map<string, CutNode[]>();
  g.nodes.forEach((n, i) => {
    for (const o of n.outputs) producer.set(o, i);
    for (const t of n.inputs)
      if (t) {
        const l = consumers.get(t) ?? [];
        l.push(n);
        consumers.set(t, l);
      }
  });
  // Ancestors of the graph outputs: what the classifier (or the exported feature output) depends on.
  const ancestorsOf = (tensors: readonly string[]): Set<number> => {
    const seen = new Set<number>();
    const stack = [...tensors];
    while (stack.length) {
      const i = producer.get(stack.pop()!);
      if (i === undefined || seen.has(i)) continue;
      seen.add(i);
      stack.push(...g.nodes[i]!.inputs.filter(Boolean));
    }
    return seen;
  };
  const descendantsOf = (tensors: readonly string[]): Set<CutNode> => {
    const seen = new Set<CutNode>();
    const stack = [...tensors];
    while (stack.length) {
      for (const c of consumers.get(stack.pop()!) ?? [])
        if (!seen.has(c)) {
          seen.add(c);
          stack.push(...c.outputs);
        }
    }
    return seen;
  };
  // What the outputs depend on: the classifier's logits, or the feature outputs of a headless export.
  const live = ancestorsOf(g.outputs);
  const pools: { i: number; kind: NonNullable<PoolKind> }[] = [];
  g.nodes.forEach((n, i) => {
    if (!live.has(i)) return;
    const k =
      poolKind(n, g) ??
      (n.opType === 'AveragePool' && averagePoolFeedsClassifier(n, consumers)
        ? ({ kind: 'spatial', pooling: 'avg', layout: 'nchw' } as const)
        : undefined);
    if (k) pools.push({ i, kind: k });
  });
  const poolNodes = new Set(pools.map((p) => g.nodes[p.i]!));
  const finals = pools.filter(({ i }) => {
    const n = g.nodes[i]!;
    const down = descendantsOf(n.outputs);
    // Another pool further on: this one is inside a block (SE), or an early pooling stage.
    for (const d of down) if (poolNodes.has(d)) return false;
    // Gating: something downstream combines the pooled value with the trunk it summarised (SE's Mul).
    const trunk = new Set([
      n.inputs[0]!,
      ...[...ancestorsOf(n.inputs.slice(0, 1))].flatMap((a) => g.nodes[a]!.outputs),
    ]);
    for (const d of down) if (COMBINE.has(d.opType) && d.inputs.some((t) => trunk.has(t))) return false;
    return true;
  });
  const spatial = finals.filter((p) => p.kind.kind === 'spatial');
  const last = spatial[spatial.length - 1];
  if (last) {
    const n = g.nodes[last.i]!;
    const k = last.kind as Extract<PoolKind, { kind: 'spatial' }>;
    if (k.layout === 'nhwc') {
      // Channels-last map: our appended pooling is NCHW, so cut after the model's own pooling instead.
      return {
        tensor: n.outputs[0]!,
        pooling: 'none',
        why: `output of ${n.opType} '${n.name}' (channels-last spatial pooling before the classifier)`,
      };
    }
    return {
      tensor: n.inputs[0]!,
      pooling: k.pooling,
      why: `input of ${n.opType} '${n.name}', the last spatial pooling before the classifier`,
    };
  }
  // No spatial map: a transformer. The classifier's input is the pooled / class-token vector.
  const classifier = findClassifier(g, producer);
  if (classifier) {
    return {
      tensor: classifier.input,
      pooling: 'none',
      why: `input of the classifier ${classifier.node.opType} '${classifier.node.name}' (pooled / class token)`,
    };
  }
  const tokenPool = [...finals].reverse().find((p) => p.kind.kind === 'tokens') ?? lastClassTokenGather(g, live);
  if (tokenPool) {
    const n = g.nodes[tokenPool.i]!;
    return {
      tensor: n.outputs[0]!,
      pooling: 'none',
      why: `output of ${n.opType} '${n.name}' (token pooling; the model has no classifier)`,
    };
  }
  return undefined;
}

/** A class-token pick: Gather on axis 1 with a scalar index (x[:, 0]). */
function lastClassTokenGather(g: CutGraph, live: Set<number>): { i: number } | undefined {
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i]!;
    if (live.has(i) && n.opType === 'Gather' && (n.ints.axis?.[0] ?? 0) === 1) return { i };
  }
  return undefined;
}

/**
 * The classifier: the last Gemm/MatMul (with a weight initializer) on the path to the first output,
 * walking back through bias adds, softmax and reshapes. Its data input is the feature vector.
 */
function findClassifier(g: CutGraph, producer: Map<string, number>): { node: CutNode; input: string } | undefined {
  const TAIL = new Set([
    'Add',
    'Softmax',
    'LogSoftmax',
    'Sigmoid',
    'Identity',
    'Reshape',
    'Flatten',
    'Squeeze',
    'Dropout',
    'Cast',
  ]);
  let t: string | undefined = g.outputs[0];
  for (let steps = 0; t !== undefined && steps < 8; steps++) {
    const i = producer.get(t);
    if (i === undefined) return undefined;
    const n = g.nodes[i]!;
    if (n.opType === 'Gemm' || n.opType === 'MatMul') {
      const data = n.inputs.find((x) => !g.initializers.has(x));
      const hasWeight = n.inputs.some(
        (x) => g.initializers.has(x) || g.nodes[producer.get(x) ?? -1]?.opType === 'Transpose',
      );
      if (data && hasWeight) return { node: n, input: data };
      return undefined;
    }
    if (!TAIL.has(n.opType)) return undefined;
    t = n.inputs.find((x) => x && !g.initializers.has(x));
  }
  return undefined;
}
