import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { contentKey, FileKeyCache, unreadableKey } from '../src/store/file-keys.ts';
import { removeDir, tempDir } from './helpers.ts';

const sha1 = (path: string): string => createHash('sha1').update(readFileSync(path)).digest('hex');

test('file keys: unchanged files are not re-read; a rewrite with the same size and mtime is; racy files are not remembered', async () => {
  const dir = tempDir('file-keys');
  try {
    const files = ['a.jpg', 'b.jpg', 'c\tname.jpg'].map((n) => join(dir, n));
    files.forEach((f, i) => writeFileSync(f, `image ${i} bytes`));
    await sleep(20); // past the files' ctime, so a zero racy margin lets them be remembered
    const store = join(dir, 'keys.tsv');

    const first = FileKeyCache.load(store, { racyMarginNs: 0n });
    assert.deepEqual(await first.keysOf(files, 2), files.map(sha1));
    assert.deepEqual(first.counts, { hashed: 3, reused: 0 });
    first.save();

    const second = FileKeyCache.load(store, { racyMarginNs: 0n });
    assert.deepEqual(await second.keysOf(files, 2), files.map(sha1), 'a tab in a path survives the file');
    assert.deepEqual(second.counts, { hashed: 0, reused: 3 });

    // Same size, mtime put back: only the ctime (which touch cannot restore) tells the file changed.
    const st = statSync(files[1]!);
    writeFileSync(files[1]!, 'image 9 bytes');
    utimesSync(files[1]!, st.atime, st.mtime);
    await sleep(20);
    const third = FileKeyCache.load(store, { racyMarginNs: 0n });
    const keys = await third.keysOf(files, 2);
    assert.equal(keys[1], sha1(files[1]!));
    assert.deepEqual(third.counts, { hashed: 1, reused: 2 });

    // With the default margin (2 s) a file written just now is hashed but not remembered.
    writeFileSync(files[0]!, 'image 0 bytes, rewritten');
    const racy = FileKeyCache.load(store);
    await racy.keysOf(files, 1);
    racy.save();
    const after = FileKeyCache.load(store);
    assert.deepEqual(await after.keysOf(files, 1), files.map(sha1));
    assert.equal(after.counts.hashed, 2, 'the racy file and the one rewritten above are hashed again');

    // Files no longer asked for leave the store.
    const fewer = FileKeyCache.load(store, { racyMarginNs: 0n });
    await fewer.keysOf(files.slice(0, 1), 1);
    fewer.save();
    assert.equal(readFileSync(store, 'utf8').trim().split('\n').length, 2, 'version line + one file');
  } finally {
    removeDir(dir);
  }
});

test('file keys: a file that cannot be read (removed since the scan, a folder) gets its path key, not an exception', async () => {
  const dir = tempDir('file-keys-unreadable');
  try {
    const ok = join(dir, 'ok.jpg'),
      gone = join(dir, 'gone.jpg'),
      folder = join(dir, 'folder.jpg');
    writeFileSync(ok, 'image bytes');
    mkdirSync(folder);
    const cache = FileKeyCache.load(join(dir, 'keys.tsv'), { racyMarginNs: 0n });
    const keys = await cache.keysOf([ok, gone, folder], 2);
    assert.deepEqual(keys, [sha1(ok), unreadableKey(gone), unreadableKey(folder)]);
    assert.match(
      keys[1]!,
      /^[0-9a-f]{40}$/,
      'shaped like a content key (augmentation seeds read its first 8 hex digits)',
    );
    assert.notEqual(keys[1], keys[2], 'one per path');
    assert.equal(await contentKey(gone), unreadableKey(gone));
    assert.equal(await contentKey(ok), sha1(ok));
  } finally {
    removeDir(dir);
  }
});
