import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  readFileSync,
  readdirSync,
  mkdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { closePrestarted, extractFeatures, planExtraction, type ExtractOptions } from '../src/pipeline/extract.ts';
import { RecordStore } from '../src/store/records.ts';
import { decodeFeatureArrow } from '../src/store/arrow.ts';
import { decodeNpy, encodeNpy } from '../src/store/npy.ts';
import { readManifest } from '../src/store/manifest.ts';
import { FILE_KEYS_NAME } from '../src/store/file-keys.ts';
import { assignSplits, DEFAULT_SPLIT } from '../src/dataset/split.ts';
import { scanDataset, type ImageEntry } from '../src/dataset/scan.ts';
import { silentLogger, type Logger } from '../src/util/log.ts';
import { UserError } from '../src/util/errors.ts';
import { parseAugmentSpec } from '../src/images/augment.ts';
import { loadFeatureCache } from '../src/store/read.ts';
import { prepareSplits } from '../src/pipeline/train.ts';
import { makeHostileDataset, defaultSourceJpegs } from './fixtures-hostile.ts';
import { makeSubset, removeDir, ROOT, runCli, runCliAsync, tempDir } from './helpers.ts';

/** Committed chunks after which the interrupted extraction dies (of 16 batches of 4). */
const CRASH_AFTER = 3;

function opts(data: string, out: string, extra: Partial<ExtractOptions> = {}): ExtractOptions {
  return {
    data,
    out,
    model: 'mobilenet_v1_0.75_224',
    split: DEFAULT_SPLIT,
    seed: 42,
    batch: 8,
    workers: 4,
    threads: 2,
    maxPixels: 100e6,
    quiet: true,
    log: silentLogger,
    ...extra,
  };
}

function collectingLogger(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  return { warnings, info: () => {}, warn: (m) => warnings.push(m) };
}

function python(args: string[]): any {
  return JSON.parse(execFileSync('python3', args, { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 28 }));
}

test('stratified split is deterministic, seeded and per class', () => {
  const images: ImageEntry[] = [];
  for (const c of ['a', 'b'])
    for (let i = 0; i < 50; i++) images.push({ path: `${c}/${i}.jpg`, absPath: '', className: c });
  const f = { train: 0.8, val: 0.1, test: 0.1 };
  const s1 = assignSplits(images, f, 7).map((e) => e.split);
  const s2 = assignSplits([...images].reverse(), f, 7).map((e) => e.split);
  assert.deepEqual(s1, s2, 'input order must not matter');
  assert.notDeepEqual(
    s1,
    assignSplits(images, f, 8).map((e) => e.split),
    'seed must matter',
  );
  const out = assignSplits(images, f, 7);
  for (const c of ['a', 'b']) {
    const cls = out.filter((e) => e.className === c);
    assert.deepEqual(
      ['train', 'val', 'test'].map((s) => cls.filter((e) => e.split === s).length),
      [40, 5, 5],
    );
  }
});

test('npy encoder: numpy reads our files and our decoder reads them back', () => {
  const dir = tempDir('npy');
  try {
    const f = new Float32Array([1.5, -2, 3.25, 0, 1e-30, 7]);
    const [h, b] = encodeNpy(f, [2, 3]);
    assert.equal(h.length % 64, 0, 'header padded to 64 bytes');
    writeFileSync(join(dir, 'f.npy'), Buffer.concat([h, b]));
    const py = python(['test/tools/read_npy.py', join(dir, 'f.npy')]);
    assert.deepEqual(py.shape, [2, 3]);
    assert.equal(py.dtype, 'float32');
    assert.ok(Math.abs(py.sum - 9.75) < 1e-6);
    const back = decodeNpy(new Uint8Array(Buffer.concat([h, b])));
    assert.deepEqual(Array.from(back.data), Array.from(f));
  } finally {
    removeDir(dir);
  }
});

