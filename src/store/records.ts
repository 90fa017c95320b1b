import { closeSync, existsSync, fstatSync, openSync, readdirSync, readSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic, writeFileAtomicAsync } from '../util/atomic.ts';
import type { Logger } from '../util/log.ts';
import { AtomicFileWriter } from './stream.ts';

/**
 * Per-image results keyed by content hash, persisted as small append-only chunk files. This is what
 * makes extraction incremental and resumable: every finished batch is on disk (atomically) before the
 * next starts, and a re-run computes only keys it has not seen. Bad images are remembered too, so they
 * are not decoded again.
 *
 * Features stay on disk: the store keeps only an index (key → chunk, row) and reads a row when asked,
 * so memory does not grow with the number of images. Several writers may share one folder (sharded
 * extraction): each names its chunks with its own prefix and never touches another's files.
 *
 * Chunk file: "CCREC1\n" + u32 header length + JSON {dim, entries:[{key, error?}]} + float32 rows for
 * the entries without error, in order.
 */
export type RecordValue = Float32Array | { error: string };

const MAGIC = 'CCREC1\n';
/** Row index within a chunk is packed below this factor (index = chunk * ROW_SPAN + row). */
const ROW_SPAN = 2 ** 32;
/**
 * Test hook for the resume and cluster tests: after this many chunks written by this process, die at
 * once with SIGKILL (as `kill -9` would), so the interruption happens mid-run every time instead of
 * racing the child. Unset (0) in normal use.
 */
const CRASH_AFTER_CHUNKS = Number(process.env.CONVCACHE_TEST_CRASH_AFTER_CHUNKS ?? 0);
/** The hook's signal: SIGKILL, or SIGINT to test Ctrl-C (CONVCACHE_TEST_CRASH_SIGNAL). */
const CRASH_SIGNAL = process.env.CONVCACHE_TEST_CRASH_SIGNAL === 'SIGINT' ? 'SIGINT' : 'SIGKILL';
/** Open chunk files kept for reads (rows are read in cache order, which visits chunks in runs). */
const MAX_OPEN_FILES = 64;

export interface RecordStoreOptions {
  /** Chunk name prefix of this writer; shards use their own so concurrent writers never collide. */
  prefix?: string;
}

export class RecordStore {
  /** key → chunk * ROW_SPAN + row for features, or -(1 + error index) for a bad image. */
  private readonly index = new Map<string, number>();
  private readonly errors: string[] = [];
  private readonly chunks: { name: string; bodyStart: number }[] = [];
  private readonly fds = new Map<number, number>();
  private seq = 0;
  private written = 0;

  private constructor(
    readonly dir: string,
    readonly dim: number,
    private readonly prefix: string,
  ) {}

  static open(dir: string, dim: number, log: Logger, opts: RecordStoreOptions = {}): RecordStore {
    const prefix = opts.prefix ?? 'chunk-';
    const store = new RecordStore(dir, dim, prefix);
    if (!existsSync(dir)) return store;
    for (const name of readdirSync(dir)
      .filter((n) => n.endsWith('.rec'))
      .sort()) {
      try {
        store.indexChunk(name);
      } catch (e) {
        if (e && typeof e === 'object' && 'code' in e && e.code === 'ENOENT') continue; // compacted away meanwhile
        // Atomic writes make this unlikely; if it happens the chunk is recomputed, never trusted.
        log.warn(`ignoring unreadable cache chunk ${name}: ${e instanceof Error ? e.message : String(e)}`);
        rmSync(join(dir, name), { force: true });
      }
      if (name.startsWith(prefix)) {
        const m = /^(\d+)\.rec$/.exec(name.slice(prefix.length));
        if (m) store.seq = Math.max(store.seq, Number(m[1]) + 1);
      }
    }
    return store;
  }

  /** Read a chunk's header only and index its entries; the rows stay on disk. */
  private indexChunk(name: string): void {
    const fd = openSync(join(this.dir, name), 'r');
    try {
      const size = fstatSync(fd).size;
      const head = Buffer.alloc(MAGIC.length + 4);
      if (
        readSync(fd, head, 0, head.length, 0) !== head.length ||
        head.subarray(0, MAGIC.length).toString('latin1') !== MAGIC
      )
        throw new Error('bad magic');
      const hlen = head.readUInt32LE(MAGIC.length);
      const hbuf = Buffer.alloc(hlen);
      if (readSync(fd, hbuf, 0, hlen, head.length) !== hlen) throw new Error('truncated header');
      const header = JSON.parse(hbuf.toString('utf8')) as { dim: number; entries: { key: string; error?: string }[] };
      if (header.dim !== this.dim) throw new Error(`feature width ${header.dim}, expected ${this.dim}`);
      const nOk = header.entries.filter((e) => e.error === undefined).length;
      const bodyStart = head.length + hlen;
      if (size !== bodyStart + nOk * this.dim * 4) throw new Error('truncated');
      const chunk = this.chunks.length;
      this.chunks.push({ name, bodyStart });
      let row = 0;
      for (const e of header.entries) {
        if (e.error !== undefined) {
          this.errors.push(e.error);
          this.index.set(e.key, -this.errors.length);
        } else {
          this.index.set(e.key, chunk * ROW_SPAN + row++);
        }
      }
    } finally {
      closeSync(fd);
    }
  }

  has(key: string): boolean {
    return this.index.has(key);
  }
  get size(): number {
    return this.index.size;
  }

  /** The reason an image could not be used, or undefined (features present, or unknown key). */
  errorOf(key: string): string | undefined {
    const at = this.index.get(key);
    return at !== undefined && at < 0 ? this.errors[-at - 1] : undefined;
  }

