import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { encodeModel, GraphBuilder } from '../src/onnx/write.ts';
import { DataType } from '../src/onnx/schema.ts';
import { downloadFile } from '../src/backbone/download.ts';
import { resolveModel } from '../src/backbone/resolve.ts';
import { prepareBackbone } from '../src/backbone/backbone.ts';
import { ONNX_ZOO, type OnnxZooEntry } from '../src/backbone/onnx-zoo.ts';
import { UserError } from '../src/util/errors.ts';
import type { Logger } from '../src/util/log.ts';
import { removeDir, tempDir } from './helpers.ts';

/** A small classifier graph (conv → GAP → Gemm) with ~200 kB of weights, so downloads take several chunks. */
function smallModel(): Uint8Array {
  const b = new GraphBuilder();
  const w = b.constFloat(
    'w',
    [64, 3, 3, 3],
    new Float32Array(64 * 27).map((_, i) => Math.sin(i) * 0.1),
  );
  const conv = b.node('Conv', ['x', w], 'conv', [{ name: 'pads', kind: 'ints', value: [1, 1, 1, 1] }], 'trunk');
  const gap = b.node('GlobalAveragePool', [b.node('Relu', [conv], 'relu', [], 'act')], 'gap');
  const flat = b.node('Flatten', [gap], 'flat');
  b.node(
    'Gemm',
    [
      flat,
      b.constFloat(
        'fc',
        [800, 64],
        new Float32Array(800 * 64).map((_, i) => Math.cos(i) * 0.01),
      ),
    ],
    'fc',
    [{ name: 'transB', kind: 'int', value: 1 }],
    'logits',
  );
  return encodeModel({
    producer: 'test',
    opset: 13,
    graph: {
      name: 'g',
      nodes: b.nodes,
      initializers: b.inits,
      inputs: [{ name: 'x', dataType: DataType.FLOAT, shape: ['N', 3, 8, 8] }],
      outputs: [{ name: 'logits', dataType: DataType.FLOAT, shape: ['N', 800] }],
    },
  });
}

interface Served {
  url: string;
  server: Server;
  requests: IncomingHttpHeaders[];
  cutNextAfter: { bytes?: number };
}

