import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveModel, hashTfjsModel } from '../src/backbone/resolve.ts';
import { silentLogger } from '../src/util/log.ts';
import { UserError } from '../src/util/errors.ts';
import { SHARED_MODEL, removeDir, sharedDir, tempDir } from './helpers.ts';

const URL_BASE = 'https://storage.googleapis.com/tfjs-models/tfjs/mobilenet_v1_0.75_224/';

/** Serves the shared model's files as if from the canonical URL; records what was asked. */
function fakeFetch(asked: string[]): typeof fetch {
  return (async (input: string | URL | Request) => {
    const url = String(input);
    asked.push(url);
    if (!url.startsWith(URL_BASE)) return new Response('not found', { status: 404 });
    const file = join(SHARED_MODEL(), url.slice(URL_BASE.length));
    return existsSync(file) ? new Response(readFileSync(file)) : new Response('not found', { status: 404 });
  }) as typeof fetch;
}

test('known model names: local cache, then mirrors, then the canonical URL (downloaded once)', async () => {
  const dir = tempDir('resolve');
  try {
    const viaMirror = await resolveModel('mobilenet_v1_0.75_224', {
      cacheDir: join(dir, 'models'),
      mirrors: [sharedDir()],
      log: silentLogger,
    });
    assert.equal(viaMirror.location, SHARED_MODEL());
    const asked: string[] = [];
    const downloaded = await resolveModel('mobilenet_v1_0.75_224', {
      cacheDir: join(dir, 'models'),
      mirrors: [],
      log: silentLogger,
      fetchImpl: fakeFetch(asked),
    });
    assert.equal(downloaded.location, join(dir, 'models', 'mobilenet_v1_0.75_224'));
    assert.equal(asked[0], `${URL_BASE}model.json`);
    assert.equal(asked.length, 56, 'model.json + 55 shards');
    assert.equal(downloaded.weightsHash, hashTfjsModel(SHARED_MODEL()), 'same bytes as the mirror');
    const again: string[] = [];
    await resolveModel('mobilenet_v1_0.75_224', {
      cacheDir: join(dir, 'models'),
      mirrors: [],
      log: silentLogger,
      fetchImpl: fakeFetch(again),
    });
    assert.equal(again.length, 0, 'second time from the local cache');
    const offline = (async () => {
      throw new TypeError('fetch failed');
    }) as typeof fetch;
    await assert.rejects(
      resolveModel('mobilenet_v1_0.50_224', {
        cacheDir: join(dir, 'models'),
        mirrors: [sharedDir()],
        log: silentLogger,
        fetchImpl: offline,
      }),
      (e: unknown) =>
        e instanceof UserError &&
        /not found locally \(looked in .*models\/mobilenet_v1_0\.50_224.*\) and the download .* failed/.test(e.message),
    );
  } finally {
    removeDir(dir);
  }
});
