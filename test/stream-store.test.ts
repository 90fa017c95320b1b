import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import type { BackboneConfig } from '../src/backbone/backbone.ts';
import type { ImageEntry, SplitName } from '../src/dataset/scan.ts';
import { assembleCache } from '../src/pipeline/assemble.ts';
import { ARROW_BATCH_ROWS, encodeFeatureArrow } from '../src/store/arrow.ts';
import { CACHE_FORMAT_VERSION } from '../src/store/manifest.ts';
import { decodeNpy } from '../src/store/npy.ts';
import { RecordStore } from '../src/store/records.ts';
import { WriteBehind } from '../src/store/write-behind.ts';
import { silentLogger } from '../src/util/log.ts';
import { UserError } from '../src/util/errors.ts';
import { loadFeatureCache, parseMemory, readFeatureCache } from '../src/store/read.ts';
import { removeDir, tempDir } from './helpers.ts';

const TOOLS = new URL('./tools/', import.meta.url).pathname;
const D = 12;

/** Deterministic pseudo-features for image i, view v. */
function featuresOf(i: number, v: number): Float32Array {
  const f = new Float32Array(D);
  for (let d = 0; d < D; d++) f[d] = Math.sin(i * 0.37 + d * 1.3 + v * 0.11) * (1 + (i % 7));
  return f;
}

