import { cpus } from 'node:os';

/**
 * Image decodes run on libuv's thread pool, whose size is read once, when the pool is first used.
 * Commands that decode import this module first: it sizes the pool from `--workers N` (or the
 * given default) before any asynchronous I/O starts. An explicit UV_THREADPOOL_SIZE wins.
 */
export function sizeThreadPoolFromArgv(argv: readonly string[], fallback = cpus().length): void {
  if (process.env.UV_THREADPOOL_SIZE) return;
  let workers = fallback;
  argv.forEach((a, i) => {
    const v = a === '--workers' ? argv[i + 1] : a.startsWith('--workers=') ? a.slice('--workers='.length) : undefined;
    const n = Number(v);
    if (v !== undefined && Number.isInteger(n) && n >= 1 && n <= 64) workers = n;
  });
  // +1: fs reads share the pool with decodes and should not wait behind them.
  process.env.UV_THREADPOOL_SIZE = String(workers + 1);
}

sizeThreadPoolFromArgv(process.argv.slice(2));
