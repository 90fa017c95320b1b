import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import { defaultDatasetDir, packageRoot } from '../util/paths.ts';

export interface StartupBenchOptions {
  /** Dataset to take the no-op extract's images from (default: the mirror's cats-vs-dogs). */
  data?: string;
  /** Timed runs per command (the median is reported). */
  runs: number;
  log: Logger;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** GNU time, when present, adds the child's CPU time (user + sys): less sensitive to a busy machine than wall time. */
const GNU_TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

/** Wall-clock (and CPU) ms of a child process, failing loudly if it fails (a fast failure is no measurement). */
function timeRun(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  cwd: string,
): { wallMs: number; cpuMs: number | null } {
  const [c, a] = GNU_TIME ? [GNU_TIME, ['-f', 'cpu %U %S', cmd, ...args]] : [cmd, args];
  const t0 = performance.now();
  const r = spawnSync(c, a, { cwd, env, encoding: 'utf8' });
  const wallMs = performance.now() - t0;
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.trim().split('\n').pop()}`);
  const cpu = /cpu (\d+\.\d+) (\d+\.\d+)\s*$/.exec(r.stderr);
  return { wallMs, cpuMs: cpu ? Math.round((Number(cpu[1]) + Number(cpu[2])) * 1000) : null };
}

/**
 * Start-up cost of the installed CLI: `convcache --help` and a no-op `convcache extract` (every
 * feature already cached), both run from the compiled dist/ with plain node, as an installed
 * package runs. For the ratio, the same --help through tsx (what `npm run …` did before dist/).
 */
export async function benchStartup(opts: StartupBenchOptions): Promise<Record<string, unknown>> {
  const root = packageRoot();
  const bin = join(root, 'dist', 'cli', 'convcache.js');
  if (!existsSync(bin)) throw new UserError(`${bin} is missing; run 'npm run build' first`);
  const srcMtime = Math.max(
    ...['cli/convcache.ts', 'cli/commands.ts', 'pipeline/extract.ts'].map(
      (f) => statSync(join(root, 'src', f)).mtimeMs,
    ),
  );
  if (statSync(bin).mtimeMs < srcMtime)
    opts.log.warn("dist/ is older than src/; run 'npm run build' for a current measurement");
  const data = opts.data ?? defaultDatasetDir();
  if (!data) throw new UserError('no dataset found for the benchmark (give --data)');

  const work = mkdtempSync(join(tmpdir(), 'convcache-startup-'));
  try {
    // A small dataset: 8 images per class, so the first (computing) extract is quick.
    const ds = join(work, 'data');
    const train = existsSync(join(data, 'train')) ? join(data, 'train') : data;
    for (const cls of readdirSync(train)
      .sort()
      .filter((c) => statSync(join(train, c)).isDirectory())
      .slice(0, 2)) {
      mkdirSync(join(ds, cls), { recursive: true });
      for (const f of readdirSync(join(train, cls)).sort().slice(0, 8))
        copyFileSync(join(train, cls, f), join(ds, cls, f));
    }
    const env = { ...process.env, CONVCACHE_HOME: join(work, 'home') };
    const extractArgs = [bin, 'extract', '--data', ds, '--out', join(work, 'cache'), '--quiet'];
    opts.log.info('first extract (computes the features) ...');
    timeRun(process.execPath, extractArgs, env, work);

    const measure = (label: string, cmd: string, args: string[], cwd = work) => {
      timeRun(cmd, args, env, cwd); // warm the file cache
      const runs = Array.from({ length: opts.runs }, () => timeRun(cmd, args, env, cwd));
      const runsMs = runs.map((r) => Math.round(r.wallMs));
      const cpu = runs.every((r) => r.cpuMs !== null) ? median(runs.map((r) => r.cpuMs!)) : null;
      opts.log.info(
        `${label}: median ${median(runsMs)} ms wall${cpu !== null ? `, ${cpu} ms CPU` : ''} over ${opts.runs} runs`,
      );
      return {
        label,
        command: [
          cmd === process.execPath ? 'node' : cmd,
          ...args.map((a) => a.replace(root, '<pkg>').replace(work, '<tmp>')),
        ].join(' '),
        medianMs: median(runsMs),
        medianCpuMs: cpu,
        runsMs,
      };
    };
    const bare = measure('node -e 0 (bare node start, for scale)', process.execPath, ['-e', '0']);
    const help = measure('convcache --help (dist, node)', process.execPath, [bin, '--help']);
    const noop = measure('convcache extract, cache up to date (dist, node)', process.execPath, extractArgs);
    const tsxHelp = measure(
      'convcache --help through tsx (src)',
      process.execPath,
      ['--import', 'tsx', join(root, 'src', 'cli', 'convcache.ts'), '--help'],
      root,
    );
    const npmRun = measure(
      'npm run extract -- --help (the repo alias: npm + tsx)',
      'npm',
      ['run', '--silent', 'extract', '--', '--help'],
      root,
    );
    return {
      benchmark: 'startup',
      date: new Date().toISOString(),
      machine: { cores: cpus().length, loadavg1: Math.round(loadavg()[0]! * 100) / 100, node: process.version },
      targetHelpMs: 300,
      rows: [bare, help, noop, tsxHelp, npmRun],
      helpOverBareNodeMs: help.medianMs - bare.medianMs,
      helpVsTsxRatio: Math.round((tsxHelp.medianMs / help.medianMs) * 10) / 10,
      helpUnderTarget: { wall: help.medianMs < 300, cpu: help.medianCpuMs === null ? null : help.medianCpuMs < 300 },
      note: 'wall time includes waiting for a CPU on a busy machine (see loadavg1); CPU ms (user + sys, GNU time) is the cost itself',
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
