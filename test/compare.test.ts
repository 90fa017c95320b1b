import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { extractFeatures, type ExtractOptions } from '../src/pipeline/extract.ts';
import { compareHeads, resolveHeadList, thumbnailDataUri } from '../src/pipeline/compare.ts';
import {
  checkHeadMatchesCache,
  defaultHeadPath,
  headMetaPath,
  readHeadMeta,
  saveTrainedHead,
  trainHead,
} from '../src/pipeline/train.ts';
import { renderHtml } from '../src/eval/report-html.ts';
import { readManifest } from '../src/store/manifest.ts';
import { loadFeatureCache, type FeatureCache } from '../src/store/read.ts';
import { silentLogger } from '../src/util/log.ts';
import { UserError } from '../src/util/errors.ts';
import { makeSubset, removeDir, runCliAsync, tempDir } from './helpers.ts';
import { DEFAULT_SPLIT } from '../src/dataset/split.ts';

function opts(data: string, out: string, extra: Partial<ExtractOptions> = {}): ExtractOptions {
  return {
    data,
    out,
    model: 'mobilenet_v1_0.75_224',
    split: DEFAULT_SPLIT,
    seed: 42,
    batch: 16,
    workers: 4,
    threads: 2,
    maxPixels: 100e6,
    quiet: true,
    log: silentLogger,
    ...extra,
  };
}

let dir: string;
let cache: string; // 20 train + 8 test per class, D=768
let cache384: string; // a shallower cut: D=384

before(async () => {
  dir = tempDir('compare');
  const data = makeSubset(join(dir, 'data'), { train: 20, test: 8 });
  cache = join(dir, 'cache');
  await extractFeatures(opts(data, cache));
  const small = makeSubset(join(dir, 'data-small'), { train: 3, test: 1 });
  cache384 = join(dir, 'cache384');
  await extractFeatures(opts(small, cache384, { layer: 'conv_pw_11_relu' }));
});
after(() => removeDir(dir));

