import { startWorker } from '../util/worker.ts';
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
        const w = startWorker(import.meta.url, 'rf-worker');
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
