import {
  AttributeProto,
  AttributeType,
  DataType,
  Dimension,
  GraphProto,
  IR_VERSION,
  ModelProto,
  NodeProto,
  OperatorSetIdProto,
  StringStringEntryProto,
  TensorProto,
  TensorShapeProto,
  TypeProto,
  TypeProtoTensor,
  ValueInfoProto,
  Wire,
} from './schema.ts';
import { varintBytes } from '../util/varint.ts';

/**
 * A minimal protobuf writer for the subset of onnx.proto we emit. Hand-written so the model
 * bytes are deterministic and we need no generated code; field numbers are named in schema.ts.
 */

/** One length-delimited field (tag, length, payload) as bytes, for splicing into an existing message. */
export function lengthDelimited(field: number, data: Uint8Array): Uint8Array {
  return concatBytes([new Uint8Array([...varintBytes((field << 3) | Wire.LEN), ...varintBytes(data.length)]), data]);
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

class Writer {
  private chunks: Uint8Array[] = [];
  private buf = new Uint8Array(256);
  private pos = 0;

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.flush();
    if (n > this.buf.length) this.buf = new Uint8Array(Math.max(n, 256));
  }

  private flush(): void {
    if (this.pos > 0) this.chunks.push(this.buf.slice(0, this.pos));
    this.pos = 0;
  }

  varint(v: number | bigint): void {
    this.ensure(10);
    for (const b of varintBytes(v)) this.buf[this.pos++] = b;
  }

  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  bytes(field: number, data: Uint8Array): void {
    this.tag(field, Wire.LEN);
    this.varint(data.length);
    if (data.length > 4096) {
      this.flush();
      this.chunks.push(data);
      return;
    }
    this.ensure(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }

  string(field: number, s: string): void {
    this.bytes(field, new TextEncoder().encode(s));
  }
  int(field: number, v: number | bigint): void {
    this.tag(field, Wire.VARINT);
    this.varint(v);
  }
  float(field: number, v: number): void {
    this.tag(field, Wire.I32);
    this.ensure(4);
    new DataView(this.buf.buffer).setFloat32(this.pos, v, true);
    this.pos += 4;
  }
  message(field: number, encode: (w: Writer) => void): void {
    const inner = new Writer();
    encode(inner);
    this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    this.flush();
    return concatBytes(this.chunks);
  }
}

export interface OnnxTensor {
  name: string;
  dataType: DataType;
  dims: readonly number[];
  /** Raw little-endian bytes. */
  raw: Uint8Array;
}

export type OnnxAttr =
  | { name: string; kind: 'int'; value: number }
  | { name: string; kind: 'ints'; value: readonly number[] }
  | { name: string; kind: 'float'; value: number }
  | { name: string; kind: 'floats'; value: readonly number[] }
  | { name: string; kind: 'string'; value: string };

export interface OnnxNode {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name: string;
  attrs?: readonly OnnxAttr[];
}

export interface OnnxValueInfo {
  name: string;
  dataType: DataType;
  /** number = fixed dim, string = symbolic dim (e.g. 'N'). */
  shape: readonly (number | string)[];
}

export interface OnnxGraph {
  name: string;
  nodes: readonly OnnxNode[];
  initializers: readonly OnnxTensor[];
  inputs: readonly OnnxValueInfo[];
  outputs: readonly OnnxValueInfo[];
}

export interface OnnxModel {
  graph: OnnxGraph;
  opset: number;
  producer: string;
  metadata?: Record<string, string>;
}

function encodeAttr(w: Writer, a: OnnxAttr): void {
  w.string(AttributeProto.name, a.name);
  w.int(AttributeProto.type, AttributeType[a.kind]);
  switch (a.kind) {
    case 'float':
      w.float(AttributeProto.f, a.value);
      break;
    case 'int':
      w.int(AttributeProto.i, a.value);
      break;
    case 'string':
      w.string(AttributeProto.s, a.value);
      break;
    case 'floats':
      for (const v of a.value) w.float(AttributeProto.floats, v);
      break;
    case 'ints':
      for (const v of a.value) w.int(AttributeProto.ints, v);
      break;
  }
}

function encodeValueInfo(w: Writer, v: OnnxValueInfo): void {
  w.string(ValueInfoProto.name, v.name);
  w.message(ValueInfoProto.type, (type) =>
    type.message(TypeProto.tensorType, (tensor) => {
      tensor.int(TypeProtoTensor.elemType, v.dataType);
      tensor.message(TypeProtoTensor.shape, (shape) => {
        for (const d of v.shape) {
          shape.message(TensorShapeProto.dim, (dim) =>
            typeof d === 'number' ? dim.int(Dimension.dimValue, d) : dim.string(Dimension.dimParam, d),
          );
        }
      });
    }),
  );
}

export function encodeModel(model: OnnxModel): Uint8Array {
  const w = new Writer();
  w.int(ModelProto.irVersion, IR_VERSION);
  w.string(ModelProto.producerName, model.producer);
  w.message(ModelProto.graph, (g) => {
    for (const n of model.graph.nodes) {
      g.message(GraphProto.node, (nw) => {
        for (const i of n.inputs) nw.string(NodeProto.input, i);
        for (const o of n.outputs) nw.string(NodeProto.output, o);
        nw.string(NodeProto.name, n.name);
        nw.string(NodeProto.opType, n.opType);
        for (const a of n.attrs ?? []) nw.message(NodeProto.attribute, (aw) => encodeAttr(aw, a));
      });
    }
    g.string(GraphProto.name, model.graph.name);
    for (const t of model.graph.initializers) {
      g.message(GraphProto.initializer, (tw) => {
        for (const d of t.dims) tw.int(TensorProto.dims, d);
        tw.int(TensorProto.dataType, t.dataType);
        tw.string(TensorProto.name, t.name);
        tw.bytes(TensorProto.rawData, t.raw);
      });
    }
    for (const v of model.graph.inputs) g.message(GraphProto.input, (vw) => encodeValueInfo(vw, v));
    for (const v of model.graph.outputs) g.message(GraphProto.output, (vw) => encodeValueInfo(vw, v));
  });
  w.message(ModelProto.opsetImport, (o) => {
    o.string(OperatorSetIdProto.domain, '');
    o.int(OperatorSetIdProto.version, model.opset);
  });
  for (const [k, v] of Object.entries(model.metadata ?? {})) {
    w.message(ModelProto.metadataProps, (m) => {
      m.string(StringStringEntryProto.key, k);
      m.string(StringStringEntryProto.value, v);
    });
  }
  return w.finish();
}

export function floatTensor(name: string, dims: readonly number[], data: Float32Array): OnnxTensor {
  return { name, dataType: DataType.FLOAT, dims, raw: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

export function int64Tensor(name: string, values: readonly number[]): OnnxTensor {
  const data = new BigInt64Array(values.map((v) => BigInt(v)));
  return { name, dataType: DataType.INT64, dims: [values.length], raw: new Uint8Array(data.buffer) };
}

/**
 * Collects nodes and initializers for an OnnxGraph. Outputs get fresh names unless one is given;
 * `shared*` constants are created once per name and reused (axes, scalars used by many nodes).
 */
export class GraphBuilder {
  nodes: OnnxNode[] = [];
  inits: OnnxTensor[] = [];
  private counter = 0;
  private readonly shared = new Set<string>();

  fresh(base: string): string {
    return `${base}__${this.counter++}`;
  }

  /** Adds a node; returns its output name (`out`, or a fresh one from `base`). */
  node(opType: string, inputs: readonly string[], base: string, attrs?: OnnxAttr[], out?: string): string {
    const name = out ?? this.fresh(base);
    this.nodes.push({ opType, inputs, outputs: [name], name, attrs });
    return name;
  }

  /** `node` without a name stem, for graphs whose intermediate names do not matter. */
  op(opType: string, inputs: readonly string[], attrs: OnnxAttr[] = [], out?: string): string {
    return this.node(opType, inputs, 't', attrs, out);
  }

  constFloat(base: string, dims: number[], data: Float32Array | number[]): string {
    const name = this.fresh(base);
    this.inits.push(floatTensor(name, dims, data instanceof Float32Array ? data : new Float32Array(data)));
    return name;
  }

  constInt64(base: string, values: number[]): string {
    const name = this.fresh(base);
    this.inits.push(int64Tensor(name, values));
    return name;
  }

  sharedFloat(name: string, dims: readonly number[], values: ArrayLike<number>): string {
    if (!this.shared.has(name)) {
      this.shared.add(name);
      this.inits.push(floatTensor(name, dims, Float32Array.from(values)));
    }
    return name;
  }

  sharedInt64(name: string, values: readonly number[]): string {
    if (!this.shared.has(name)) {
      this.shared.add(name);
      this.inits.push(int64Tensor(name, values));
    }
    return name;
  }
}
