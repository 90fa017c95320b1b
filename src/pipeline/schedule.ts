/**
 * How decode and inference share the cores. ONNX Runtime's sessions run on threads of their own
 * (backbone/ort-pool.ts; one session runs on the JS thread and blocks it), and by default each decodes
 * its own batches before running them (decodesInSessions). Otherwise (--decode-threads, augmented or TTA
 * views, one session) decoding runs on threads of its own (images/decode-pool.ts) beside them; ORT's
 * threads do not spin (ort-runner.ts), so a core they leave idle is the decoders' at once.
 *
 * Defaults (extract, predict): ORT gets every core (--threads), split over defaultSessions() sessions;
 * where decode threads run, as many as cores (--workers). Decode threads 1 vs 2,
 * measured on the shared 2-core machine (3000 images, whole `extract` process, back to back): fp32
 * workers 1: 20.9 s and 16.0 s, workers 2: 16.9 s and 16.9 s; int8 workers 1: 12.1 s, workers 2:
 * 13.1 s — within that machine's noise: libjpeg-turbo + the SIMD resize cost ~1 ms of CPU per image
 * against ~8 ms for the conv base. `npm run bench -- --schedule-images N` times the alternatives.
 */
export interface Schedule {
  threads: number;
  workers: number;
  /** ONNX Runtime sessions the threads are split over (default defaultSessions(threads)). */
  sessions?: number;
}

/**
 * Decode threads run at this much lower priority than ONNX Runtime's (images/thread-priority.ts):
 * ORT's intra-op threads meet at a barrier after every operator, so a decoder preempting one of them
 * idles the other; a lower-priority decoder uses the cores when ORT's threads wait, and still gets
 * them when ORT waits for images. `npm run bench` times the fast fp32 pipeline with 0 as well
 * (endToEnd.*-decodeNice0): 154.2 vs 152.2 img/s in the quiet 288-px run, 108.4 vs 117.5 under load 18
 * (data/bench/extract.json): no clear effect either way. SCHED_IDLE decoders (tried, per phase:
 * ORT's run() back at its inference-only speed, but as much more time spent waiting for images)
 * were no faster overall and would starve on a busy machine.
 */
export const DEFAULT_DECODE_NICE: number = 10;

/**
 * Images per inference batch of one session (extract and its bench). ONNX Runtime's arena holds every
 * intermediate tensor of a batch, so peak RSS grows with batch x sessions: at 288 px one session with
 * 32 cost ~170 MiB more than with 16 at the same speed (219 vs 225 img/s); two sessions with 16 each
 * peaked at ~575 MiB, with 8 each at ~405 MiB (one session of 16: ~357), and 8 was no slower (3000
 * images, 4 alternating runs: 16.6-18.4 s against 16.6-18.7 s). Features are bit-identical whatever
 * the batch (a batch's images do not interact: batches of 1, 7 and 16 equal 32 exactly) and whatever
 * the sessions (each image's features come from the same graph on one thread's kernels either way).
 */
export const DEFAULT_EXTRACT_BATCH = 8;

/**
 * Sessions for `threads` ONNX Runtime threads in all: one single-threaded session per thread (at most
 * MAX_SESSIONS, each with its own arena). One session's intra-op threads meet at a barrier after every
 * operator, so a decode thread preempting one idles the others, and between operators they wait;
 * sessions of one thread each run different batches with no barrier. Measured on the shared 2-core
 * machine (3000 images, whole extraction, 4 alternating runs): 2 sessions x 1 thread 16.0-18.4 s
 * against 1 session x 2 threads 16.6-20.1 s, faster in every pair (4-9 %); inference alone, 2 x 1
 * 217-246 img/s against 188-233 (3 pairs). `npm run bench` times both each run.
 */
export function defaultSessions(threads: number): number {
  return Math.max(1, Math.min(threads, MAX_SESSIONS));
}

/**
 * Sessions for a job of `images` images: the requested number (default defaultSessions), but no more
 * than it has batches (predicting one image starts no threads for sessions it cannot use).
 */
export function sessionsFor(requested: number | undefined, threads: number, images: number, batch: number): number {
  return Math.max(1, Math.min(requested ?? defaultSessions(threads), Math.ceil(images / batch)));
}

/** More sessions than this share the threads (memory: each session has an arena of its own). */
export const MAX_SESSIONS = 4;

/** Intra-op threads of each of `sessions` sessions sharing `threads`. */
export function threadsPerSession(threads: number, sessions: number): number {
  return Math.max(1, Math.floor(threads / Math.max(1, sessions)));
}

/**
 * Decodes kept ahead of ONNX Runtime: one batch more than the sessions run at once, so the next batch
 * is decoded while they run (and at least one per decode thread).
 */
export function decodeLookahead(batch: number, workers: number, sessions = 1): number {
  return Math.max(workers, batch * (sessions + 1));
}

/** Shared pixel slots of the decode pool: the look-ahead plus the image being copied into the batch. */
export function decodeSlots(batch: number, workers: number, sessions = 1): number {
  return decodeLookahead(batch, workers, sessions) + 1;
}

/**
 * Whether the sessions decode their own batches (backbone/ort-session-worker.ts) instead of decode threads
 * beside them (images/decode-pool.ts): only on the fast JPEG path, with sessions on threads of their
 * own (sessions > 1), and for images run as they are (no augmented or TTA views, which are made from
 * the decoded image on the JS thread). Why: a thread that decodes a batch and then runs it never has
 * a decoder preempting its inference, and no pixels cross threads; decode threads beside the sessions
 * take the cores in the sessions' gaps and between their operators. Measured on the shared 2-core
 * machine (3000 photos, 2 sessions x 1 thread, whole extraction, locked, 6 alternating pairs): 15.3-17.7 s
 * against 15.8-18.2 s with decode threads, faster in 4 of the 6 pairs and by ~1 % in total (97.0 vs
 * 97.9 s): host noise is larger than the gain. What changes for sure: two threads fewer, the JS
 * thread's CPU 1.4 s instead of 1.8 s (it sends paths and receives rows), and no decoder preempting
 * inference, so the sessions run at ~0.9 of their inference-only rate once started; what is left is
 * fixed cost (the sessions' start and first run, ~1 s; assembly and compaction, ~0.3 s).
 */
export function decodesInSessions(
  requested: boolean | undefined,
  decoder: 'fast' | 'sharp',
  sessions: number,
  plainImages: boolean,
): boolean {
  return (requested ?? DECODE_IN_SESSIONS) && decoder === 'fast' && sessions > 1 && plainImages;
}

/** The default of decodesInSessions (`extract --decode-threads` turns it off; ExtractOptions.decodeInSessions). */
export const DECODE_IN_SESSIONS = true;