test('streamed cache (many record chunks, several Arrow batches) reads back identically via apache-arrow, the Python Arrow reader and numpy', () => {
  const dir = tempDir('stream');
  try {
    const n = ARROW_BATCH_ROWS * 2 + 1234; // more rows than one batch holds, last batch partial
    const splits: SplitName[] = ['train', 'val', 'test'];
    // Paths deliberately not in row order; image 5 and every 1000th are unreadable.
    const images: ImageEntry[] = Array.from({ length: n }, (_, i) => ({
      path: `c${i % 3}/img-${String((i * 7919) % n).padStart(6, '0')}.jpg`,
      absPath: '/nonexistent',
      className: `c${i % 3}`,
      split: splits[(i * 13) % 10 < 8 ? 0 : (i * 13) % 10 < 9 ? 1 : 2],
    }));
    const bad = (i: number) => i === 5 || i % 1000 === 999;
    const store = RecordStore.open(join(dir, 'out', 'records'), D, silentLogger);
    // Records arrive in many chunks in an order unrelated to the row order.
    for (let start = 0; start < n; start += 500) {
      const entries = [];
      for (let i = Math.min(n, start + 500) - 1; i >= start; i--)
        entries.push({ key: `k${i}`, value: bad(i) ? { error: 'corrupt JPEG' } : featuresOf(i, 0) });
      store.add(entries);
    }
    const backbone = {
      modelId: 'synthetic',
      weightsHash: 'abc',
      layer: 'l',
      pooling: 'avg',
      featureDim: D,
      preprocessing: { size: [8, 8] },
    } as unknown as BackboneConfig;
    const manifest = assembleCache({
      cacheDir: join(dir, 'out'),
      images,
      plans: images.map((_, i) => ({ viewKeys: [`k${i}`] })),
      classes: ['c0', 'c1', 'c2'],
      scanSkipped: [],
      store: RecordStore.open(join(dir, 'out', 'records'), D, silentLogger),
      backbone,
      dataRoot: '/data',
      presplit: true,
      split: { train: 0.8, val: 0.1, test: 0.1 },
      seed: 1,
      augment: undefined,
      log: silentLogger,
    });

    // The expected rows, built in memory the simple way.
    const order = images
      .map((_, i) => i)
      .filter((i) => !bad(i))
      .sort(
        (a, b) =>
          splits.indexOf(images[a]!.split!) - splits.indexOf(images[b]!.split!) ||
          (images[a]!.path < images[b]!.path ? -1 : 1),
      );
    const rows = order.length;
    assert.equal(manifest.skipped.length, n - rows);
    const features = new Float32Array(rows * D);
    order.forEach((i, r) => features.set(featuresOf(i, 0), r * D));
    const expected = {
      paths: order.map((i) => images[i]!.path),
      splits: order.map((i) => images[i]!.split!),
      labels: Int32Array.from(order, (i) => i % 3),
      views: new Int32Array(rows),
      features,
      dim: D,
    };
    const bytes = readFileSync(join(dir, 'out', 'features.arrow'));
    // Same bytes as the in-memory encoder: batching did not change the file, so format_version stays.
    const metadata = Object.fromEntries(tableFromIPC(bytes).schema.metadata);
    assert.equal(metadata['convcache.format_version'], String(CACHE_FORMAT_VERSION));
    assert.ok(
      Buffer.from(encodeFeatureArrow(expected, metadata)).equals(bytes),
      'streamed Arrow file equals the in-memory encoding',
    );

    const table = tableFromIPC(bytes);
    assert.equal(table.numRows, rows);
    assert.equal(table.batches.length, Math.ceil(rows / ARROW_BATCH_ROWS));
    assert.ok(table.batches.length >= 3);
    let r = 0;
    for (const b of table.batches) {
      const child = b.getChild('features')!.data[0]!.children[0]!;
      const vals = (child.values as Float32Array).subarray(child.offset, child.offset + b.numRows * D);
      assert.deepEqual(vals, features.subarray(r * D, (r + b.numRows) * D));
      assert.equal(b.getChild('path')!.get(0), expected.paths[r]);
      r += b.numRows;
    }

    const py = spawnSync('python3', [join(TOOLS, 'read_arrow.py'), '--summary', join(dir, 'out', 'features.arrow')], {
      encoding: 'utf8',
      maxBuffer: 1 << 26,
    });
    assert.equal(py.status, 0, py.stderr);
    const s = JSON.parse(py.stdout) as {
      numRows: number;
      batchRows: number[];
      columns: Record<string, { sum?: number; first3?: unknown[] }>;
    };
    assert.equal(s.numRows, rows);
    assert.deepEqual(
      s.batchRows,
      table.batches.map((b) => b.numRows),
    );
    const total = Array.from(features).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(s.columns.features!.sum! - total) < 1e-6 * rows);
    assert.deepEqual(s.columns.path!.first3, expected.paths.slice(0, 3));

    let off = 0;
    for (const split of splits) {
      const count = manifest.counts[split]!.total;
      const f = decodeNpy(readFileSync(join(dir, 'out', `${split}_features.npy`)));
      const l = decodeNpy(readFileSync(join(dir, 'out', `${split}_labels.npy`)));
      assert.deepEqual(f.shape, [count, D]);
      assert.deepEqual(f.data, features.subarray(off * D, (off + count) * D));
      assert.deepEqual(l.data, expected.labels.subarray(off, off + count));
      const np = spawnSync('python3', [join(TOOLS, 'read_npy.py'), join(dir, 'out', `${split}_features.npy`)], {
        encoding: 'utf8',
      });
      assert.equal(np.status, 0, np.stderr);
      const npOut = JSON.parse(np.stdout) as { shape: number[]; first: number[] };
      assert.deepEqual(npOut.shape, [count, D]);
      assert.deepEqual(npOut.first, Array.from(features.subarray(off * D, off * D + 5)));
      off += count;
    }
    assert.equal(off, rows);

    // Readers by batch: the same rows, a batch at a time; a whole load checks its memory budget first.
    writeFileSync(join(dir, 'out', 'manifest.json'), JSON.stringify(manifest));
    const cacheDir = join(dir, 'out');
    const loaded = loadFeatureCache(cacheDir);
    assert.deepEqual(loaded.splits.train!.X.data, features.subarray(0, manifest.counts.train!.total * D));
    assert.deepEqual(loaded.splits.test!.paths, expected.paths.slice(rows - manifest.counts.test!.total));
    let seen = 0;
    for (const b of readFeatureCache(cacheDir).batches('val', 700)) {
      assert.ok(b.X.rows <= 700);
      assert.equal(b.start, seen);
      assert.deepEqual(b.X.data, loaded.splits.val!.X.data.subarray(seen * D, (seen + b.X.rows) * D));
      assert.deepEqual(b.paths, loaded.splits.val!.paths.slice(seen, seen + b.X.rows));
      seen += b.X.rows;
    }
    assert.equal(seen, manifest.counts.val!.total);
    assert.throws(
      () => loadFeatureCache(cacheDir, { maxMemoryBytes: 100_000 }),
      (e: Error) =>
        e instanceof UserError &&
        /memory budget is .*--max-rows N.*--max-memory/.test(e.message) &&
        !e.message.includes('\n'),
    );
    const sub = loadFeatureCache(cacheDir, { maxRows: 1000, seed: 3 });
    assert.equal(sub.splits.train!.y.length, 1000);
    assert.equal(sub.splits.test!.y.length, manifest.counts.test!.total);
    assert.equal(parseMemory('1.5G'), 1.5 * 2 ** 30);
    assert.equal(parseMemory('512m'), 512 * 2 ** 20);
    assert.throws(() => parseMemory('lots'), UserError);
  } finally {
    removeDir(dir);
  }
});

