import { cpus } from 'node:os';

/**
 * How decode and inference share the cores. ONNX Runtime's run() blocks the JS thread, so decoding
 * runs on threads of its own (images/decode-pool.ts) and overlaps it; ORT's threads do not spin
 * (ort-runner.ts), so a core they leave idle is the decoders' at once.
 *
 * autoSchedule (the bench's reference point; extract defaults to --threads = --workers = cores): ORT
 * gets every core and half as many decode threads run beside it. Measured on the shared
 * 2-core machine (3000 images, whole `extract` process, back to back): fp32 workers 1: 20.9 s and
 * 16.0 s, workers 2: 16.9 s and 16.9 s; int8 workers 1: 12.1 s, workers 2: 13.1 s — within that
 * machine's noise, so the cheaper one: libjpeg-turbo + the SIMD resize cost ~1-2 ms of CPU per image
 * against ~6-8 ms for the conv base. `npm run bench -- --schedule-images N` times the alternatives.
 */
export interface Schedule {
  threads: number;
  workers: number;
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
 * Images per inference batch for extract (and its bench). 16, not 32: ONNX Runtime's arena holds
 * every intermediate tensor of a batch, so at 288 px a batch of 32 costs ~170 MiB more peak RSS than
 * 16 (inference-only process: 496 vs 326 MiB; extract: ~620 vs ~450 MiB) at the same speed (219 vs
 * 225 img/s on 2 threads, within noise) and bit-identical features (a batch's images do not
 * interact: batches of 1, 7 and 16 equal 32 exactly).
 */
export const DEFAULT_EXTRACT_BATCH = 16;

export function autoSchedule(cores = cpus().length): Schedule {
  return { threads: Math.max(1, cores), workers: Math.max(1, Math.floor(cores / 2)) };
}

/**
 * Decodes kept ahead of ONNX Runtime: two batches, so the next batch is decoded while one runs
 * (and at least one per decode thread).
 */
export function decodeLookahead(batch: number, workers: number): number {
  return Math.max(workers, batch * 2);
}

/** Shared pixel slots of the decode pool: the look-ahead plus the image being copied into the batch. */
export function decodeSlots(batch: number, workers: number): number {
  return decodeLookahead(batch, workers) + 1;
}
