/**
 * Cross-checks the independent Python Arrow IPC reader (test/tools/read_arrow.py)
 * against files written by the JS apache-arrow library (v21), and the numpy
 * .npy probe (test/tools/read_npy.py).
 *
 *   node --import tsx --test test/tools/arrow-reader.test.ts
 *
 * Set PYTHON=/path/to/python3 to override the interpreter.
 */
import { test } from 'node:test';
import { seededRandom } from '../../src/linalg/random.ts';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
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

const HERE = dirname(fileURLToPath(import.meta.url));
const READ_ARROW = join(HERE, 'read_arrow.py');
const READ_NPY = join(HERE, 'read_npy.py');
const PYTHON = process.env.PYTHON ?? 'python3';

interface Row {
  path: string;
  label: number | null;
  split: string;
  features: Float32Array;
}

interface PyField {
  name: string;
  type: string;
  nullable: boolean;
  listSize?: number;
}
interface PyOut {
  schema: { fields: PyField[]; metadata: Record<string, string> };
  numRows: number;
  batchRows: number[];
  columns: { path: string[]; label: (number | null)[]; split: string[]; features: (number | string)[][] };
}

function runPy(script: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(PYTHON, [script, ...args], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function readArrow(file: string, summary = false): unknown {
  const r = runPy(READ_ARROW, summary ? ['--summary', file] : [file]);
  assert.equal(r.status, 0, `read_arrow.py failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Python emits non-finite floats as strings; map them back. */
function pyFloat(v: number | string): number {
  if (typeof v === 'number') return v;
  if (v === 'NaN') return NaN;
  if (v === 'Infinity') return Infinity;
  if (v === '-Infinity') return -Infinity;
  throw new Error(`unexpected float token ${v}`);
}

/** Build an Arrow table whose record batches have the given sizes. */
function buildTable(
  rows: Row[],
  batchSizes: number[],
  dim: number,
  metadata: Map<string, string>,
  nullableLabel = false,
): Table {
  assert.equal(
    batchSizes.reduce((a, b) => a + b, 0),
    rows.length,
  );
  const fslType = new FixedSizeList(dim, new Field('item', new Float32(), false));
  const fields = [
    new Field('path', new Utf8(), false),
    new Field('label', new Int32(), nullableLabel),
    new Field('split', new Utf8(), false),
    new Field('features', fslType, false),
  ];
  const schema = new Schema(fields, metadata);
  const batches: RecordBatch[] = [];
  let at = 0;
  for (const n of batchSizes) {
    const slice = rows.slice(at, at + n);
    at += n;
    const flat = new Float32Array(n * dim);
    slice.forEach((r, i) => {
      assert.equal(r.features.length, dim);
      flat.set(r.features, i * dim);
    });
    const fsl = makeData({
      type: fslType,
      length: n,
      child: makeData({ type: new Float32(), length: n * dim, data: flat }),
    });
    const children = [
      vectorFromArray(
        slice.map((r) => r.path),
        new Utf8(),
      ).data[0],
      vectorFromArray(
        slice.map((r) => r.label),
        new Int32(),
      ).data[0],
      vectorFromArray(
        slice.map((r) => r.split),
        new Utf8(),
      ).data[0],
      fsl,
    ];
    batches.push(new RecordBatch(schema, makeData({ type: new Struct(fields), length: n, children })));
  }
  return new Table(schema, batches);
}

/** Deterministic PRNG so failures are reproducible. */
const rng = seededRandom;

const PATHS = [
  'cats/cat.1.jpg',
  'chats/été_猫.jpg',
  'dogs/ñandú 🐕.jpeg',
  '',
  'a/b/c/d/e.png',
  'emoji/😀😃.webp',
  'quote"back\\slash.jpg',
  'tab\tnew\nline.jpg',
];
const SPLITS = ['train', 'val', 'test'];

function makeRows(n: number, dim: number, seed: number, special = false): Row[] {
  const r = rng(seed);
  const rows: Row[] = [];
  for (let i = 0; i < n; i++) {
    const f = new Float32Array(dim);
    for (let j = 0; j < dim; j++) f[j] = (r() - 0.5) * 10 ** Math.floor(r() * 8 - 4);
    rows.push({
      path: `${PATHS[i % PATHS.length]}#${i}`,
      label: i % 3 === 2 ? -7 - i : i % 2,
      split: SPLITS[i % 3]!,
      features: f,
    });
  }
  if (special && n > 0 && dim >= 5) {
    rows[0]!.features.set([NaN, Infinity, -Infinity, -0, 3.4028234663852886e38]);
    if (n > 1)
      rows[1]!.features.set([1.401298464324817e-45 /* min subnormal */, 1.1754943508222875e-38, -1, 2 ** 24 + 1, 0.1]);
  }
  return rows;
}