/** node:http on 127.0.0.1 serving `body` at /m/model.onnx with Range support; can drop a connection mid-body. */
async function serve(body: Uint8Array): Promise<Served> {
  const requests: IncomingHttpHeaders[] = [];
  const cutNextAfter: { bytes?: number } = {};
  const server = createServer((req, res) => {
    requests.push(req.headers);
    if (req.url !== '/m/model.onnx') {
      res.writeHead(404).end();
      return;
    }
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''));
    if (m) {
      start = Number(m[1]);
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, {
        'content-length': body.length - start,
        'content-range': `bytes ${start}-${body.length - 1}/${body.length}`,
      });
    } else res.writeHead(200, { 'content-length': body.length });
    const cut = cutNextAfter.bytes;
    cutNextAfter.bytes = undefined;
    if (cut !== undefined) {
      // Send part of the body, then drop the connection: the client sees a premature close.
      res.write(Buffer.from(body.subarray(start, start + cut)), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(Buffer.from(body.subarray(start)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/m/model.onnx`, server, requests, cutNextAfter };
}

function collecting(): Logger & { infos: string[]; warns: string[] } {
  const infos: string[] = [];
  const warns: string[] = [];
  return { infos, warns, info: (m) => infos.push(m), warn: (m) => warns.push(m) };
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('download: full, resumed after a cut-off (Range on the .part), checksum mismatch refused, server down in one line', async () => {
  const dir = tempDir('download');
  const body = smallModel();
  const s = await serve(body);
  try {
    // Full download with progress.
    const log = collecting();
    const dest = join(dir, 'a', 'model.onnx');
    const r = await downloadFile({
      url: s.url,
      dest,
      sha256: sha(body),
      bytes: body.length,
      log,
      label: 'tiny',
      progressEveryMs: 0,
    });
    assert.deepEqual(readFileSync(dest), Buffer.from(body));
    assert.equal(r.resumedFrom, 0);
    assert.ok(
      log.infos.some((l) => /tiny: [\d.]+ \/ [\d.]+ MB \(\d+ %\)/.test(l)),
      'progress lines',
    );
    assert.ok(log.infos.some((l) => /sha256 verified/.test(l)));
    assert.ok(!existsSync(`${dest}.part`));

    // Cut off mid-way: a clear resumable error and nothing unverified at the destination; the next call
    // finishes the file (resuming from whatever reached the .part, which depends on timing).
    const dest2 = join(dir, 'b', 'model.onnx');
    s.cutNextAfter.bytes = 70_000;
    await assert.rejects(
      downloadFile({ url: s.url, dest: dest2, sha256: sha(body), log: collecting(), label: 'tiny' }),
      (e: unknown) =>
        e instanceof UserError && /interrupted at [\d.]+ MB .* run the same command again to resume/.test(e.message),
    );
    assert.ok(!existsSync(dest2), 'nothing unverified at the destination');
    const partial = existsSync(`${dest2}.part`) ? statSync(`${dest2}.part`).size : 0;
    assert.ok(partial < body.length, `partial ${partial}`);
    let before = s.requests.length;
    await downloadFile({ url: s.url, dest: dest2, sha256: sha(body), log: collecting(), label: 'tiny' });
    assert.equal(s.requests[before]!.range, partial > 0 ? `bytes=${partial}-` : undefined);
    assert.deepEqual(readFileSync(dest2), Buffer.from(body));

    // Resume from a known .part: exactly the missing bytes are requested (206) and the whole file verifies.
    const destR = join(dir, 'r', 'model.onnx');
    mkdirSync(join(dir, 'r'));
    writeFileSync(`${destR}.part`, body.subarray(0, 70_000));
    before = s.requests.length;
    const r2 = await downloadFile({ url: s.url, dest: destR, sha256: sha(body), log: collecting(), label: 'tiny' });
    assert.equal(s.requests[before]!.range, 'bytes=70000-');
    assert.equal(r2.resumedFrom, 70_000);
    assert.deepEqual(readFileSync(destR), Buffer.from(body));

    // A .part that is already complete (server answers 416) is verified and moved into place.
    const dest3 = join(dir, 'c', 'model.onnx');
    mkdirSync(join(dir, 'c'));
    writeFileSync(`${dest3}.part`, body);
    assert.equal(
      (await downloadFile({ url: s.url, dest: dest3, sha256: sha(body), log: collecting() })).resumedFrom,
      body.length,
    );

    // Wrong checksum: refused, and neither the file nor the .part is kept.
    const dest4 = join(dir, 'd', 'model.onnx');
    await assert.rejects(
      downloadFile({ url: s.url, dest: dest4, sha256: '0'.repeat(64), log: collecting(), label: 'tiny' }),
      (e: unknown) =>
        e instanceof UserError &&
        /checksum mismatch for tiny .* expected sha256 0{64}, got [0-9a-f]{64}; the download was removed/.test(
          e.message,
        ),
    );
    assert.ok(!existsSync(dest4) && !existsSync(`${dest4}.part`));

    // No published checksum: downloaded, with a warning that names the hash.
    const log5 = collecting();
    await downloadFile({ url: s.url, dest: join(dir, 'e', 'model.onnx'), log: log5, label: 'tiny' });
    assert.ok(log5.warns.some((w) => w.includes(sha(body)) && /no published sha256/.test(w)));

    // HTTP errors name the status.
    await assert.rejects(
      downloadFile({
        url: s.url.replace('model.onnx', 'missing.onnx'),
        dest: join(dir, 'f', 'model.onnx'),
        log: collecting(),
      }),
      /HTTP 404/,
    );
  } finally {
    await new Promise((r) => s.server.close(r));
  }
  // Server down (offline): one line naming the cause.
  try {
    await assert.rejects(
      downloadFile({ url: s.url, dest: join(dir, 'g', 'model.onnx'), log: collecting(), label: 'tiny' }),
      (e: unknown) => {
        assert.ok(e instanceof UserError);
        assert.ok(!e.message.includes('\n'), 'one line');
        assert.match(
          e.message,
          /^cannot download tiny from http:\/\/127\.0\.0\.1:\d+\/m\/model\.onnx: ECONNREFUSED; you are probably offline/,
        );
        return true;
      },
    );
  } finally {
    removeDir(dir);
  }
});

test('known ONNX names resolve through the registry: verified download into the model cache, cached copy checked, then extract-ready', async () => {
  const dir = tempDir('zoo');
  const body = smallModel();
  const s = await serve(body);
  try {
    const entry: OnnxZooEntry = {
      ...ONNX_ZOO.find((e) => e.name === 'resnet50')!,
      name: 'tiny_net',
      url: s.url,
      sha256: sha(body),
      bytes: body.length,
      preprocessing: {
        size: [12, 12],
        resize: 'squash',
        kernel: 'linear',
        channelOrder: 'rgb',
        mean: [0.5, 0.5, 0.5],
        std: [0.5, 0.5, 0.5],
      },
    };
    const cache = join(dir, 'models');
    const opts = { cacheDir: cache, mirrors: [], log: collecting(), onnxZoo: [entry] };
    const m = await resolveModel('tiny_net', opts);
    assert.deepEqual(
      [m.format, m.id, m.location, m.onnxEntry?.name],
      ['onnx', 'tiny_net', join(cache, 'tiny_net', 'model.onnx'), 'tiny_net'],
    );
    const n = s.requests.length;
    await resolveModel('tiny_net', opts); // cached: no second request
    assert.equal(s.requests.length, n);
    // The registry's preprocessing and the default cut reach the backbone.
    const prepared = await prepareBackbone({
      model: 'tiny_net',
      log: collecting(),
      modelCacheDir: cache,
      resolve: { mirrors: [], onnxZoo: [entry] },
    });
    assert.deepEqual(
      [
        prepared.config.layer,
        prepared.config.featureDim,
        prepared.config.preprocessing.size,
        prepared.config.preprocessing.resize,
      ],
      ['act', 64, [12, 12], 'squash'],
    );
    // A cached file that is not the published one is refused, not silently used.
    writeFileSync(join(cache, 'tiny_net', 'model.onnx'), body.subarray(0, 1000));
    await assert.rejects(
      resolveModel('tiny_net', opts),
      (e: unknown) => e instanceof UserError && /is not the published tiny_net .*delete it/.test(e.message),
    );
    // The real registry: every entry names a canonical https URL, its size where known, and either a sha256 or a stated reason (comment) for none.
    for (const e of ONNX_ZOO) {
      assert.match(e.url, /^https:\/\//);
      if (e.sha256 !== undefined) assert.match(e.sha256, /^[0-9a-f]{64}$/);
      assert.ok(e.sources.length > 0 && e.preprocessing.mean.length === 3);
    }
  } finally {
    await new Promise((r) => s.server.close(r));
    removeDir(dir);
  }
});
