import { createRequire } from 'node:module';

/**
 * Lower the calling thread's scheduling priority by `nice` steps (Linux: setpriority on its thread id; elsewhere a
 * no-op). The decode threads call it: ONNX Runtime's intra-op threads work in lock step (every
 * operator ends at a barrier), so a decode thread preempting one of them stalls the other as well.
 * At a lower priority the decoders take the cores mostly when ORT's threads wait (between operators
 * and batches); when the decode queue runs dry, ORT waits for images and the decoders get the cores
 * anyway, so decoding cannot starve. Returns whether the priority was changed.
 */
export function lowerThreadPriority(nice: number): boolean {
  if (process.platform !== 'linux' || nice <= 0) return false;
  try {
    const koffi = createRequire(import.meta.url)('koffi');
    const libc = koffi.load('libc.so.6');
    // gettid() is glibc >= 2.30; the raw syscall number covers older ones (x64 186, arm64 178).
    let tid: number;
    try {
      tid = libc.func('int gettid()')();
    } catch {
      const nr = process.arch === 'x64' ? 186 : process.arch === 'arm64' ? 178 : -1;
      if (nr < 0) return false;
      tid = libc.func('long syscall(long number)')(nr);
    }
    const PRIO_PROCESS = 0; // with a thread id, Linux applies it to that thread only
    // Relative to the thread's current value (a whole run under `nice` keeps the same gap), at most 19.
    const current = libc.func('int getpriority(int which, int who)')(PRIO_PROCESS, tid) as number;
    const target = Math.min(19, current + nice);
    if (target === current) return false;
    return libc.func('int setpriority(int which, int who, int prio)')(PRIO_PROCESS, tid, target) === 0;
  } catch {
    return false;
  }
}