test('extract: cache files, manifest, and independent readers agree; re-run reuses everything', async () => {
  const dir = tempDir('extract');
  try {
    const data = makeSubset(join(dir, 'data'), { train: 6, test: 3 });
    const out = join(dir, 'cache');
    const { manifest } = await extractFeatures(opts(data, out));
    assert.deepEqual(manifest.classes, ['cats', 'dogs']);
    assert.deepEqual(manifest.split, { mode: 'folders' });
    assert.equal(manifest.counts.train?.total, 12);
    assert.equal(manifest.counts.test?.total, 6);
    assert.deepEqual(manifest.counts.train?.perClass, { cats: 6, dogs: 6 });
    assert.equal(manifest.backbone.layer, 'conv_pw_13_relu');
    assert.equal(manifest.backbone.pooling, 'avg');
    assert.equal(manifest.backbone.featureDim, 768);
    assert.deepEqual(manifest.backbone.preprocessing.mean, [0.5, 0.5, 0.5]);
    assert.match(manifest.backbone.weightsHash, /^[0-9a-f]{16}$/);
    assert.equal(manifest.timings.computed, 18);
    assert.deepEqual(readManifest(out).classes, ['cats', 'dogs']);

    // Arrow, read by the JS library and by an independent Python parser.
    const arrowBytes = readFileSync(join(out, 'features.arrow'));
    const { rows, metadata } = decodeFeatureArrow(arrowBytes);
    assert.equal(rows.paths.length, 18);
    assert.deepEqual(rows.splits, [...Array(12).fill('train'), ...Array(6).fill('test')]);
    assert.deepEqual(rows.paths.slice(0, 12), [...rows.paths.slice(0, 12)].sort());
    assert.ok(rows.paths.every((p, i) => p.startsWith(`${rows.splits[i]}/${rows.labels[i] === 0 ? 'cats' : 'dogs'}/`)));
    assert.deepEqual(JSON.parse(metadata['convcache.classes']!), ['cats', 'dogs']);
    const py = python(['test/tools/read_arrow.py', join(out, 'features.arrow')]);
    assert.equal(py.numRows, 18);
    assert.deepEqual(py.columns.path, rows.paths);
    assert.deepEqual(py.columns.label, Array.from(rows.labels));
    assert.deepEqual(
      py.schema.fields.map((f: any) => f.name),
      ['path', 'label', 'split', 'view', 'features'],
    );
    assert.equal(py.schema.fields[4].listSize, 768);
    assert.ok(py.columns.view.every((v: number) => v === 0));
    assert.equal(py.schema.metadata['convcache.layer'], 'conv_pw_13_relu');
    for (let r = 0; r < 18; r++)
      assert.deepEqual(py.columns.features[r], Array.from(rows.features.subarray(r * 768, (r + 1) * 768)));
    // ReLU6 features, pooled: in [0, 6] and not all zero.
    assert.ok(rows.features.every((v) => v >= 0 && v <= 6) && rows.features.some((v) => v > 0.5));

    // .npy files hold exactly the Arrow rows of their split, in the same order.
    const trainF = decodeNpy(readFileSync(join(out, 'train_features.npy')));
    const testL = decodeNpy(readFileSync(join(out, 'test_labels.npy')));
    assert.deepEqual(trainF.shape, [12, 768]);
    assert.deepEqual(Array.from(trainF.data), Array.from(rows.features.subarray(0, 12 * 768)));
    assert.deepEqual(Array.from(testL.data), Array.from(rows.labels.subarray(12)));
    const pyNpy = python(['test/tools/read_npy.py', join(out, 'train_features.npy')]);
    assert.deepEqual(pyNpy.shape, [12, 768]);
    assert.equal(pyNpy.dtype, 'float32');

    // The schedule does not change a byte: two sessions (the default for 2 threads, batches of 8 in
    // flight side by side) against one session on the JS thread with another batch size.
    const one = join(dir, 'one-session');
    const single = await extractFeatures(opts(data, one, { sessions: 1, batch: 5 }));
    assert.equal(single.manifest.timings.computed, 18);
    assert.ok(readFileSync(join(one, 'features.arrow')).equals(arrowBytes), 'one session gives the same cache');

    // Re-run: nothing recomputed, identical bytes, and no output file rewritten (same inode, same mtime).
    // records/file-keys.tsv is left out: it may legitimately gain the images that were too fresh to
    // remember during the first run (src/store/file-keys.ts).
    const identity = (): Record<string, string> =>
      Object.fromEntries(
        [...readdirSync(out), ...readdirSync(join(out, 'records')).map((f) => join('records', f))]
          .filter((f) => f !== join('records', FILE_KEYS_NAME) && !statSync(join(out, f)).isDirectory())
          .map((f) => {
            const st = statSync(join(out, f), { bigint: true });
            return [f, `${st.ino}:${st.mtimeNs}:${st.size}`];
          }),
      );
    const before = identity();
    assert.ok(before['manifest.json'] && before['records/assembled.json'], 'the assembly marker is written');
    const again = await extractFeatures(opts(data, out));
    assert.equal(again.manifest.timings.computed, 0);
    assert.equal(again.manifest.timings.reused, 18);
    assert.ok(readFileSync(join(out, 'features.arrow')).equals(arrowBytes));
    assert.deepEqual(identity(), before, 'a no-op re-run writes nothing');
    assert.deepEqual(readManifest(out).timings, manifest.timings, 'the manifest still describes the run that wrote it');
    // A deleted output is noticed and written again, with the same bytes.
    const npyBytes = readFileSync(join(out, 'test_labels.npy'));
    rmSync(join(out, 'test_labels.npy'));
    await extractFeatures(opts(data, out));
    assert.ok(readFileSync(join(out, 'test_labels.npy')).equals(npyBytes));
    assert.ok(readFileSync(join(out, 'features.arrow')).equals(arrowBytes));

    // Adding images computes only those.
    makeSubset(join(dir, 'data'), { train: 8 });
    const more = await extractFeatures(opts(data, out));
    assert.equal(more.manifest.timings.computed, 4);
    assert.equal(more.manifest.counts.train?.total, 16);
    assert.equal(readdirSync(join(out, 'records')).filter((f) => f.endsWith('.rec')).length, 1, 'records compacted');
  } finally {
    removeDir(dir);
  }
});

