import { UserError } from '../util/errors.ts';
import {
  Dimension,
  GraphProto,
  ModelProto,
  NodeProto,
  OperatorSetIdProto,
  TensorProto,
  TypeProto,
  TypeProtoTensor,
  TensorShapeProto,
  ValueInfoProto,
  Wire,
} from './schema.ts';

/**
 * A minimal protobuf reader for .onnx files: splits messages into fields (keeping each field's
 * bytes, so unknown fields can be copied through untouched) and describes a model's graph.
 */

export interface Field {
  no: number;
  wire: number;
  bytes: Uint8Array;
  varint?: bigint;
}

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
export function readFields(buf: Uint8Array): Field[] {
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
    if (wire === Wire.VARINT) [varint, pos] = readVarint(buf, pos);
    else if (wire === Wire.I64) pos += 8;
    else if (wire === Wire.I32) pos += 4;
    else if (wire === Wire.LEN) {
      const [len, p2] = readVarint(buf, pos);
      payloadStart = p2;
      pos = p2 + Number(len);
    } else throw new UserError(`.onnx: unsupported protobuf wire type ${wire}`);
    if (pos > buf.length) throw new UserError('.onnx file is truncated');
    out.push({
      no,
      wire,
      bytes: buf.subarray(start, pos),
      varint,
      ...(wire === Wire.LEN ? { payload: buf.subarray(payloadStart, pos) } : {}),
    } as Field);
  }
  return out;
}

export const payload = (f: Field): Uint8Array => (f as Field & { payload: Uint8Array }).payload;
export const str = (f: Field): string => new TextDecoder().decode(payload(f));

export interface OnnxNodeInfo {
  name: string;
  opType: string;
  inputs: string[];
  outputs: string[];
}
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
    if (f.no === NodeProto.input) n.inputs.push(str(f));
    else if (f.no === NodeProto.output) n.outputs.push(str(f));
    else if (f.no === NodeProto.name) n.name = str(f);
    else if (f.no === NodeProto.opType) n.opType = str(f);
  }
  return n;
}

export function parseValueInfo(buf: Uint8Array): { name: string; shape: (number | string)[] } {
  let name = '';
  const shape: (number | string)[] = [];
  for (const f of readFields(buf)) {
    if (f.no === ValueInfoProto.name) name = str(f);
    if (f.no === ValueInfoProto.type) {
      for (const t of readFields(payload(f)))
        if (t.no === TypeProto.tensorType)
          for (const tt of readFields(payload(t)))
            if (tt.no === TypeProtoTensor.shape) {
              for (const d of readFields(payload(tt)))
                if (d.no === TensorShapeProto.dim) {
                  const dim = readFields(payload(d))[0];
                  shape.push(dim === undefined ? '?' : dim.no === Dimension.dimValue ? Number(dim.varint) : str(dim));
                }
            }
    }
  }
  return { name, shape };
}

export function graphField(model: Uint8Array): { fields: Field[]; graph: Field } {
  const fields = readFields(model);
  const graph = fields.find((f) => f.no === ModelProto.graph && f.wire === Wire.LEN);
  if (!graph) throw new UserError('.onnx file has no graph');
  return { fields, graph };
}

export function describeOnnx(model: Uint8Array): OnnxGraphInfo {
  const { fields, graph } = graphField(model);
  const gf = readFields(payload(graph));
  const inits = new Set(
    gf
      .filter((f) => f.no === GraphProto.initializer)
      .map(
        (f) =>
          readFields(payload(f))
            .filter((t) => t.no === TensorProto.name)
            .map(str)[0] ?? '',
      ),
  );
  let opset = 0;
  for (const f of fields)
    if (f.no === ModelProto.opsetImport) {
      const o = readFields(payload(f));
      const domain = o.find((x) => x.no === OperatorSetIdProto.domain);
      if (!domain || str(domain) === '' || str(domain) === 'ai.onnx')
        opset = Number(o.find((x) => x.no === OperatorSetIdProto.version)?.varint ?? 0n);
    }
  return {
    nodes: gf.filter((f) => f.no === GraphProto.node).map((f) => parseNode(payload(f))),
    inputs: gf
      .filter((f) => f.no === GraphProto.input)
      .map((f) => parseValueInfo(payload(f)))
      .filter((v) => !inits.has(v.name)),
    outputs: gf.filter((f) => f.no === GraphProto.output).map((f) => parseValueInfo(payload(f)).name),
    opset,
  };
}
