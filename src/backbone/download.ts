import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { UserError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';

/**
 * Download one large file into the model cache: resumable (an interrupted download leaves
 * `<dest>.part`, continued with an HTTP Range request), checksum-verified before it is renamed into
 * place (so `<dest>` only ever holds a verified file), progress on the logger, and one clear line
 * when the network is not there.
 */
export interface DownloadOptions {
  url: string;
  dest: string;
  /** Expected lower-case hex sha256; undefined = unverified (warned about, hash logged). */
  sha256?: string;
  /** Expected size in bytes, when known (checked before hashing). */
  bytes?: number;
  log: Logger;
  /** Name used in messages. */
  label?: string;
  /** Injected for tests; defaults to global fetch. */
  fetchImpl?: typeof fetch;
  /** Milliseconds between progress lines (default 2000). */
  progressEveryMs?: number;
}

export interface DownloadResult {
  sha256: string;
  bytes: number;
  resumedFrom: number;
}

function mb(n: number): string {
  return (n / 1e6).toFixed(1);
}

/** Why a fetch failed, as the user would want it: the network cause rather than "fetch failed". */
function networkCause(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } })?.cause;
  if (cause?.code)
    return cause.code === 'ENOTFOUND' || cause.code === 'EAI_AGAIN' ? `${cause.code} (no network or DNS?)` : cause.code;
  return e instanceof Error ? e.message.split('\n')[0]! : String(e);
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

export async function downloadFile(opts: DownloadOptions): Promise<DownloadResult> {
  const fetchImpl = opts.fetchImpl ?? fetch;
  const label = opts.label ?? opts.url;
  const part = `${opts.dest}.part`;
  mkdirSync(dirname(opts.dest), { recursive: true });
  let have = existsSync(part) ? statSync(part).size : 0;
  const headers: Record<string, string> = {};
  if (have > 0) headers.Range = `bytes=${have}-`;
  let res: Response;
  try {
    res = await fetchImpl(opts.url, { headers, redirect: 'follow' });
  } catch (e) {
    throw new UserError(
      `cannot download ${label} from ${opts.url}: ${networkCause(e)}; you are probably offline (put the file at ${opts.dest} to use it without downloading)`,
    );
  }
  let resumedFrom = 0;
  if (res.status === 416 && have > 0) {
    // Range past the end: the part file is already complete (verified below).
    await res.body?.cancel();
    resumedFrom = have;
  } else {
    if (!res.ok) {
      await res.body?.cancel();
      throw new UserError(`cannot download ${label}: HTTP ${res.status} ${res.statusText} from ${opts.url}`);
    }
    if (res.status === 206 && have > 0) {
      resumedFrom = have;
      opts.log.info(`resuming ${label} at ${mb(have)} MB`);
    } else {
      have = 0; // the server sent the whole file: start over
    }
    const length = Number(res.headers.get('content-length') ?? NaN);
    const total = Number.isFinite(length) ? have + length : opts.bytes;
    if (!res.body) throw new UserError(`cannot download ${label}: empty response from ${opts.url}`);
    opts.log.info(`downloading ${label} from ${opts.url}${total ? ` (${mb(total)} MB)` : ''}`);
    let got = have;
    let last = Date.now();
    const every = opts.progressEveryMs ?? 2000;
    // Chunk by chunk onto the .part (not a stream pipeline): whatever arrived before a dropped
    // connection is on disk, so the next run resumes from there.
    const fh = await open(part, have > 0 ? 'a' : 'w');
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        await fh.write(chunk);
        got += chunk.length;
        const now = Date.now();
        if (now - last >= every) {
          last = now;
          opts.log.info(
            `  ${label}: ${mb(got)}${total ? ` / ${mb(total)} MB (${Math.floor((100 * got) / total)} %)` : ' MB'}`,
          );
        }
      }
    } catch (e) {
      throw new UserError(
        `download of ${label} was interrupted at ${mb(got)} MB (${networkCause(e)}); run the same command again to resume`,
      );
    } finally {
      await fh.close();
    }
  }
  const size = statSync(part).size;
  if (opts.bytes !== undefined && size !== opts.bytes) {
    if (size > opts.bytes) rmSync(part, { force: true });
    throw new UserError(
      `download of ${label} has ${size} bytes, expected ${opts.bytes}${size > opts.bytes ? '; the file was removed' : '; run the same command again to resume'}`,
    );
  }
  const digest = await sha256File(part);
  if (opts.sha256 && digest !== opts.sha256.toLowerCase()) {
    rmSync(part, { force: true });
    throw new UserError(
      `checksum mismatch for ${label} from ${opts.url}: expected sha256 ${opts.sha256}, got ${digest}; the download was removed`,
    );
  }
  if (!opts.sha256)
    opts.log.warn(`${label}: no published sha256 to verify against; downloaded file has sha256 ${digest}`);
  renameSync(part, opts.dest);
  opts.log.info(`${label}: ${mb(size)} MB${opts.sha256 ? ', sha256 verified' : ''} → ${opts.dest}`);
  return { sha256: digest, bytes: size, resumedFrom };
}