test("a first run keys the files where they are decoded (the sessions, or decode threads): records keyed by every file's sha1, a duplicate file gives equal rows, later runs hash up front", async () => {
  const dir = tempDir('keys');
  try {
    const data = makeSubset(join(dir, 'data'), { train: 3, test: 1 });
    const original = join(data, 'train', 'cats', readdirSync(join(data, 'train', 'cats')).sort()[0]!);
    copyFileSync(original, join(data, 'train', 'cats', 'zz-copy.jpg'));
    writeFileSync(join(data, 'train', 'dogs', 'broken.jpg'), readFileSync(original).subarray(0, 40));
    const out = join(dir, 'cache');
    const first = await planExtraction(opts(data, out), undefined, undefined, true);
    try {
      assert.ok(first.runner && !first.pool, 'both sessions start before any hashing, and decode their own batches');
      const runner = await first.runner;
      assert.equal(runner.parallel, 2);
      assert.equal(runner.decodes, true);
    } finally {
      await closePrestarted(first);
      first.store.close();
    }
    const threads = await planExtraction(opts(data, out, { decodeInSessions: false }), undefined, undefined, true);
    try {
      assert.ok(threads.pool && threads.runner, 'without: decode threads beside the sessions, started early too');
      assert.equal((await threads.runner).decodes, false);
      assert.equal(threads.keysFromDecode, true);
    } finally {
      await closePrestarted(threads);
      threads.store.close();
    }
    assert.equal(first.keysFromDecode, true, 'nothing cached yet: no hashing before the run');
    assert.equal(first.plans, null);
    assert.ok(first.jobs.every((j) => j.keys.length === 0 && j.planFor));

    const log = collectingLogger();
    const { manifest } = await extractFeatures(opts(data, out, { log }));
    assert.equal(manifest.timings.computed, 10, 'every image computed (the duplicate too)');
    assert.deepEqual(
      manifest.skipped.map((s) => s.path),
      ['train/dogs/broken.jpg'],
    );
    const sha1 = (f: string): string => createHash('sha1').update(readFileSync(f)).digest('hex');
    const store = RecordStore.open(join(out, 'records'), 768, silentLogger);
    for (const img of scanDataset(data, silentLogger).images)
      assert.ok(store.has(sha1(img.absPath)), `${img.path}: its record is keyed by the file's sha1`);
    assert.match(
      store.errorOf(sha1(join(data, 'train', 'dogs', 'broken.jpg'))) ?? '',
      /./,
      'the bad file: an error record',
    );
    store.close();
    const { rows } = decodeFeatureArrow(readFileSync(join(out, 'features.arrow')));
    const row = (p: string): number[] => {
      const r = rows.paths.indexOf(p);
      return Array.from(rows.features.subarray(r * 768, (r + 1) * 768));
    };
    assert.deepEqual(row('train/cats/zz-copy.jpg'), row(`train/cats/${original.split('/').pop()}`));

    // Something is cached now: keys are hashed (or remembered) before the run, as before.
    makeSubset(join(dir, 'data'), { train: 4 });
    const second = await planExtraction(opts(data, out), undefined, undefined, true);
    await closePrestarted(second);
    second.store.close();
    assert.equal(second.keysFromDecode, false);
    assert.equal(second.jobs.length, 2, 'only the two new images');
    assert.ok(second.jobs.every((j) => j.keys[0] === sha1(j.absPath)));
  } finally {
    removeDir(dir);
  }
});

