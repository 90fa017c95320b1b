import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, type BigIntStats } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../util/atomic.ts';

/**
 * Content keys (sha1 of the file's bytes) remembered by file identity, so a re-run on unchanged data
 * does not read and hash every image again (3000 photos: ~0.7 s of the old 1.2 s no-op run). A key is
 * reused only when size, mtime, ctime (nanoseconds) and inode all match what was recorded, the test git
 * uses for its index; ctime cannot be set back by `touch`, so any write to the file invalidates it.
 *
 * Racy entries are never recorded: a file whose ctime is not at least RACY_MARGIN_NS older than the
 * moment its hash started could still be rewritten within the same (coarse, ~4 ms) kernel timestamp
 * tick, keeping its stat identical with other bytes. Such files are simply hashed again next time.
 *
 * One line per file: key, size, mtimeNs, ctimeNs, ino, absolute path (tab-separated). Written
 * atomically; an unreadable file is ignored (everything is hashed, as before).
 */
export const FILE_KEYS_NAME = 'file-keys.tsv';
const RACY_MARGIN_NS = 2_000_000_000n;

export interface FileKeyCacheOptions {
  /** How much older than the hash's start a file's ctime must be to be remembered (default 2 s; tests use 0). */
  racyMarginNs?: bigint;
}
const VERSION_LINE = 'convcache-file-keys 1';

function identity(st: BigIntStats): string {
  return `${st.size}\t${st.mtimeNs}\t${st.ctimeNs}\t${st.ino}`;
}

/**
 * The content key of a file: sha1 of its bytes (the threads that decode compute the same: images/fast-file.ts).
 * A file that cannot be read (no permission, removed since the scan) gets unreadableKey instead of
 * ending the run: it is planned like any image, its decode fails with the reason ("unreadable file
 * (EACCES)"), and it is skipped and counted in the manifest like a corrupt photo.
 */
export async function contentKey(abs: string): Promise<string> {
  let bytes: Buffer;
  try {
    bytes = await readFile(abs);
  } catch (e) {
    if (isFsError(e)) return unreadableKey(abs);
    throw e;
  }
  return keyOfBytes(bytes);
}

/** The content key of bytes already read (the threads that decode hash the bytes they read anyway). */
export function keyOfBytes(bytes: Uint8Array): string {
  return createHash('sha1').update(bytes).digest('hex');
}

/** The key of a file that could not be read: from its path (hex like a content key, never equal to one in practice). */
export function unreadableKey(abs: string): string {
  return createHash('sha1').update(`convcache unreadable file\0${abs}`).digest('hex');
}

function isFsError(e: unknown): boolean {
  return typeof e === 'object' && e !== null && 'code' in e && typeof (e as { code: unknown }).code === 'string';
}

/** The wall clock in nanoseconds, comparable with ctimeNs. */
export function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

export class FileKeyCache {
  /** absolute path → "key\tidentity" (strings only: ~200 bytes per image). */
  private readonly entries = new Map<string, string>();
  private changed = false;
  /** Files read and hashed / keys taken from the cache, by this object. */
  readonly counts = { hashed: 0, reused: 0 };

  private constructor(
    private readonly path: string,
    private readonly racyMarginNs: bigint,
  ) {}

  static load(path: string, opts: FileKeyCacheOptions = {}): FileKeyCache {
    const cache = new FileKeyCache(path, opts.racyMarginNs ?? RACY_MARGIN_NS);
    if (!existsSync(path)) return cache;
    try {
      const lines = readFileSync(path, 'utf8').split('\n');
      if (lines[0] !== VERSION_LINE) return cache;
      for (let i = 1; i < lines.length; i++) {
        // key and four numbers, then the path (which may itself hold tabs, so split only five times)
        const line = lines[i]!;
        let tab = -1;
        for (let f = 0; f < 5 && (tab = line.indexOf('\t', tab + 1)) >= 0; f++);
        if (tab > 0) cache.entries.set(line.slice(tab + 1), line.slice(0, tab));
      }
    } catch {
      cache.entries.clear(); // a damaged file only costs re-hashing
    }
    return cache;
  }

  /**
   * Content keys of `paths` in order: from the cache where the file's identity is unchanged, else
   * by reading and hashing it (`concurrency` reads in flight). Entries of files not asked for are
   * dropped, so the file tracks the current data.
   */
  async keysOf(paths: readonly string[], concurrency: number): Promise<string[]> {
    const keys = new Array<string>(paths.length);
    const seen = new Set<string>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < paths.length) {
        const i = next++;
        const abs = paths[i]!;
        seen.add(abs);
        let st: BigIntStats;
        try {
          st = statSync(abs, { bigint: true });
        } catch (e) {
          if (!isFsError(e)) throw e;
          keys[i] = unreadableKey(abs); // removed since the scan: skipped by the decode, like an unreadable file
          if (this.entries.delete(abs)) this.changed = true;
          continue;
        }
        const id = identity(st);
        const hit = this.entries.get(abs);
        if (hit !== undefined && hit.slice(41) === id) {
          keys[i] = hit.slice(0, 40);
          this.counts.reused++;
          continue;
        }
        // Taken before reading: a write after this moment gives the file a newer ctime than the margin allows.
        const startNs = nowNs();
        const key = await contentKey(abs);
        keys[i] = key;
        this.counts.hashed++;
        this.remember(abs, key, st, startNs);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    this.forgetOthers(seen);
    return keys;
  }

  /**
   * Record keys computed elsewhere (extract's decoding threads hash the bytes they read), as if keysOf
   * had hashed them: `startNs` (nowNs()) must be taken before the first of the files was read, and
   * every file is stat'ed now, after its read, so a file written since then is not remembered.
   * Entries of other files are dropped, as keysOf does.
   */
  learn(paths: readonly string[], keys: readonly string[], startNs: bigint): void {
    for (let i = 0; i < paths.length; i++) {
      let st: BigIntStats;
      try {
        st = statSync(paths[i]!, { bigint: true });
      } catch {
        if (this.entries.delete(paths[i]!)) this.changed = true;
        continue; // gone since: nothing to remember
      }
      this.remember(paths[i]!, keys[i]!, st, startNs);
    }
    this.counts.hashed += paths.length;
    this.forgetOthers(new Set(paths));
  }

  private remember(abs: string, key: string, st: BigIntStats, startNs: bigint): void {
    // A path with a newline cannot be stored one per line: hashed every time instead.
    if (st.ctimeNs <= startNs - this.racyMarginNs && !abs.includes('\n')) {
      this.entries.set(abs, `${key}\t${identity(st)}`);
      this.changed = true;
    } else if (this.entries.delete(abs)) this.changed = true;
  }

  private forgetOthers(keep: ReadonlySet<string>): void {
    for (const abs of [...this.entries.keys()])
      if (!keep.has(abs)) {
        this.entries.delete(abs);
        this.changed = true;
      }
  }

  /** Persist (atomically) if anything changed. */
  save(): void {
    if (!this.changed) return;
    const lines = [VERSION_LINE];
    for (const [abs, v] of [...this.entries].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)))
      lines.push(`${v}\t${abs}`);
    writeFileAtomic(this.path, lines.join('\n') + '\n');
    this.changed = false;
  }
}