  /** Copy a record's features into `dst` (length dim); false when the key has none. */
  readInto(key: string, dst: Float32Array): boolean {
    const at = this.index.get(key);
    if (at === undefined || at < 0) return false;
    const chunk = Math.floor(at / ROW_SPAN);
    const row = at - chunk * ROW_SPAN;
    const bytes = this.dim * 4;
    const view = new Uint8Array(dst.buffer, dst.byteOffset, bytes);
    const pos = this.chunks[chunk]!.bodyStart + row * bytes;
    if (readSync(this.fd(chunk), view, 0, bytes, pos) !== bytes)
      throw new Error(`record ${key}: short read in ${this.chunks[chunk]!.name}`);
    return true;
  }

  get(key: string): RecordValue | undefined {
    const at = this.index.get(key);
    if (at === undefined) return undefined;
    if (at < 0) return { error: this.errors[-at - 1]! };
    const out = new Float32Array(this.dim);
    this.readInto(key, out);
    return out;
  }

  private fd(chunk: number): number {
    let fd = this.fds.get(chunk);
    if (fd !== undefined) {
      this.fds.delete(chunk); // re-insert: Map order is recency
      this.fds.set(chunk, fd);
      return fd;
    }
    if (this.fds.size >= MAX_OPEN_FILES) {
      const [oldest, ofd] = this.fds.entries().next().value as [number, number];
      closeSync(ofd);
      this.fds.delete(oldest);
    }
    fd = openSync(join(this.dir, this.chunks[chunk]!.name), 'r');
    this.fds.set(chunk, fd);
    return fd;
  }

  /** Close the files opened for reads. The store stays usable (they reopen on demand). */
  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }

  /** Persist a batch of results as one new chunk (atomic), then make them visible. */
  add(entries: readonly { key: string; value: RecordValue }[]): void {
    if (entries.length === 0) return;
    const name = this.nextChunkName();
    writeFileAtomic(join(this.dir, name), encodeChunk(this.dim, entries));
    this.chunkWritten(name);
  }

  /**
   * add() without blocking the JS thread on the disk: the chunk is written and fsynced on libuv's
   * pool and its results become visible (has/get) once it is on disk. Chunks are named in call order.
   */
  async addAsync(entries: readonly { key: string; value: RecordValue }[]): Promise<void> {
    if (entries.length === 0) return;
    const name = this.nextChunkName();
    await writeFileAtomicAsync(join(this.dir, name), encodeChunk(this.dim, entries));
    this.chunkWritten(name);
  }

  /** This writer's next chunk file name (prefix + sequence number: names sort in write order). */
  private nextChunkName(): string {
    return `${this.prefix}${String(this.seq++).padStart(8, '0')}.rec`;
  }

  /** A chunk is on disk: the crash-test hook, then its records become visible. */
  private chunkWritten(name: string): void {
    if (++this.written === CRASH_AFTER_CHUNKS) process.kill(process.pid, CRASH_SIGNAL);
    this.indexChunk(name);
  }

  /**
   * Rewrite everything still referenced into one chunk (streamed, row by row) and drop the other
   * chunks, so the folder does not grow with every run. Safe at any interruption point: duplicates
   * across chunks hold equal values. Only for a single writer: never while shards are running.
   */
  compact(keep: ReadonlySet<string>): void {
    const names = existsSync(this.dir) ? readdirSync(this.dir).filter((n) => n.endsWith('.rec')) : [];
    if (names.length <= 1 && [...this.index.keys()].every((k) => keep.has(k))) return;
    const keys = [...keep].filter((k) => this.index.has(k)).sort();
    const name = `chunk-${String(Math.max(this.seq, ...names.map((n) => Number(/^chunk-(\d+)\.rec$/.exec(n)?.[1] ?? -1) + 1))).padStart(8, '0')}.rec`;
    const file = new AtomicFileWriter(join(this.dir, name));
    try {
      for (const part of encodeChunkHeader(
        this.dim,
        keys.map((key) => ({ key, error: this.errorOf(key) })),
      ))
        file.write(part);
      const row = new Float32Array(this.dim);
      const bytes = new Uint8Array(row.buffer);
      for (const key of keys) if (this.readInto(key, row)) file.write(bytes);
      this.close();
      file.commit();
    } catch (e) {
      file.abort();
      throw e;
    }
    for (const n of names) if (n !== name) rmSync(join(this.dir, n), { force: true });
    this.index.clear();
    this.errors.length = 0;
    this.chunks.length = 0;
    this.indexChunk(name);
  }
}

function encodeChunkHeader(dim: number, entries: readonly { key: string; error?: string | undefined }[]): Uint8Array[] {
  const header = Buffer.from(
    JSON.stringify({
      dim,
      entries: entries.map((e) => (e.error === undefined ? { key: e.key } : { key: e.key, error: e.error })),
    }),
    'utf8',
  );
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  return [Buffer.from(MAGIC, 'latin1'), len, header];
}

function encodeChunk(dim: number, entries: readonly { key: string; value: RecordValue }[]): Uint8Array[] {
  const parts = encodeChunkHeader(
    dim,
    entries.map((e) => ({ key: e.key, error: e.value instanceof Float32Array ? undefined : e.value.error })),
  );
  for (const e of entries) {
    if (e.value instanceof Float32Array) {
      if (e.value.length !== dim) throw new Error(`record ${e.key}: ${e.value.length} features, expected ${dim}`);
      parts.push(new Uint8Array(e.value.buffer, e.value.byteOffset, e.value.byteLength));
    }
  }
  return parts;
}
