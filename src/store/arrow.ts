import {
  Field,
  FixedSizeList,
  Float32,
  Int32,
  RecordBatch,
  Schema,
  Struct,
  Table,
  Utf8,
  makeData,
  tableFromIPC,
  tableToIPC,
  vectorFromArray,
} from 'apache-arrow';

/** One cache row per image, in the cache's row order (split, then path). */
export interface FeatureRows {
  paths: string[];
  labels: Int32Array;
  splits: string[];
  /** 0 = the image itself; 1..K = augmented views of a training image (extract --augment --views K). */
  views: Int32Array;
  /** rows * dim floats, row-major. */
  features: Float32Array;
  dim: number;
}

/** Rows per Arrow record batch: bounds peak memory for large caches while keeping files compact. */
export const ARROW_BATCH_ROWS = 8192;

export function featureSchema(dim: number, metadata: Record<string, string>): Schema {
  return new Schema(
    [
      new Field('path', new Utf8(), false),
      new Field('label', new Int32(), false),
      new Field('split', new Utf8(), false),
      new Field('view', new Int32(), false),
      new Field('features', new FixedSizeList(dim, new Field('item', new Float32(), false)), false),
    ],
    new Map(Object.entries(metadata)),
  );
}

/** One record batch of cache rows (all of `rows`); the streaming writer calls this per batch. */
export function featureBatch(schema: Schema, rows: FeatureRows): RecordBatch {
  const len = rows.paths.length;
  const path = vectorFromArray(rows.paths, new Utf8()).data[0]!;
  const split = vectorFromArray(rows.splits, new Utf8()).data[0]!;
  const label = makeData({ type: new Int32(), length: len, nullCount: 0, data: rows.labels });
  const view = makeData({ type: new Int32(), length: len, nullCount: 0, data: rows.views });
  const listType = schema.fields[4]!.type as FixedSizeList;
  const child = makeData({
    type: listType.children[0]!.type as Float32,
    length: len * rows.dim,
    nullCount: 0,
    data: rows.features,
  });
  const features = makeData({ type: listType, length: len, nullCount: 0, child });
  const struct = makeData({
    type: new Struct(schema.fields),
    length: len,
    nullCount: 0,
    children: [path, label, split, view, features],
  });
  return new RecordBatch(schema, struct);
}

/** Encode rows as an Arrow IPC *file* in memory (small caches and tests; extract streams, src/store/stream.ts). */
export function encodeFeatureArrow(rows: FeatureRows, metadata: Record<string, string>): Uint8Array {
  const schema = featureSchema(rows.dim, metadata);
  const n = rows.paths.length;
  const batches: RecordBatch[] = [];
  for (let start = 0; start < n; start += ARROW_BATCH_ROWS) {
    const end = Math.min(n, start + ARROW_BATCH_ROWS);
    batches.push(
      featureBatch(schema, {
        paths: rows.paths.slice(start, end),
        splits: rows.splits.slice(start, end),
        labels: rows.labels.subarray(start, end),
        views: rows.views.subarray(start, end),
        features: rows.features.subarray(start * rows.dim, end * rows.dim),
        dim: rows.dim,
      }),
    );
  }
  if (n === 0)
    batches.push(
      featureBatch(schema, {
        paths: [],
        splits: [],
        labels: new Int32Array(0),
        views: new Int32Array(0),
        features: new Float32Array(0),
        dim: rows.dim,
      }),
    );
  return tableToIPC(new Table(schema, batches), 'file');
}

/** Read a cache's Arrow file back into rows (JS side; tests also read it with an independent parser). */
export function decodeFeatureArrow(bytes: Uint8Array): { rows: FeatureRows; metadata: Record<string, string> } {
  const table = tableFromIPC(bytes);
  const n = table.numRows;
  const featType = table.schema.fields.find((f) => f.name === 'features')?.type as FixedSizeList | undefined;
  if (!featType) throw new Error('arrow: no features column');
  const dim = featType.listSize;
  const features = new Float32Array(n * dim);
  const labels = new Int32Array(n);
  const views = new Int32Array(n);
  const paths: string[] = [];
  const splits: string[] = [];
  let row = 0;
  for (const batch of table.batches) {
    const p = batch.getChild('path')!;
    const s = batch.getChild('split')!;
    const l = batch.getChild('label')!;
    const v = batch.getChild('view');
    const f = batch.getChild('features')!;
    const child = f.data[0]!.children[0]!;
    const values = child.values as Float32Array;
    features.set(values.subarray(child.offset, child.offset + batch.numRows * dim), row * dim);
    for (let i = 0; i < batch.numRows; i++) {
      paths.push(String(p.get(i)));
      splits.push(String(s.get(i)));
      labels[row + i] = Number(l.get(i));
      views[row + i] = v ? Number(v.get(i)) : 0;
    }
    row += batch.numRows;
  }
  return { rows: { paths, labels, splits, views, features, dim }, metadata: Object.fromEntries(table.schema.metadata) };
}
