import { Worker } from 'node:worker_threads';
import type { GrowContext, GrownTrees } from './rf.ts';

/**
 * Grow a forest's trees on `jobs` worker threads: contiguous runs of trees per worker (tree t
 * always from seeds[t]), returned in tree order so concatForests numbers nodes as one thread would.
 * The binned matrix and labels live in SharedArrayBuffers, so workers share them without copies.
 */
export async function growTreesInWorkers(ctx: GrowContext, seeds: Uint32Array, jobs: number): Promise<GrownTrees[]> {
  const per = Math.ceil(seeds.length / jobs);
  const runs: Promise<GrownTrees>[] = [];
  for (let s = 0; s < seeds.length; s += per) {
    const part = seeds.slice(s, s + per);
    runs.push(
      new Promise<GrownTrees>((resolve, reject) => {
        const w = startWorker();
        let done = false;
        w.once('message', (m: GrownTrees) => {
          done = true;
          resolve(m);
          void w.terminate();
        });
        w.once('error', reject);
        w.once('exit', (code) => {
          if (!done) reject(new Error(`rf: tree worker exited with code ${code}`));
        });
        w.postMessage({ ctx, seeds: part });
      }),
    );
  }
  return Promise.all(runs);
}

/**
 * From compiled JS the worker file runs as is. From TypeScript sources (tsx), the parent's loader
 * hooks do not reach the worker, so it registers tsx itself first (as images/decode-pool.ts does).
 */
function startWorker(): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./rf-worker.js', import.meta.url));
  const api = import.meta.resolve('tsx/esm/api');
  const file = new URL('./rf-worker.ts', import.meta.url).href;
  return new Worker(
    `import(${JSON.stringify(api)}).then((t) => { t.register(); return import(${JSON.stringify(file)}); });`,
    { eval: true },
  );
}
