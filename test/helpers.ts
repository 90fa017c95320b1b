import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mirrorDirs } from '../src/util/paths.ts';
import { loadKerasGraph } from '../src/backbone/backbone.ts';
import type { WeightMap } from '../src/backbone/convert.ts';
import type { KerasGraph } from '../src/backbone/keras-graph.ts';
import { readWeights } from '../src/backbone/tfjs-model.ts';

/** The read-only shared folder beside the project (tests never copy it into the repo). */
export function sharedDir(): string {
  const m = mirrorDirs()[0];
  if (!m) throw new Error('tests need ../shared beside the project (or CONVCACHE_MIRROR)');
  return m;
}

export const SHARED_MODEL = (): string => join(sharedDir(), 'models', 'mobilenet_v1_0.75_224');
export const SHARED_DATA = (): string => join(sharedDir(), 'datasets', 'cats-vs-dogs');

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `convcache-${prefix}-`));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Copy the first n (sorted) images per class of each split into a temp dataset with train/test folders. */
export function makeSubset(root: string, perClass: { train: number; test?: number }): string {
  for (const split of ['train', 'test'] as const) {
    const n = perClass[split] ?? 0;
    if (n === 0) continue;
    for (const cls of ['cats', 'dogs']) {
      const src = join(SHARED_DATA(), split, cls);
      const dst = join(root, split, cls);
      mkdirSync(dst, { recursive: true });
      for (const f of readdirSync(src).sort().slice(0, n)) copyFileSync(join(src, f), join(dst, f));
    }
  }
  return root;
}

/** The repository root (tests run the CLIs from here). */
export const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** node + tsx + the command's CLI file (no npm in between, so no npm noise on stderr). */
function cliArgv(command: string, args: readonly string[]): string[] {
  return ['--import', 'tsx', join(ROOT, 'src', 'cli', 'convcache.ts'), command, ...args];
}

/** Run `convcache <command> args` to completion (synchronously). */
export function runCli(
  command: string,
  args: readonly string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): CliResult {
  const r = spawnSync(process.execPath, cliArgv(command, args), {
    cwd: opts.cwd ?? ROOT,
    env: opts.env ?? process.env,
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Run a command without blocking the test process (for long runs, or several at once). */
export function runCliAsync(
  command: string,
  args: readonly string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, cliArgv(command, args), { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env });
    let stdout = '',
      stderr = '';
    p.stdout.on('data', (b) => {
      stdout += b;
    });
    p.stderr.on('data', (b) => {
      stderr += b;
    });
    p.on('error', rej);
    p.on('close', (status, signal) => res({ status, signal, stdout, stderr }));
  });
}

/**
 * The shared MobileNet's Keras graph and weights, read at most once per test process (each test
 * file is one process) instead of once per test or per layer. Callers must not mutate them.
 */
const loaded = new Map<string, Promise<unknown>>();
function once<T>(key: string, load: () => T | Promise<T>): Promise<T> {
  let p = loaded.get(key) as Promise<T> | undefined;
  if (!p) {
    p = Promise.resolve().then(load);
    loaded.set(key, p);
  }
  return p;
}
export const sharedGraph = (): Promise<KerasGraph> => once('graph', () => loadKerasGraph(SHARED_MODEL()).graph);
export const sharedWeights = (): Promise<WeightMap> => once('weights', () => readWeights(SHARED_MODEL()));

/** A model folder's graph: the cached one for the shared model, read afresh for any other (e.g. an export). */
export function modelGraph(dir: string): Promise<KerasGraph> {
  return dir === SHARED_MODEL() ? sharedGraph() : Promise.resolve(loadKerasGraph(dir).graph);
}

/** A model folder's weights: the cached ones for the shared model, read afresh for any other. */
export function modelWeights(dir: string): Promise<WeightMap> {
  return dir === SHARED_MODEL() ? sharedWeights() : readWeights(dir);
}
