import { readdirSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.ts';
import type { Logger } from '../util/log.ts';

/**
 * Per-image results keyed by content hash, persisted as small append-only chunk files. This is what
 * makes extraction incremental and resumable: every finished batch is on disk (atomically) before the
 * next starts, and a re-run computes only keys it has not seen. Bad images are remembered too, so they
 * are not decoded again.
 *
 * Chunk file: "CCREC1\n" + u32 header length + JSON {dim, entries:[{key, error?}]} + float32 rows for
 * the entries without error, in order.
 */
export type RecordValue = Float32Array | { error: string };

const MAGIC = 'CCREC1\n';

/**
 * Test hook for the resume test: after this many chunks written by this process, die at once with
 * SIGKILL (as `kill -9` would), so the interruption happens mid-run every time instead of racing
 * the child. Unset (0) in normal use.
 */
const CRASH_AFTER_CHUNKS = Number(process.env.CONVCACHE_TEST_CRASH_AFTER_CHUNKS ?? 0);

export class RecordStore {
  private readonly values = new Map<string, RecordValue>();
  private seq = 0;
  private written = 0;

  private constructor(readonly dir: string, readonly dim: number) {}

  static open(dir: string, dim: number, log: Logger): RecordStore {
    const store = new RecordStore(dir, dim);
    if (!existsSync(dir)) return store;
    for (const name of readdirSync(dir).filter((n) => n.endsWith('.rec')).sort()) {
      const path = join(dir, name);
      try {
        store.load(readFileSync(path));
      } catch (e) {
        // Atomic writes make this unlikely; if it happens the chunk is recomputed, never trusted.
        log.warn(`ignoring unreadable cache chunk ${name}: ${e instanceof Error ? e.message : String(e)}`);
        rmSync(path, { force: true });
      }
      const m = /^chunk-(\d+)/.exec(name);
      if (m) store.seq = Math.max(store.seq, Number(m[1]) + 1);
    }
    return store;
  }

  private load(buf: Buffer): void {
    if (buf.subarray(0, MAGIC.length).toString('latin1') !== MAGIC) throw new Error('bad magic');
    const hlen = buf.readUInt32LE(MAGIC.length);
    const start = MAGIC.length + 4;
    const header = JSON.parse(buf.subarray(start, start + hlen).toString('utf8')) as { dim: number; entries: { key: string; error?: string }[] };
    if (header.dim !== this.dim) throw new Error(`feature width ${header.dim}, expected ${this.dim}`);
    const nOk = header.entries.filter((e) => e.error === undefined).length;
    const bodyStart = start + hlen;
    if (buf.length !== bodyStart + nOk * this.dim * 4) throw new Error('truncated');
    // Copy into an aligned buffer (the body offset need not be 4-byte aligned).
    const floats = new Float32Array(nOk * this.dim);
    new Uint8Array(floats.buffer).set(buf.subarray(bodyStart));
    let row = 0;
    for (const e of header.entries) {
      if (e.error !== undefined) this.values.set(e.key, { error: e.error });
      else this.values.set(e.key, floats.subarray(row++ * this.dim, row * this.dim));
    }
  }

  get(key: string): RecordValue | undefined { return this.values.get(key); }
  has(key: string): boolean { return this.values.has(key); }
  get size(): number { return this.values.size; }

  /** Persist a batch of results as one new chunk (atomic), then make them visible. */
  add(entries: readonly { key: string; value: RecordValue }[]): void {
    if (entries.length === 0) return;
    const name = `chunk-${String(this.seq++).padStart(8, '0')}.rec`;
    writeFileAtomic(join(this.dir, name), encodeChunk(this.dim, entries));
    for (const e of entries) this.values.set(e.key, e.value);
    if (++this.written === CRASH_AFTER_CHUNKS) process.kill(process.pid, 'SIGKILL');
  }

  /**
   * Rewrite everything still referenced into one chunk and drop the rest, so the folder does not
   * grow with every run. Safe at any interruption point: duplicates across chunks hold equal values.
   */
  compact(keep: ReadonlySet<string>): void {
    const names = existsSync(this.dir) ? readdirSync(this.dir).filter((n) => n.endsWith('.rec')) : [];
    if (names.length <= 1 && [...this.values.keys()].every((k) => keep.has(k))) return;
    const entries = [...keep].filter((k) => this.values.has(k)).sort().map((key) => ({ key, value: this.values.get(key)! }));
    const name = `chunk-${String(this.seq++).padStart(8, '0')}.rec`;
    writeFileAtomic(join(this.dir, name), encodeChunk(this.dim, entries));
    for (const n of names) if (n !== name) rmSync(join(this.dir, n), { force: true });
    for (const k of [...this.values.keys()]) if (!keep.has(k)) this.values.delete(k);
  }
}

function encodeChunk(dim: number, entries: readonly { key: string; value: RecordValue }[]): Uint8Array[] {
  const header = Buffer.from(JSON.stringify({
    dim,
    entries: entries.map((e) => (e.value instanceof Float32Array ? { key: e.key } : { key: e.key, error: e.value.error })),
  }), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  const parts: Uint8Array[] = [Buffer.from(MAGIC, 'latin1'), len, header];
  for (const e of entries) {
    if (e.value instanceof Float32Array) {
      if (e.value.length !== dim) throw new Error(`record ${e.key}: ${e.value.length} features, expected ${dim}`);
      parts.push(new Uint8Array(e.value.buffer, e.value.byteOffset, e.value.byteLength));
    }
  }
  return parts;
}