test('extract --augment --views K: augmented training views beside the originals, val/test untouched, resumable', async () => {
  const dir = tempDir('aug');
  try {
    const data = makeSubset(join(dir, 'data'), { train: 4, test: 2 });
    const out = join(dir, 'cache');
    const aug = { spec: parseAugmentSpec('flip,rotate=15,zoom=0.1,shift=0.1,brightness=0.2'), views: 2 };
    const { manifest } = await extractFeatures(opts(data, out, { augment: aug }));
    assert.equal(manifest.counts.train?.total, 8);
    assert.deepEqual(manifest.augment, {
      spec: 'flip,rotate=15,zoom=0.1,shift=0.1,brightness=0.2',
      views: 2,
      seed: 42,
      rows: 16,
    });
    assert.equal(manifest.timings.computed, 8 * 3 + 4);
    const { rows } = decodeFeatureArrow(readFileSync(join(out, 'features.arrow')));
    assert.equal(rows.paths.length, 8 * 3 + 4);
    assert.deepEqual(Array.from(rows.views.subarray(0, 6)), [0, 1, 2, 0, 1, 2]);
    assert.ok(
      rows.splits.every((s, i) => s === 'train' || rows.views[i] === 0),
      'test images are never augmented',
    );
    const D = 768;
    const differs = (a: number, b: number) =>
      rows.features.subarray(a * D, (a + 1) * D).some((v, j) => v !== rows.features[b * D + j]);
    assert.ok(differs(0, 1) && differs(1, 2), 'views differ from the original and from each other');
    const augF = decodeNpy(readFileSync(join(out, 'train_aug_features.npy')));
    const augV = decodeNpy(readFileSync(join(out, 'train_aug_views.npy')));
    assert.deepEqual(augF.shape, [16, 768]);
    assert.deepEqual(Array.from(augV.data).slice(0, 4), [1, 2, 1, 2]);
    assert.deepEqual(decodeNpy(readFileSync(join(out, 'train_features.npy'))).shape, [8, 768]);
    const before = readFileSync(join(out, 'features.arrow'));
    const again = await extractFeatures(opts(data, out, { augment: aug }));
    assert.equal(again.manifest.timings.computed, 0);
    assert.ok(readFileSync(join(out, 'features.arrow')).equals(before), 'same views drawn again: same bytes');
    // Heads see the views in training but never a carved-out validation image's views.
    const cache = loadFeatureCache(out);
    const s = prepareSplits(cache, 0.25, 1);
    assert.equal(s.val?.y.length, 2);
    assert.equal(s.train.y.length, 6 * 3);
  } finally {
    removeDir(dir);
  }
});

test('extract without split folders uses the seeded stratified split', async () => {
  const dir = tempDir('strat');
  try {
    const data = join(dir, 'flat');
    makeSubset(join(dir, 'tmp'), { train: 10 });
    mkdirSync(data);
    execFileSync('cp', ['-r', join(dir, 'tmp', 'train', 'cats'), join(dir, 'tmp', 'train', 'dogs'), data]);
    const { manifest } = await extractFeatures(
      opts(data, join(dir, 'c'), { split: { train: 0.6, val: 0.2, test: 0.2 }, seed: 3 }),
    );
    assert.deepEqual(manifest.split, { mode: 'stratified', fractions: [0.6, 0.2, 0.2], seed: 3 });
    assert.deepEqual(
      [manifest.counts.train?.total, manifest.counts.val?.total, manifest.counts.test?.total],
      [12, 4, 4],
    );
    assert.ok(existsSync(join(dir, 'c', 'val_features.npy')));
  } finally {
    removeDir(dir);
  }
});