test('compare: report.json / .md / .html on a real small cache', async () => {
  // The extension point: extra rows from <cache>/report/extra-rows.json.
  mkdirSync(join(cache, 'report'), { recursive: true });
  writeFileSync(
    join(cache, 'report', 'extra-rows.json'),
    JSON.stringify([{ name: 'finetuned-stub', kind: 'finetune', testAccuracy: 0.5, fitSeconds: 60 }]),
  );
  const out = join(dir, 'report');
  const lines: string[] = [];
  const { report } = await compareHeads({
    cache,
    out,
    heads: resolveHeadList(['logreg,knn,rf']),
    cv: 3,
    seed: 42,
    log: { info: (m) => lines.push(m), warn: (m) => lines.push(m) },
  });
  for (const h of ['logreg', 'knn', 'rf'])
    assert.ok(
      lines.some((l) => l.includes(`] ${h}: fit`)),
      `progress line for ${h}`,
    );

  const j = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
  assert.deepEqual(j, JSON.parse(JSON.stringify(report)));
  assert.equal(j.format, 'convcache-report');
  assert.deepEqual(j.cache.classes, ['cats', 'dogs']);
  assert.equal(j.cache.D, 768);
  assert.equal(j.cache.layer, 'conv_pw_13_relu');
  assert.equal(j.cache.pooling, 'avg');
  assert.equal(j.cache.model, 'mobilenet_v1_0.75_224');
  assert.deepEqual(j.cache.counts, { train: 40, test: 16 });
  assert.equal(j.cache.skipped, 0);
  assert.deepEqual(
    { train: j.split.train, val: j.split.val, test: j.split.test, src: j.split.valSource },
    { train: 36, val: 4, test: 16, src: 'carved' },
  );
  assert.equal(typeof j.verdict, 'string');
  assert.deepEqual(
    j.heads.map((h: any) => h.name),
    ['logreg', 'knn', 'rf', 'finetuned-stub'],
  );
  for (const h of j.heads.slice(0, 3)) {
    for (const k of [
      'name',
      'kind',
      'params',
      'testAccuracy',
      'valAccuracy',
      'macroF1',
      'perClass',
      'confusion',
      'fitSeconds',
      'predictMsPer1000',
      'modelBytes',
      'cv',
    ]) {
      assert.ok(k in h, `${h.name}.${k}`);
    }
    assert.ok(h.testAccuracy >= 0 && h.testAccuracy <= 1);
    assert.ok(h.modelBytes > 0 && h.fitSeconds >= 0 && h.predictMsPer1000 >= 0);
    const total = h.confusion.flat().reduce((a: number, b: number) => a + b, 0);
    assert.equal(total, 16, 'confusion sums to the test size');
    assert.equal(h.perClass.cats.support + h.perClass.dogs.support, 16);
    const diag = h.confusion[0][0] + h.confusion[1][1];
    assert.equal(diag / 16, h.testAccuracy);
    assert.equal(h.cv.folds.length, 3);
    assert.ok(Math.abs(h.cv.mean - h.cv.folds.reduce((a: number, b: number) => a + b, 0) / 3) < 1e-12);
    assert.ok(h.cv.std >= 0);
  }
  assert.equal(j.heads[3].source, 'extra');
  // The winner among the trained heads is kept for predict, with its sidecar meta.
  const saved = j.heads.filter((h: any) => h.headPath);
  assert.equal(saved.length, 1);
  assert.equal(saved[0].headPath, defaultHeadPath(cache, saved[0].kind, saved[0].name));
  assert.equal(readHeadMeta(saved[0].headPath).testAccuracy, saved[0].testAccuracy);
  assert.ok(j.misclassified === null || j.misclassified.items.length === j.misclassified.total);

  const md = readFileSync(join(out, 'report.md'), 'utf8');
  assert.equal(md.split('\n')[0], `**Verdict:** ${j.verdict}`);
  // --cv 3 was given: the choice is by CV on train+val.
  assert.equal(j.selection.by, 'cv');
  assert.match(
    j.verdict,
    /^\w+ is chosen by cross-validation on train\+val \(\d+\.\d\d%\): test accuracy \d+\.\d\d% \(95% CI [\d.]+–[\d.]+%, n=16\)\./,
  );
  assert.ok(['logreg', 'knn', 'rf'].includes(j.chosen));
  assert.equal(j.best, j.chosen);
  assert.ok(j.tied.includes(j.chosen) && j.tied.includes(j.recommended));
  for (const h of j.heads) {
    assert.ok(h.testInterval.low <= h.testAccuracy && h.testAccuracy <= h.testInterval.high, `${h.name} interval`);
    if (h.source === 'compare' && h.name !== j.chosen)
      assert.ok(h.vsChosen.pValue > 0 && h.vsChosen.pValue <= 1 && h.vsChosen.against === j.chosen);
    if (h.source === 'compare') assert.equal(h.refit.rows, 40, 'refitted on train+val');
  }
  assert.ok(md.includes('95% CI') && md.includes('McNemar'));
  for (const s of ['## Summary', '## Per class', '## Confusion']) assert.ok(md.includes(s), s);

  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.ok(html.includes('<svg'));
  assert.doesNotMatch(html, /https?:\/\//, 'self-contained: no http(s) references');
  assert.doesNotMatch(html, /<script|<link /);
  assert.equal((html.match(/aria-label="confusion matrix"/g) ?? []).length, 3);
  const wrong = j.misclassified?.total ?? 0;
  assert.equal((html.match(/data:image\/jpeg;base64,/g) ?? []).length, Math.min(wrong, 24));
});

test('thumbnails: a missing or escaping image path gives a placeholder, not a crash', async () => {
  const root = join(dir, 'data');
  assert.equal(await thumbnailDataUri(root, 'test/cats/does-not-exist.jpg'), null);
  assert.equal(await thumbnailDataUri(root, '../../etc/passwd'), null);
  const ok = await thumbnailDataUri(
    readManifest(cache).dataRoot,
    'test/cats/' + readdirFirst(join(root, 'test', 'cats')),
  );
  assert.match(ok ?? '', /^data:image\/jpeg;base64,/);
  const html = renderHtml(fakeReportWithGallery(), [
    { item: { path: 'x/missing.jpg', trueClass: 'cats', predictedClass: 'dogs', confidence: 0.9 }, dataUri: null },
  ]);
  assert.ok(html.includes('image not available'));
});

function readdirFirst(d: string): string {
  return readdirSync(d).sort()[0]!;
}

function fakeReportWithGallery(): Parameters<typeof renderHtml>[0] {
  return {
    format: 'convcache-report',
    version: 1,
    createdAt: 'now',
    toolVersion: '0',
    totalSeconds: 0,
    cache: {
      dir: '/c',
      dataRoot: '/d',
      model: 'm',
      weightsHash: 'h',
      layer: 'l',
      pooling: 'avg',
      D: 2,
      classes: ['cats', 'dogs'],
      counts: {},
      countsPerClass: {},
      skipped: 0,
    },
    split: { train: 1, val: 0, test: 1, valSource: 'none', valFraction: 0, seed: 0 },
    options: { heads: [], cv: null, tune: false, classWeight: 'none', seed: 0 },
    verdict: 'v',
    chosen: null,
    selection: null,
    tied: [],
    recommended: null,
    best: null,
    heads: [],
    misclassified: {
      head: 'h',
      total: 1,
      items: [{ path: 'x/missing.jpg', trueClass: 'cats', predictedClass: 'dogs', confidence: 0.9 }],
    },
  };
}

test('train-head CLI: trains, prints val and test accuracy, saves head + meta; --eval scores it', async () => {
  const headPath = join(dir, 'heads', 'lr.json');
  const r = await runCliAsync('train-head', [
    '--head',
    'logreg',
    '--cache',
    cache,
    '--opt',
    'C=0.5',
    '--out',
    headPath,
    '--quiet',
  ]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^val accuracy: \d+\.\d\d% \(4 rows; 10% carved from train, seed 42\)$/m);
  assert.match(r.stdout, /^test accuracy: \d+\.\d\d% \(16 rows\)$/m);
  assert.ok(existsSync(headPath) && existsSync(headMetaPath(headPath)));
  const meta = readHeadMeta(headPath);
  assert.equal(meta.kind, 'logreg');
  assert.equal(meta.params.C, 0.5);
  assert.deepEqual(meta.classes, ['cats', 'dogs']);
  assert.equal(meta.cacheDir, cache);
  assert.equal(meta.backbone.layer, 'conv_pw_13_relu');
  assert.equal(meta.backbone.featureDim, 768);
  assert.deepEqual(meta.split, { train: 36, val: 4, test: 16, valSource: 'carved', valFraction: 0.1 });

  const e = await runCliAsync('train-head', ['--eval', headPath, '--cache', cache]);
  assert.equal(e.status, 0, e.stderr);
  assert.match(e.stdout, /^test accuracy: \d+\.\d\d%/m);
});

test('train-head / compare CLIs: bad --opt / unknown head → exit 2 and one line on stderr', async () => {
  // Child processes in parallel (each pays the CLI start-up); the other cases in-process.
  const [a, b, c] = await Promise.all([
    runCliAsync('train-head', ['--head', 'svm', '--opt', 'C=abc', '--cache', cache]),
    runCliAsync('train-head', ['--head', 'svm', '--opt', 'C', '--cache', cache]),
    runCliAsync('compare', ['--heads', 'logreg,xgboost', '--cache', cache]),
  ]);
  for (const r of [a, b, c]) {
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  assert.match(a.stderr, /^train-head: error: svm: parameter C must be a number/);
  assert.match(b.stderr, /^train-head: error: head option 'C' must look like name=value/);
  assert.match(c.stderr, /^compare: error: unknown head 'xgboost' in --heads \(valid: all, logreg, svm-linear/);
  await assert.rejects(
    trainHead({ cache, kind: 'svm', params: { nope: 1 } }),
    (e: unknown) => e instanceof UserError && /unknown parameter 'nope'/.test(e.message),
  );
  await assert.rejects(
    trainHead({ cache, kind: 'xgboost' }),
    (e: unknown) => e instanceof UserError && /unknown head 'xgboost'/.test(e.message),
  );
});

test('a head trained on one cache is refused on a cache with different features', async () => {
  const headPath = join(dir, 'heads', 'lr.json');
  if (!existsSync(headPath)) {
    await saveTrainedHead(await trainHead({ cache, kind: 'logreg', log: silentLogger }), headPath);
  }
  const r = await runCliAsync('train-head', ['--eval', headPath, '--cache', cache384]);
  assert.equal(r.status, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /D 768 vs 384/);
  assert.match(lines[0]!, /layer conv_pw_13_relu vs conv_pw_11_relu/);

  // Same D but other weights / pooling are refused too.
  const meta = readHeadMeta(headPath);
  const m = readManifest(cache);
  checkHeadMatchesCache(meta, m, cache); // its own cache: fine
  assert.throws(
    () => checkHeadMatchesCache(meta, { ...m, backbone: { ...m.backbone, weightsHash: '0000000000000000' } }, 'x'),
    (e: unknown) => e instanceof UserError && /weights/.test(e.message),
  );
  assert.throws(
    () => checkHeadMatchesCache(meta, { ...m, backbone: { ...m.backbone, pooling: 'max' } }, 'x'),
    /pooling avg vs max/,
  );
});

test('default head paths: <cache>/heads/<kind>.json, a directory for dense; sidecar beside it', () => {
  assert.equal(defaultHeadPath('/c', 'svm'), '/c/heads/svm.json');
  assert.equal(defaultHeadPath('/c', 'dense'), '/c/heads/dense');
  assert.equal(headMetaPath('/c/heads/dense/'), '/c/heads/dense.meta.json');
  assert.equal(headMetaPath('/c/heads/svm.json'), '/c/heads/svm.json.meta.json');
});

test('selection never looks at test: scrambled test labels leave the chosen head and every hyper-parameter unchanged', async () => {
  const c = loadFeatureCache(cache);
  const te = c.splits.test!;
  // Every test label changed (two classes: flipped), so any use of test in the choice would show.
  const scrambled: FeatureCache = {
    ...c,
    splits: { ...c.splits, test: { ...te, y: te.y.map((v) => 1 - v) as Int32Array } },
  };
  const run = (fc: FeatureCache) =>
    compareHeads({
      cache: fc,
      out: join(dir, `report-scramble-${fc === c ? 'a' : 'b'}`),
      heads: resolveHeadList(['logreg,knn,dense']),
      tune: { by: 'val' },
      seed: 7,
      saveHeads: 'none',
      extraRowsFile: null,
      log: silentLogger,
    });
  const a = (await run(c)).report;
  const b = (await run(scrambled)).report;
  assert.ok(a.chosen !== null);
  assert.equal(b.chosen, a.chosen);
  assert.deepEqual(b.selection, a.selection);
  for (const [i, h] of a.heads.entries()) {
    const g = b.heads[i]!;
    assert.equal(g.name, h.name);
    assert.deepEqual(g.params, h.params, `${h.name} params`);
    assert.deepEqual(g.tuning?.chosen, h.tuning?.chosen, `${h.name} tuning`);
    assert.equal(g.valAccuracy, h.valAccuracy);
    assert.ok(
      Math.abs(g.testAccuracy! - (1 - h.testAccuracy!)) < 1e-12,
      `${h.name}: the scrambled labels did reach the test score`,
    );
  }
  assert.ok(a.heads.find((h) => h.name === 'dense')!.params.epochs !== undefined);
});