test('record store addAsync: chunks named in call order, visible once on disk, readable by a fresh open', async () => {
  const dir = tempDir('records-async');
  try {
    const recs = join(dir, 'records');
    const s = RecordStore.open(recs, D, silentLogger);
    const first = s.addAsync([{ key: 'p', value: featuresOf(4, 0) }]);
    const second = s.addAsync([
      { key: 'q', value: featuresOf(5, 0) },
      { key: 'bad', value: { error: 'corrupt' } },
    ]);
    await Promise.all([first, second]);
    assert.deepEqual(readdirSync(recs).sort(), ['chunk-00000000.rec', 'chunk-00000001.rec']);
    assert.deepEqual(s.get('q'), featuresOf(5, 0));
    const again = RecordStore.open(recs, D, silentLogger);
    assert.equal(again.size, 3);
    assert.deepEqual(again.get('p'), featuresOf(4, 0));
    assert.equal(again.errorOf('bad'), 'corrupt');
  } finally {
    removeDir(dir);
  }
});

test('record store keeps features on disk: rows read back exactly, compaction streams into one chunk', () => {
  const dir = tempDir('records');
  try {
    const recs = join(dir, 'records');
    const a = RecordStore.open(recs, D, silentLogger, { prefix: 'chunk-s0of2-' });
    const b = RecordStore.open(recs, D, silentLogger, { prefix: 'chunk-s1of2-' });
    a.add([
      { key: 'x', value: featuresOf(1, 0) },
      { key: 'bad', value: { error: 'nope' } },
    ]);
    b.add([{ key: 'y', value: featuresOf(2, 0) }]);
    a.add([{ key: 'z', value: featuresOf(3, 0) }]);
    const all = RecordStore.open(recs, D, silentLogger);
    assert.equal(all.size, 4);
    assert.deepEqual(all.get('y'), featuresOf(2, 0));
    assert.deepEqual(all.get('bad'), { error: 'nope' });
    all.compact(new Set(['x', 'y', 'bad']));
    const again = RecordStore.open(recs, D, silentLogger);
    assert.equal(again.size, 3);
    assert.deepEqual(again.get('x'), featuresOf(1, 0));
    assert.equal(again.errorOf('bad'), 'nope');
    assert.equal(again.has('z'), false);
  } finally {
    removeDir(dir);
  }
});

test(
  'write-behind: records that arrive while a chunk is written go into the next chunk; nothing waits; a write error surfaces',
  { timeout: 30_000 },
  async () => {
    const dir = tempDir('write-behind');
    try {
      const recs = join(dir, 'records');
      const store = RecordStore.open(recs, D, silentLogger);
      // A disk that finishes a chunk only when told to (the real store writes it then).
      const done: (() => void)[] = [];
      const chunks: string[][] = [];
      let chunkStarted: (() => void) | undefined;
      const nextChunk = (): Promise<void> => new Promise((resolve) => (chunkStarted = resolve));
      const slowDisk = {
        addAsync: (entries: readonly { key: string; value: Float32Array | { error: string } }[]) => {
          chunks.push(entries.map((e) => e.key));
          chunkStarted?.();
          return new Promise<void>((resolve) => done.push(resolve)).then(() => store.addAsync(entries));
        },
      };
      const writer = new WriteBehind(slowDisk);
      const entry = (i: number) => ({ key: `k${i}`, value: featuresOf(i, 0) });
      await writer.add([entry(0), entry(1)]); // first chunk starts; add() does not wait for it
      await writer.add([entry(2)]);
      await writer.add([entry(3)]);
      assert.deepEqual(chunks, [['k0', 'k1']], 'one chunk in flight; the rest queued behind it');
      // Finishing the first chunk (the real store writes it, fsync included, however long that takes)
      // starts the next one by itself: wait for that, not for a fixed time.
      const second = nextChunk();
      done.shift()!();
      await second;
      assert.deepEqual(
        chunks,
        [
          ['k0', 'k1'],
          ['k2', 'k3'],
        ],
        'what queued meanwhile goes into the next chunk',
      );
      const drained = writer.drain();
      done.shift()!();
      await drained;
      assert.equal(RecordStore.open(recs, D, silentLogger).size, 4, 'every record on disk after drain()');

      const failing = new WriteBehind({ addAsync: () => Promise.reject(new Error('disk full')) });
      await failing.add([entry(9)]);
      await assert.rejects(failing.drain(), /disk full/);
      await assert.rejects(failing.add([entry(10)]), /disk full/);
    } finally {
      removeDir(dir);
    }
  },
);
