import { parentPort } from 'node:worker_threads';
import { growTrees, type GrowContext } from './rf.ts';

/** One message: grow these trees, post the flat node arrays back (transferred, not copied). */
parentPort!.once('message', (m: { ctx: GrowContext; seeds: Uint32Array }) => {
  const out = growTrees(m.ctx, m.seeds);
  // slice() made these arrays, so each owns a plain ArrayBuffer.
  const buffers = [out.feature, out.threshold, out.left, out.right, out.value, out.roots].map(
    (a) => a.buffer as ArrayBuffer,
  );
  parentPort!.postMessage(out, buffers);
});
