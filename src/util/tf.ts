/**
 * One place that picks and initialises the TF.js backend.
 *
 * Order: @tensorflow/tfjs-node (native TensorFlow, only if the user happens to have it installed)
 * → @tensorflow/tfjs-backend-wasm (XNNPACK, SIMD) → plain 'cpu' (pure JS, slow).
 *
 * Notes on the wasm backend in Node (tfjs-backend-wasm 4.22):
 * - It ships three binaries: tfjs-backend-wasm.wasm (scalar), -simd.wasm and -threaded-simd.wasm.
 *   We point it at the package's dist directory explicitly (setWasmPaths with a file-system path)
 *   so it works however this module is bundled or loaded.
 * - The threaded build is disabled in Node by tfjs itself (WASM_HAS_MULTITHREAD_SUPPORT is false when
 *   IS_NODE; tfjs issue #3830). Forcing the flag on fails: Emscripten spawns its pthread workers from a
 *   `blob:` URL, which node:worker_threads rejects (ERR_WORKER_PATH). So in Node we get the
 *   single-threaded SIMD build; `threads` only matters for a future build that supports it.
 * - The Emscripten glue registers process-wide 'uncaughtException' / 'unhandledRejection' listeners
 *   that re-throw (turning any later async error into exit code 7 and bypassing node:test's error
 *   attribution). We remove whatever listeners the backend initialisation added.
 */
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
import { existsSync } from 'node:fs';

export type Tf = typeof import('@tensorflow/tfjs');

export interface InitTfOptions {
  /** Worker threads for backends that can use them (wasm threaded build). Ignored elsewhere. */
  threads?: number;
}

export interface TfBackendInfo {
  /** 'tensorflow' (tfjs-node), 'wasm' or 'cpu'. */
  name: string;
  /** Only for 'wasm': which binary was loaded and with how many threads. */
  wasm?: { simd: boolean; threads: boolean; threadsCount: number };
}

let initPromise: Promise<Tf> | undefined;

/**
 * Initialise TF.js once and return the tfjs namespace. Later calls return the same promise
 * (their options are ignored). A failed initialisation is not memoised.
 */
export function initTf(opts: InitTfOptions = {}): Promise<Tf> {
  initPromise ??= doInit(opts).catch((e: unknown) => {
    initPromise = undefined;
    throw e;
  });
  return initPromise;
}

/** Name of the active backend ('tensorflow' | 'wasm' | 'cpu'), or null if none was initialised yet. */
export function tfBackendName(): string | null {
  // engine().backendName is read directly: tf.getBackend() would auto-initialise a backend.
  return loaded?.engine().backendName ?? null;
}

/** Active backend with wasm details (SIMD / threads); null before initialisation. */
export function tfBackendInfo(): TfBackendInfo | null {
  const name = tfBackendName();
  if (name == null) return null;
  if (name !== 'wasm') return { name };
  const tfStatic = loaded!;
  const env = tfStatic.env();
  // Both flags were evaluated (and cached) by the wasm backend's init, so the sync get is safe.
  const flag = (f: string): boolean => {
    try {
      return Boolean(env.get(f));
    } catch {
      return false;
    }
  };
  const threads = flag('WASM_HAS_MULTITHREAD_SUPPORT');
  let threadsCount = 1;
  try {
    // Only the threaded build knows a thread count; getThreadsCount() reports it once initialised.
    const backend = tfStatic.backend() as unknown as { wasm?: { tfjs?: { getThreadsCount?: () => number } } };
    threadsCount = backend.wasm?.tfjs?.getThreadsCount?.() ?? 1;
  } catch {
    /* keep 1 */
  }
  return { name, wasm: { simd: flag('WASM_HAS_SIMD_SUPPORT'), threads, threadsCount: threads ? threadsCount : 1 } };
}

/** The tfjs module once imported: loaded lazily so commands that never train do not pay ~1.5 s for it. */
let loaded: Tf | undefined;

async function doInit(opts: InitTfOptions): Promise<Tf> {
  const tf = (await import('@tensorflow/tfjs')) as Tf;
  loaded = tf;
  if (await tryTfjsNode(tf)) return tf;
  if (await tryWasm(tf, opts)) return tf;
  if (!(await tf.setBackend('cpu'))) throw new Error('TF.js: no usable backend (tensorflow, wasm and cpu all failed)');
  await tf.ready();
  // The cpu backend prints a multi-line "looks like you are running TensorFlow.js in Node.js, install
  // tfjs-node" banner on its first tensor. We already tried tfjs-node; silence just that banner
  // (tf.enableProdMode() would also hide every other tfjs warning).
  const cpu = tf.backend() as unknown as { firstUse?: boolean };
  if ('firstUse' in cpu) cpu.firstUse = false;
  return tf;
}

async function tryTfjsNode(tf: Tf): Promise<boolean> {
  // Not a dependency: a variable specifier keeps tsc from resolving it; a missing package or a
  // broken native binding simply throws here.
  const name = '@tensorflow/tfjs-node';
  try {
    await import(name);
  } catch {
    return false;
  }
  // tfjs-node registers 'tensorflow' in *its* tfjs-core. If npm gave it a different copy than ours
  // (version mismatch) the backend is invisible to us and we fall through to wasm.
  if (tf.findBackendFactory('tensorflow') == null) return false;
  try {
    return await tf.setBackend('tensorflow');
  } catch {
    return false;
  }
}

async function tryWasm(tf: Tf, opts: InitTfOptions): Promise<boolean> {
  let wasm: typeof import('@tensorflow/tfjs-backend-wasm');
  try {
    wasm = await import('@tensorflow/tfjs-backend-wasm');
  } catch {
    return false;
  }
  const dir = wasmDistDir();
  if (dir == null) return false;
  try {
    wasm.setWasmPaths(dir + sep);
    if (opts.threads != null && opts.threads > 0) wasm.setThreadsCount(Math.floor(opts.threads));
  } catch {
    // setWasmPaths throws if something else already initialised the wasm backend; use it as is.
  }
  const beforeExc = new Set(process.listeners('uncaughtException'));
  const beforeRej = new Set(process.listeners('unhandledRejection'));
  try {
    return await tf.setBackend('wasm');
  } catch {
    return false;
  } finally {
    for (const l of process.listeners('uncaughtException')) {
      if (!beforeExc.has(l)) process.removeListener('uncaughtException', l);
    }
    for (const l of process.listeners('unhandledRejection')) {
      if (!beforeRej.has(l)) process.removeListener('unhandledRejection', l);
    }
  }
}

/** Directory holding tfjs-backend-wasm's .wasm binaries (the package's dist/), as a file path. */
function wasmDistDir(): string | null {
  try {
    const require = createRequire(import.meta.url);
    // "main" is dist/tf-backend-wasm.node.js; the binaries sit next to it.
    const dir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm'));
    return existsSync(join(dir, 'tfjs-backend-wasm-simd.wasm')) || existsSync(join(dir, 'tfjs-backend-wasm.wasm'))
      ? dir
      : null;
  } catch {
    return null;
  }
}
