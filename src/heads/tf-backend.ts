import type * as TF from '@tensorflow/tfjs';

/**
 * TF.js, initialised once with the fastest backend available: tfjs-node if installed (optional,
 * usually absent), else WebAssembly (XNNPACK), else the pure-JS cpu backend. Heads import this
 * lazily so that only the dense head pays for loading TF.js.
 */
export type Tf = typeof TF;

let ready: Promise<Tf> | undefined;

export function initTf(): Promise<Tf> {
  ready ??= (async () => {
    const nodeName = '@tensorflow/tfjs-node';
    try {
      const tfn = (await import(nodeName)) as Tf;
      await tfn.ready();
      return tfn;
    } catch {
      // not installed: fall through silently
    }
    const tf = await import('@tensorflow/tfjs');
    try {
      await import('@tensorflow/tfjs-backend-wasm');
      if (await tf.setBackend('wasm')) {
        await tf.ready();
        return tf;
      }
    } catch {
      // wasm unavailable: use cpu
    }
    await tf.setBackend('cpu');
    await tf.ready();
    return tf;
  })();
  return ready;
}
