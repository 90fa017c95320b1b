/**
 * A minimal protobuf writer for the subset of onnx.proto we emit. Hand-written so the model
 * bytes are deterministic and we need no generated code; field numbers follow onnx.proto (IR v8).
 */

export const enum DataType { FLOAT = 1, UINT8 = 2, INT32 = 6, INT64 = 7, FLOAT16 = 10 }

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
    let x = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (x >= 0x80n) {
      this.buf[this.pos++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.pos++] = Number(x);
  }

  tag(field: number, wire: number): void { this.varint((field << 3) | wire); }

  bytes(field: number, data: Uint8Array): void {
    this.tag(field, 2);
    this.varint(data.length);
    if (data.length > 4096) { this.flush(); this.chunks.push(data); return; }
    this.ensure(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }

  string(field: number, s: string): void { this.bytes(field, new TextEncoder().encode(s)); }
  int(field: number, v: number | bigint): void { this.tag(field, 0); this.varint(v); }
  float(field: number, v: number): void {
    this.tag(field, 5);
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
    const total = this.chunks.reduce((a, c) => a + c.length, 0);
    const out = new Uint8Array(total);
    let off = 0;
    for (const c of this.chunks) { out.set(c, off); off += c.length; }
    return out;
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

const ATTR_TYPE = { float: 1, int: 2, string: 3, floats: 6, ints: 7 } as const;

function encodeAttr(w: Writer, a: OnnxAttr): void {
  w.string(1, a.name);
  w.int(20, ATTR_TYPE[a.kind]);
  switch (a.kind) {
    case 'float': w.float(2, a.value); break;
    case 'int': w.int(3, a.value); break;
    case 'string': w.string(4, a.value); break;
    case 'floats': for (const v of a.value) w.float(7, v); break;
    case 'ints': for (const v of a.value) w.int(8, v); break;
  }
}

function encodeValueInfo(w: Writer, v: OnnxValueInfo): void {
  w.string(1, v.name);
  w.message(2, (type) => type.message(1, (tensor) => {
    tensor.int(1, v.dataType);
    tensor.message(2, (shape) => {
      for (const d of v.shape) {
        shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
      }
    });
  }));
}

export function encodeModel(model: OnnxModel): Uint8Array {
  const w = new Writer();
  w.int(1, 8); // ir_version
  w.string(2, model.producer);
  w.message(7, (g) => {
    for (const n of model.graph.nodes) {
      g.message(1, (nw) => {
        for (const i of n.inputs) nw.string(1, i);
        for (const o of n.outputs) nw.string(2, o);
        nw.string(3, n.name);
        nw.string(4, n.opType);
        for (const a of n.attrs ?? []) nw.message(5, (aw) => encodeAttr(aw, a));
      });
    }
    g.string(2, model.graph.name);
    for (const t of model.graph.initializers) {
      g.message(5, (tw) => {
        for (const d of t.dims) tw.int(1, d);
        tw.int(2, t.dataType);
        tw.string(8, t.name);
        tw.bytes(9, t.raw);
      });
    }
    for (const v of model.graph.inputs) g.message(11, (vw) => encodeValueInfo(vw, v));
    for (const v of model.graph.outputs) g.message(12, (vw) => encodeValueInfo(vw, v));
  });
  w.message(8, (o) => { o.string(1, ''); o.int(2, model.opset); });
  for (const [k, v] of Object.entries(model.metadata ?? {})) {
    w.message(14, (m) => { m.string(1, k); m.string(2, v); });
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

  fresh(base: string): string { return `${base}__${this.counter++}`; }

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
    if (!this.shared.has(name)) { this.shared.add(name); this.inits.push(floatTensor(name, dims, Float32Array.from(values))); }
    return name;
  }

  sharedInt64(name: string, values: readonly number[]): string {
    if (!this.shared.has(name)) { this.shared.add(name); this.inits.push(int64Tensor(name, values)); }
    return name;
  }
}