test('hostile inputs are skipped with reasons and counted; the run goes on', async () => {
  const dir = tempDir('hostile');
  try {
    const root = join(dir, 'data');
    const fx = await makeHostileDataset(root, defaultSourceJpegs(3));
    const log = collectingLogger();
    const { manifest } = await extractFeatures(
      opts(root, join(dir, 'cache'), { log, split: { train: 1, val: 0, test: 0 } }),
    );
    const { rows } = decodeFeatureArrow(readFileSync(join(dir, 'cache', 'features.arrow')));
    assert.deepEqual([...rows.paths].sort(), [...fx.valid].sort(), 'exactly the valid images are cached');
    const skipped = new Map(manifest.skipped.map((s) => [s.path, s.reason]));
    for (const bad of fx.bad)
      assert.ok(skipped.has(bad.path), `${bad.path} (${bad.why}) should be recorded as skipped`);
    assert.match(skipped.get(fx.bad.find((b) => b.why === 'pixel-limit')!.path)!, /pixel limit/);
    for (const ign of fx.ignored) {
      assert.ok(!rows.paths.includes(ign), `${ign} must not be cached`);
      // A symlink escaping the root is worth a warning; everything else (dotfiles, non-images, loops) is silent.
      if (/^dogs\/(outside|passwd)\.jpg$/.test(ign)) assert.match(skipped.get(ign) ?? '', /outside the data root/);
      else assert.ok(!skipped.has(ign), `${ign} must be ignored silently`);
    }
    assert.ok(log.warnings.length >= fx.bad.length, 'one warning per bad file');
    assert.ok(
      rows.paths.some((p) => p.includes('été')),
      'unicode names survive',
    );
    for (let r = 0; r < rows.paths.length; r++)
      assert.equal(rows.labels[r], rows.paths[r]!.startsWith('cats/') ? 0 : 1);
  } finally {
    removeDir(dir);
    removeDir(`${join(dir, 'data')}-outside`);
  }
});