function assertRoundTrip(
  out: PyOut,
  rows: Row[],
  dim: number,
  metadata: Map<string, string>,
  batchSizes: number[],
): void {
  assert.deepEqual(
    out.schema.fields.map((f) => [f.name, f.type]),
    [
      ['path', 'utf8'],
      ['label', 'int32'],
      ['split', 'utf8'],
      ['features', 'fixed_size_list<float32>'],
    ],
  );
  assert.equal(out.schema.fields[3]!.listSize, dim);
  assert.deepEqual(out.schema.metadata, Object.fromEntries(metadata));
  assert.equal(out.numRows, rows.length);
  assert.deepEqual(out.batchRows, batchSizes);
  assert.deepEqual(
    out.columns.path,
    rows.map((r) => r.path),
  );
  assert.deepEqual(
    out.columns.label,
    rows.map((r) => r.label),
  );
  assert.deepEqual(
    out.columns.split,
    rows.map((r) => r.split),
  );
  assert.equal(out.columns.features.length, rows.length);
  rows.forEach((r, i) => {
    const got = out.columns.features[i]!;
    assert.equal(got.length, dim, `row ${i} length`);
    for (let j = 0; j < dim; j++) {
      const g = pyFloat(got[j]!);
      // Python prints the float32 widened to double exactly; fround must be the identity on it
      assert.ok(Object.is(Math.fround(g), g), `row ${i}[${j}] ${g} is not a float32`);
      assert.ok(Object.is(g, r.features[j]!), `row ${i}[${j}]: python ${g} != js ${r.features[j]}`);
    }
  });
}

