import { Worker } from 'node:worker_threads';

/**
 * Start the worker module `name` (no extension) that sits beside the caller (`callerUrl`: the caller's
 * import.meta.url). From compiled JS the .js file runs as is. From TypeScript sources (tsx), the parent
 * thread's loader hooks do not reach a worker, so it registers tsx itself before importing the .ts file.
 */
export function startWorker(callerUrl: string, name: string, workerData?: unknown): Worker {
  const opts = workerData === undefined ? {} : { workerData };
  if (!callerUrl.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, callerUrl), opts);
  const api = import.meta.resolve('tsx/esm/api');
  const file = new URL(`./${name}.ts`, callerUrl).href;
  return new Worker(
    `import(${JSON.stringify(api)}).then((t) => { t.register(); return import(${JSON.stringify(file)}); });`,
    { eval: true, ...opts },
  );
}
