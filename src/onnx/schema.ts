/**
 * Field numbers of the onnx.proto messages we read and write (IR v8), named after the .proto
 * fields, plus protobuf wire types. One place, so the writer and the reader cannot drift apart.
 */

export const enum DataType {
  FLOAT = 1,
  UINT8 = 2,
  INT32 = 6,
  INT64 = 7,
  FLOAT16 = 10,
}

/** Protobuf wire types. */
export const Wire = { VARINT: 0, I64: 1, LEN: 2, I32: 5 } as const;

export const ModelProto = { irVersion: 1, producerName: 2, graph: 7, opsetImport: 8, metadataProps: 14 } as const;
export const OperatorSetIdProto = { domain: 1, version: 2 } as const;
export const StringStringEntryProto = { key: 1, value: 2 } as const;
export const GraphProto = { node: 1, name: 2, initializer: 5, input: 11, output: 12 } as const;
export const NodeProto = { input: 1, output: 2, name: 3, opType: 4, attribute: 5 } as const;
export const AttributeProto = { name: 1, f: 2, i: 3, s: 4, floats: 7, ints: 8, type: 20 } as const;
/** AttributeProto.AttributeType values. */
export const AttributeType = { float: 1, int: 2, string: 3, floats: 6, ints: 7 } as const;
export const TensorProto = { dims: 1, dataType: 2, name: 8, rawData: 9 } as const;
export const ValueInfoProto = { name: 1, type: 2 } as const;
export const TypeProto = { tensorType: 1 } as const;
export const TypeProtoTensor = { elemType: 1, shape: 2 } as const;
export const TensorShapeProto = { dim: 1 } as const;
export const Dimension = { dimValue: 1, dimParam: 2 } as const;

/** The IR version our writer declares. */
export const IR_VERSION = 8;