const tmp = mkdtempSync(join(tmpdir(), 'arrow-reader-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

test('python3 is available', () => {
  const v = execFileSync(PYTHON, ['--version'], { encoding: 'utf8' });
  assert.match(v, /Python 3\./);
});

test('single batch with unicode paths, special floats, metadata round-trips exactly', () => {
  const dim = 5;
  const rows = makeRows(11, dim, 1, true);
  const md = new Map([
    ['backbone', 'mobilenet_v2'],
    ['layer', 'out_relu'],
    ['note', 'été 猫 ✓'],
    ['empty', ''],
    ['json', '{"a":[1,2]}'],
  ]);
  const file = join(tmp, 'single.arrow');
  writeFileSync(file, tableToIPC(buildTable(rows, [11], dim, md), 'file'));
  assertRoundTrip(readArrow(file) as PyOut, rows, dim, md, [11]);
});

test('multi-batch file (uneven batches, incl. a 1-row batch) round-trips exactly', () => {
  const dim = 7;
  const rows = makeRows(40, dim, 2);
  const sizes = [16, 1, 16, 7];
  const md = new Map([['batches', String(sizes.length)]]);
  const file = join(tmp, 'multi.arrow');
  const table = buildTable(rows, sizes, dim, md);
  assert.equal(table.batches.length, sizes.length);
  writeFileSync(file, tableToIPC(table, 'file'));
  // sanity: apache-arrow itself reads it back
  assert.equal(tableFromIPC(readFileSync(file)).numRows, 40);
  assertRoundTrip(readArrow(file) as PyOut, rows, dim, md, sizes);
});

test('realistic width (D=1280) round-trips exactly', () => {
  const dim = 1280;
  const rows = makeRows(9, dim, 3);
  const md = new Map([
    ['backbone', 'x'],
    ['dim', String(dim)],
  ]);
  const file = join(tmp, 'wide.arrow');
  writeFileSync(file, tableToIPC(buildTable(rows, [5, 4], dim, md), 'file'));
  assertRoundTrip(readArrow(file) as PyOut, rows, dim, md, [5, 4]);
});

test('nullable column with nulls: validity bitmap honoured', () => {
  const dim = 3;
  const rows = makeRows(10, dim, 4);
  rows[1]!.label = null;
  rows[8]!.label = null;
  rows[9]!.label = null;
  const md = new Map<string, string>();
  const file = join(tmp, 'nulls.arrow');
  writeFileSync(file, tableToIPC(buildTable(rows, [10], dim, md, true), 'file'));
  const out = readArrow(file) as PyOut;
  assert.equal(out.schema.fields[1]!.nullable, true);
  assertRoundTrip(out, rows, dim, md, [10]);
});

test('empty table (zero rows) reads as zero rows', () => {
  const file = join(tmp, 'empty.arrow');
  const md = new Map([['k', 'v']]);
  writeFileSync(file, tableToIPC(buildTable([], [0], 4, md), 'file'));
  const out = readArrow(file) as PyOut;
  assert.equal(out.numRows, 0);
  assert.deepEqual(out.columns.features, []);
  assert.deepEqual(out.schema.metadata, { k: 'v' });
});

test('--summary prints list size, sums and first 3 values', () => {
  const dim = 5;
  const rows = makeRows(6, dim, 5);
  const file = join(tmp, 'summary.arrow');
  writeFileSync(file, tableToIPC(buildTable(rows, [3, 3], dim, new Map([['a', 'b']])), 'file'));
  const s = readArrow(file, true) as {
    numRows: number;
    columns: Record<
      string,
      {
        length: number;
        listSize?: number;
        sum?: number;
        firstRowSum?: number;
        firstRowFirst3?: number[];
        first3?: unknown[];
      }
    >;
  };
  assert.equal(s.numRows, 6);
  const f = s.columns.features!;
  assert.equal(f.listSize, dim);
  assert.deepEqual(f.firstRowFirst3, Array.from(rows[0]!.features.slice(0, 3)));
  const firstSum = rows[0]!.features.reduce((a, b) => a + b, 0);
  const total = rows.reduce((a, r) => a + r.features.reduce((x, y) => x + y, 0), 0);
  assert.ok(Math.abs(f.firstRowSum! - firstSum) <= 1e-9 * Math.max(1, Math.abs(firstSum)));
  assert.ok(Math.abs(f.sum! - total) <= 1e-9 * Math.max(1, Math.abs(total)));
  assert.deepEqual(
    s.columns.path!.first3,
    rows.slice(0, 3).map((r) => r.path),
  );
  assert.deepEqual(
    s.columns.label!.first3,
    rows.slice(0, 3).map((r) => r.label),
  );
});

test('refuses bad magic, stream format, truncated files, missing files', () => {
  const good = tableToIPC(buildTable(makeRows(4, 5, 6), [4], 5, new Map()), 'file');
  const cases: Record<string, Uint8Array> = {
    'text.arrow': new TextEncoder().encode('this is not arrow at all, just text\n'),
    'empty.arrow': new Uint8Array(0),
    'stream.arrow': tableToIPC(buildTable(makeRows(4, 5, 6), [4], 5, new Map()), 'stream'),
    'truncated.arrow': good.slice(0, Math.floor(good.length * 0.6)),
    'badhead.arrow': (() => {
      const b = good.slice();
      b[0] = 0x58;
      return b;
    })(),
    'badtail.arrow': (() => {
      const b = good.slice();
      b[b.length - 1] = 0x58;
      return b;
    })(),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    const file = join(tmp, name);
    writeFileSync(file, bytes);
    const r = runPy(READ_ARROW, [file]);
    assert.notEqual(r.status, 0, `${name} should be refused`);
    assert.match(r.stderr, /error/i, `${name}: expected message, got ${r.stderr}`);
    assert.equal(r.stdout, '', `${name}: nothing on stdout`);
  }
  const r = runPy(READ_ARROW, [join(tmp, 'does-not-exist.arrow')]);
  assert.notEqual(r.status, 0);
});

/** Minimal NPY v1.0 writer used only to exercise read_npy.py. */
function npyBytes(data: Float32Array, shape: number[]): Buffer {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += ' '.repeat(pad % 64) + '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  return Buffer.concat([
    pre,
    Buffer.from(header, 'latin1'),
    Buffer.from(data.buffer, data.byteOffset, data.byteLength),
  ]);
}

test('read_npy.py reports shape/dtype/sum/first via numpy', () => {
  const data = new Float32Array(12).map((_, i) => i * 0.5 - 1);
  const file = join(tmp, 'x.npy');
  writeFileSync(file, npyBytes(data, [3, 4]));
  const r = runPy(READ_NPY, [file]);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { shape: number[]; dtype: string; sum: number; first: number[]; finite: boolean };
  assert.deepEqual(out.shape, [3, 4]);
  assert.equal(out.dtype, 'float32');
  assert.equal(
    out.sum,
    data.reduce((a, b) => a + b, 0),
  );
  assert.deepEqual(out.first, Array.from(data.slice(0, 5)));
  assert.equal(out.finite, true);

  const bad = join(tmp, 'bad.npy');
  writeFileSync(bad, 'not numpy');
  assert.notEqual(runPy(READ_NPY, [bad]).status, 0);
});