test('scan errors: missing root, no images, class only in test', () => {
  const dir = tempDir('scan');
  try {
    assert.throws(
      () => scanDataset(join(dir, 'missing'), silentLogger),
      (e: unknown) => e instanceof UserError && /does not exist/.test(e.message),
    );
    mkdirSync(join(dir, 'empty', 'cats'), { recursive: true });
    writeFileSync(join(dir, 'empty', 'cats', 'notes.txt'), 'x');
    assert.throws(() => scanDataset(join(dir, 'empty'), silentLogger), /no images found/);
    makeSubset(join(dir, 'split'), { train: 1, test: 1 });
    mkdirSync(join(dir, 'split', 'test', 'birds'));
    execFileSync('cp', [
      join(dir, 'split', 'test', 'cats', readdirSync(join(dir, 'split', 'test', 'cats'))[0]!),
      join(dir, 'split', 'test', 'birds', 'b.jpg'),
    ]);
    assert.throws(() => scanDataset(join(dir, 'split'), silentLogger), /'birds' appears in test\/ but not in train\//);
    const one = join(dir, 'one', 'cats');
    mkdirSync(one, { recursive: true });
    execFileSync('cp', [join(dir, 'split', 'test', 'birds', 'b.jpg'), join(one, 'x.jpg')]);
    mkdirSync(join(dir, 'one', 'dogs'));
    const log = collectingLogger();
    scanDataset(join(dir, 'one'), log);
    assert.ok(log.warnings.some((w) => /only one class/.test(w)));
    assert.ok(
      log.warnings.some((w) => /folder dogs\/ has no images/.test(w)),
      log.warnings.join('; '),
    );
  } finally {
    removeDir(dir);
  }
});

test('CLI: bad arguments give one line and a non-zero exit, no stack trace', () => {
  const run = (args: string[]) => runCli('extract', args);
  for (const args of [
    ['--data', '/nonexistent/dir'],
    ['--pool', 'median'],
    ['--batch', 'x'],
    ['--bogus'],
    ['--split', '0.5,0.5'],
  ]) {
    const r = run(args);
    assert.equal(r.status, 2, `${args.join(' ')} should exit 2`);
    const lines = r.stderr.split('\n').filter((l) => l.trim() && !l.startsWith('npm warn'));
    assert.equal(lines.length, 1, `one line for ${args.join(' ')}, got:\n${r.stderr}`);
    assert.match(lines[0]!, /^extract: error: /);
  }
  assert.match(run(['--help']).stdout, /--layer NAME/);
});

test('kill -9 or Ctrl-C mid-run, then resume: finishes without recomputing and matches an uninterrupted run byte for byte', async () => {
  const dir = tempDir('resume');
  try {
    const data = makeSubset(join(dir, 'data'), { train: 24, test: 8 });
    const straight = join(dir, 'straight');
    await extractFeatures(opts(data, straight));
    const killed = join(dir, 'killed');
    // The child SIGKILLs itself right after its third committed batch (a test hook in RecordStore),
    // so the interruption is certain and lands mid-run, not after the child happened to finish.
    const child = await runCliAsync('extract', ['--data', data, '--out', killed, '--batch', '4', '--quiet'], {
      env: { ...process.env, CONVCACHE_TEST_CRASH_AFTER_CHUNKS: String(CRASH_AFTER) },
    });
    assert.equal(child.signal, 'SIGKILL', `the child must have been killed, got exit ${child.status}: ${child.stderr}`);
    const chunks = readdirSync(join(killed, 'records')).filter((f) => f.endsWith('.rec')).length;
    assert.equal(chunks, CRASH_AFTER, 'exactly the committed chunks are on disk');
    assert.ok(!existsSync(join(killed, 'manifest.json')), 'killed before finishing');
    // A chunk holds one batch of 4, or more when batches finished while the one before was being
    // written (store/write-behind.ts): the resume reuses exactly the records of the committed chunks.
    const committed = RecordStore.open(join(killed, 'records'), 768, silentLogger);
    const onDisk = committed.size;
    committed.close();
    assert.ok(onDisk >= CRASH_AFTER * 4 && onDisk % 4 === 0 && onDisk < 64, `${onDisk} records committed`);
    const { manifest } = await extractFeatures(opts(data, killed));
    assert.equal(manifest.timings.reused, onDisk, `resume reused ${manifest.timings.reused} finished images`);
    assert.equal(manifest.timings.computed + manifest.timings.reused, 64);
    for (const f of [
      'features.arrow',
      'train_features.npy',
      'train_labels.npy',
      'test_features.npy',
      'test_labels.npy',
    ]) {
      assert.ok(readFileSync(join(killed, f)).equals(readFileSync(join(straight, f))), `${f} differs after resume`);
    }

    // Ctrl-C mid-run with two sessions (the hook sends SIGINT after the 2nd chunk, while the sessions'
    // threads are inside run()): the one line, the process ends by SIGINT (exit() would tear the
    // threads down and abort with a native 'Napi::Error'), and the resume equals the straight run.
    const interrupted = join(dir, 'interrupted');
    const ctrlC = await runCliAsync(
      'extract',
      ['--data', data, '--out', interrupted, '--batch', '4', '--threads', '2', '--sessions', '2', '--quiet'],
      { env: { ...process.env, CONVCACHE_TEST_CRASH_AFTER_CHUNKS: '2', CONVCACHE_TEST_CRASH_SIGNAL: 'SIGINT' } },
    );
    assert.equal(ctrlC.signal, 'SIGINT', `ended by SIGINT, got exit ${ctrlC.status}: ${ctrlC.stderr}`);
    assert.deepEqual(
      ctrlC.stderr.split('\n').filter((l) => l.trim() && !l.startsWith('npm warn')),
      ['extract: interrupted; finished batches are saved, re-run the same command to resume'],
    );
    const resumed = await extractFeatures(opts(data, interrupted));
    assert.ok(resumed.manifest.timings.reused >= 8, `${resumed.manifest.timings.reused} reused after Ctrl-C`);
    assert.ok(readFileSync(join(interrupted, 'features.arrow')).equals(readFileSync(join(straight, 'features.arrow'))));
  } finally {
    removeDir(dir);
  }
});
