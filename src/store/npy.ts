/**
 * NumPy .npy format v1.0 (little-endian, C order). Written by hand because the format is tiny
 * and the bytes must be deterministic: same array -> same file.
 */
export type NpyDtype = '<f4' | '<i4' | '<f2' | '|u1';
export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  data: Float32Array | Int32Array | Uint16Array | Uint8Array;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

function dtypeOf(data: NpyArray['data'], dtype?: NpyDtype): NpyDtype {
  if (dtype) return dtype;
  if (data instanceof Float32Array) return '<f4';
  if (data instanceof Int32Array) return '<i4';
  if (data instanceof Uint8Array) return '|u1';
  return '<f2';
}

/** Encode the header + raw bytes. Returns [header, body] so large bodies are never copied. */
export function encodeNpy(
  data: NpyArray['data'],
  shape: readonly number[],
  dtype?: NpyDtype,
): [Uint8Array, Uint8Array] {
  const expected = shape.reduce((a, b) => a * b, 1);
  if (expected !== data.length) throw new Error(`npy: shape [${shape}] needs ${expected} values, got ${data.length}`);
  return [npyHeader(dtypeOf(data, dtype), shape), new Uint8Array(data.buffer, data.byteOffset, data.byteLength)];
}

/** The .npy header alone, for a body written in parts (rows of several arrays) after it. */
export function npyHeader(dtype: NpyDtype, shape: readonly number[]): Uint8Array {
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let dict = `{'descr': '${dtype}', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  // Header (magic 6 + version 2 + len 2 + dict + \n) is padded with spaces to a multiple of 64.
  const unpadded = 10 + dict.length + 1;
  dict += ' '.repeat((64 - (unpadded % 64)) % 64) + '\n';
  const header = new Uint8Array(10 + dict.length);
  header.set(MAGIC, 0);
  header[6] = 1;
  header[7] = 0;
  header[8] = dict.length & 0xff;
  header[9] = dict.length >> 8;
  for (let i = 0; i < dict.length; i++) header[10 + i] = dict.charCodeAt(i);
  return header;
}

export function decodeNpy(buf: Uint8Array): NpyArray {
  for (let i = 0; i < 6; i++) if (buf[i] !== MAGIC[i]) throw new Error('npy: bad magic');
  const major = buf[6]!;
  const headerLen =
    major === 1 ? buf[8]! | (buf[9]! << 8) : new DataView(buf.buffer, buf.byteOffset).getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(buf.subarray(start, start + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1] as NpyDtype | undefined;
  const fortran = /'fortran_order':\s*True/.test(header);
  const shapeStr = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || shapeStr === undefined) throw new Error('npy: unreadable header');
  if (fortran) throw new Error('npy: fortran order not supported');
  const shape = shapeStr
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const n = shape.reduce((a, b) => a * b, 1);
  const off = start + headerLen;
  // Copy (Buffer.slice would be a view into a shared pool) so the typed array starts at offset 0.
  const bytes = Uint8Array.prototype.slice.call(buf, off, off + n * (descr === '|u1' ? 1 : descr === '<f2' ? 2 : 4));
  let data: NpyArray['data'];
  switch (descr) {
    case '<f4':
      data = new Float32Array(bytes.buffer, 0, n);
      break;
    case '<i4':
      data = new Int32Array(bytes.buffer, 0, n);
      break;
    case '<f2':
      data = new Uint16Array(bytes.buffer, 0, n);
      break;
    case '|u1':
      data = new Uint8Array(bytes.buffer, 0, n);
      break;
    default:
      throw new Error(`npy: unsupported dtype ${descr}`);
  }
  return { dtype: descr, shape, data };
}
