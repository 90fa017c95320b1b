import type { Preprocessing } from '../backbone/preprocess.ts';
import { augmentImage, augmentSeed, IDENTITY_PARAMS, sampleAugmentParams } from '../images/augment.ts';
import { Rng, seededRandom } from '../linalg/random.ts';
import { meanLogLoss } from '../eval/metrics.ts';
import { Progress } from '../util/progress.ts';
import {
  saveCheckpoint,
  type EpochRecord,
  type PhaseName,
  type PhaseState,
  type PhaseTimings,
  type WarmStart,
} from './checkpoint.ts';
import { decodeInOrder } from './data.ts';
import { fromHalf } from '../linalg/f16.ts';
import { FrozenBase } from './frozen.ts';
import type { ParamTensor, TopPlan } from './plan.ts';
import type { EngineName, OptimizerConfig, TopEngine } from './top-engine.ts';
import { pct } from '../util/format.ts';
import type { FinetuneOptions } from './options.ts';
import { round, type SplitData } from './prepare.ts';

/** Fine-tuning's training: the warm start, the phase loop (epochs, early stopping, checkpoints), evaluation. */

export interface PhaseContext {
  top: TopEngine;
  /** The trainable part's parameter shapes (for restoring saved values). */
  shapes: number[][];
  base: FrozenBase;
  plan: TopPlan;
  opts: FinetuneOptions;
  train: SplitData;
  val: SplitData;
  names: string[];
  augmenting: boolean;
  preprocessing: Preprocessing;
  fingerprint: Record<string, unknown>;
  ckDir: string;
  phases: Record<PhaseName, PhaseState>;
  history: EpochRecord[];
  /** Phase 2 epoch averaging: running sum of the epochs' weights. */
  avgSum?: Float32Array[] | null;
  /**
   * Refit: no validation split (it was merged into train); every phase runs its fixed number of
   * epochs and keeps its last weights, with nothing evaluated on the way.
   */
  refit: boolean;
}

export function toParams(
  values: readonly Float32Array[],
  shapes: readonly number[][],
  names: readonly string[],
): ParamTensor[] {
  return values.map((d, i) => ({ name: names[i]!, shape: [...shapes[i]!], data: d }));
}

export function saveCk(ctx: PhaseContext, phase: PhaseName, best: Float32Array[] | null): void {
  const st = ctx.top.getOptimizerState();
  saveCheckpoint(ctx.ckDir, {
    version: 1,
    fingerprint: ctx.fingerprint,
    phase,
    phases: ctx.phases,
    history: ctx.history,
    optimizerStep: st.step,
    params: ctx.top.values(ctx.names).map((p) => p.data),
    best,
    m: st.m,
    v: st.v,
    avgSum: ctx.avgSum ?? null,
  });
}

const PHASE_INDEX: Record<PhaseName, number> = { head: 1, finetune: 2 };

/** 0 … n−1 in the epoch's seeded order. */
function shuffledOrder(n: number, rng: Rng): Int32Array {
  const order = new Int32Array(n).map((_, i) => i);
  rng.shuffle(order);
  return order;
}

/** Inverted dropout: each of the first `count` entries is 1/keep with probability keep, else 0. */
function fillDropoutMask(mask: Float32Array, count: number, keep: number, rng: Rng): void {
  for (let q = 0; q < count; q++) mask[q] = rng.next() < keep ? 1 / keep : 0;
}

export function addTopSeconds(t: PhaseTimings, sec: number, engine: EngineName): void {
  t.topSeconds = (t.topSeconds ?? 0) + sec;
  if (engine === 'ort') t.ortSeconds += sec;
  else t.tfjsSeconds += sec;
}

/**
 * Phase 1's warm start: the head trained on the clean pooled training features (computed once, so an
 * epoch costs milliseconds), early-stopped on val loss with the best weights restored. Without it
 * the augmented head epochs start from a random head, and on cats-vs-dogs ended below logistic
 * regression on clean features (97.9 % vs 98.3 % test at 288 px).
 */
export async function warmStartHead(ctx: PhaseContext): Promise<WarmStart> {
  const { top, opts, train, val } = ctx;
  const t0 = performance.now();
  const n = train.images.length;
  const C = ctx.base.pooledDim;
  const B = Math.min(opts.batch, n);
  const x = new Float32Array(B * C);
  const labels = new Int32Array(B);
  const keep = 1 - opts.dropout;
  const mask = opts.dropout > 0 ? new Float32Array(B * C) : undefined;
  const optCfg: OptimizerConfig = { kind: opts.optimizer, lr: opts.lrHead };
  let best: { loss: number | null; accuracy: number | null; epoch: number; params: Float32Array[] } | null = null;
  const patience = Math.max(opts.patience, 5);
  for (let epoch = 1; epoch <= opts.warmupEpochs; epoch++) {
    const rng = new Rng(augmentSeed(opts.seed, 0, epoch));
    const order = shuffledOrder(n, rng);
    for (let s = 0; s < n; s += B) {
      const bs = Math.min(B, n - s);
      for (let r = 0; r < bs; r++) {
        const i = order[s + r]!;
        labels[r] = train.labels[i]!;
        x.set(train.pooled!.subarray(i * C, (i + 1) * C), r * C);
      }
      if (mask) fillDropoutMask(mask, bs * C, keep, rng);
      await top.trainStep(x, bs, labels, mask, optCfg, false);
    }
    if (ctx.refit) {
      // Refit: the epoch count was chosen on validation beforehand; the last epoch is the head.
      if (epoch === opts.warmupEpochs) best = { loss: null, accuracy: null, epoch, params: [] };
      continue;
    }
    const v = await evaluate(ctx, val, false);
    if (!best || v.loss < best.loss! - 1e-6)
      best = { loss: v.loss, accuracy: v.accuracy, epoch, params: top.values(ctx.names).map((p) => p.data) };
    else if (epoch - best.epoch >= patience) break;
  }
  if (!ctx.refit) top.setValues(toParams(best!.params, ctx.shapes, ctx.names));
  const seconds = (performance.now() - t0) / 1000;
  opts.log.info(
    `head warm start on clean features: ${ctx.refit ? `${opts.warmupEpochs} epochs (refit)` : `best epoch ${best!.epoch}/${opts.warmupEpochs}, val loss ${best!.loss!.toFixed(4)} acc ${pct(best!.accuracy!, 1)}`} · ${seconds.toFixed(1)}s`,
  );
  return {
    epochs: opts.warmupEpochs,
    bestEpoch: best!.epoch,
    valLoss: best!.loss === null ? null : round(best!.loss, 5),
    valAccuracy: best!.accuracy === null ? null : round(best!.accuracy, 4),
    seconds: round(seconds),
  };
}

/** Epoch average vs best epoch on val loss; leaves the winner in `top` and returns it. */
async function chooseAverage(
  ctx: PhaseContext,
  st: PhaseState,
  best: Float32Array[] | null,
): Promise<Float32Array[] | null> {
  const { top } = ctx;
  const n = st.avgCount!;
  const avg = ctx.avgSum!.map((a) => Float32Array.from(a, (x) => x / n));
  const kept = top.values(ctx.names);
  top.setValues(toParams(avg, ctx.shapes, ctx.names));
  if (ctx.refit) {
    // The validation run that chose these epoch counts also chose the average (else refit runs
    // with --no-average-epochs), so there is nothing to weigh it against here.
    st.averaged = { epochs: n, valLoss: null, valAccuracy: null, chosen: true };
    ctx.opts.log.info(`finetune: average of ${n} epochs' weights kept (refit)`);
    return avg;
  }
  const v = await evaluate(ctx, ctx.val, true);
  const chosen = !st.best || v.loss < st.best.valLoss - 1e-6;
  st.averaged = { epochs: n, valLoss: round(v.loss, 5), valAccuracy: round(v.accuracy, 4), chosen };
  ctx.opts.log.info(
    `finetune: average of ${n} epochs' weights: val loss ${v.loss.toFixed(4)} acc ${pct(v.accuracy, 1)} — ${chosen ? 'kept' : `best epoch ${st.best!.epoch} kept (val loss ${st.best!.valLoss.toFixed(4)})`}`,
  );
  if (chosen) {
    st.best = { valLoss: v.loss, valAccuracy: v.accuracy, epoch: st.best?.epoch ?? 0 };
    return avg;
  }
  top.setValues(kept);
  return best;
}

/**
 * Cosine decay from `lr` at step 0 towards 0 at step `total` (Loshchilov & Hutter's SGDR without
 * restarts). A function of the step index alone, so a resumed run gets the same rates; the last
 * epochs take small steps, which settles phase 2's epoch-to-epoch oscillation and makes the last
 * epoch a usable model when there is no validation set to pick one (refit).
 */
export function cosineLr(lr: number, step: number, total: number): number {
  return 0.5 * lr * (1 + Math.cos((Math.PI * Math.min(step, total)) / Math.max(total, 1)));
}

/**
 * Phase 2's rate at `step` of `total`: a linear warm-up over the first `warmup` steps (step k gets
 * lr·(k+1)/warmup, so the first step is small but not zero), then constant or cosine decay from `lr`
 * over the remaining steps. A function of the step index alone, like `cosineLr`, so resumes agree.
 */
export function phaseLr(lr: number, step: number, total: number, warmup: number, cosine: boolean): number {
  if (warmup > 0 && step < warmup) return (lr * (step + 1)) / warmup;
  if (!cosine) return lr;
  const w = Math.min(Math.max(warmup, 0), total);
  return cosineLr(lr, step - w, total - w);
}

/** Gamma(shape, 1) by Marsaglia & Tsang (shape < 1 via the U^(1/shape) boost). */
function gammaSample(shape: number, rng: Rng): number {
  if (shape < 1) return gammaSample(shape + 1, rng) * Math.pow(1 - rng.next(), 1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number, v: number;
    do {
      x = rng.normal();
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rng.next();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

/** Beta(α, α): mixup's mixing weight. */
export function betaSample(alpha: number, rng: Rng): number {
  const a = gammaSample(alpha, rng);
  const b = gammaSample(alpha, rng);
  return a + b > 0 ? a / (a + b) : 0.5;
}

/**
 * Soft targets for a batch [bs·K]: label smoothing ε (1 − ε on the label, ε/K spread over every
 * class, as Keras's `label_smoothing`), and with mixup (λ, partner row of each row) the λ-weighted
 * mix of the two rows' targets. Pure: the caller mixes the inputs with the same λ and partners.
 */
export function softTargets(
  labels: Int32Array,
  bs: number,
  K: number,
  smoothing: number,
  mix?: { lambda: number; partner: Int32Array },
): Float32Array {
  const one = (y: number, c: number): number => (c === y ? 1 - smoothing : 0) + smoothing / K;
  const t = new Float32Array(bs * K);
  for (let r = 0; r < bs; r++)
    for (let c = 0; c < K; c++) {
      const own = one(labels[r]!, c);
      t[r * K + c] = mix ? mix.lambda * own + (1 - mix.lambda) * one(labels[mix.partner[r]!]!, c) : own;
    }
  return t;
}

/** A CutMix box [y0, y1) × [x0, x1) on an h × w grid, and the share of each row it leaves its own. */
export interface CutmixBox {
  y0: number;
  y1: number;
  x0: number;
  x1: number;
  /** 1 − the box's area share: the weight of the row's own label (the box comes from its partner). */
  lambda: number;
}

/**
 * CutMix's box (Yun et al. 2019): sides √(1 − λ) of the grid's, centred uniformly and clipped to it;
 * λ is then recomputed from the clipped area, so the targets weigh exactly what the pixels show.
 */
export function cutmixBox(h: number, w: number, lambda: number, rng: Rng): CutmixBox {
  const side = Math.sqrt(1 - lambda);
  const ch = Math.round(h * side),
    cw = Math.round(w * side);
  const cy = Math.floor(rng.next() * h),
    cx = Math.floor(rng.next() * w);
  const y0 = Math.max(0, cy - (ch >> 1)),
    y1 = Math.min(h, cy - (ch >> 1) + ch);
  const x0 = Math.max(0, cx - (cw >> 1)),
    x1 = Math.min(w, cx - (cw >> 1) + cw);
  const area = Math.max(0, y1 - y0) * Math.max(0, x1 - x0);
  return { y0, y1, x0, x1, lambda: 1 - area / (h * w) };
}

/**
 * Paste each row's partner's box into a copy of the batch: `src` and `dst` hold `bs` rows of h × w × c
 * (HWC, images or activations), `dst` gets row r = `src` row r with the box taken from row partner[r].
 */
export function pasteCutmix<T extends Uint8Array | Float32Array>(
  src: T,
  dst: T,
  bs: number,
  shape: readonly [number, number, number],
  box: CutmixBox,
  partner: Int32Array,
): void {
  const [h, w, c] = shape;
  const per = h * w * c;
  dst.set(src.subarray(0, bs * per));
  for (let r = 0; r < bs; r++) {
    const own = r * per,
      from = partner[r]! * per;
    for (let y = box.y0; y < box.y1; y++) {
      const a = (y * w + box.x0) * c,
        b = (y * w + box.x1) * c;
      dst.set(src.subarray(from + a, from + b), own + a);
    }
  }
}

/** One batch's CutMix: λ ~ Beta(α, α), its box on an h × w grid, and each row's partner. */
function cutmixDraw(
  alpha: number,
  h: number,
  w: number,
  bs: number,
  rng: Rng,
): { box: CutmixBox; partner: Int32Array } {
  const box = cutmixBox(h, w, betaSample(alpha, rng), rng);
  return { box, partner: shuffledOrder(bs, rng) };
}

/** Train one phase from its current epoch to the end (or early stop); leaves the best weights in `top`. */
export async function runPhase(
  ctx: PhaseContext,
  phase: PhaseName,
  bestIn: Float32Array[] | null,
): Promise<Float32Array[] | null> {
  const { top, base, opts, train, plan } = ctx;
  const st = ctx.phases[phase];
  const trainTop = phase === 'finetune';
  const maxEpochs = phase === 'head' ? opts.epochsHead : opts.epochsFinetune;
  const baseLr = trainTop ? opts.lr : opts.lrHead;
  const n = train.images.length;
  const B = Math.min(opts.batch, n);
  const stepsPerEpoch = Math.ceil(n / B);
  const cosine = trainTop && opts.lrSchedule === 'cosine';
  const warmupSteps = trainTop ? Math.round((opts.lrWarmup ?? 0) * stepsPerEpoch) : 0;
  const [h, w] = ctx.preprocessing.size;
  const per = h * w * 3;
  const [bh, bw, bc] = plan.inShape;
  const bDim = bh * bw * bc;
  const pDim = base.pooledDim;
  const pixBatch = ctx.augmenting ? new Uint8Array(B * per) : new Uint8Array(0);
  const xBatch = new Float32Array(B * (trainTop ? bDim : pDim));
  const labels = new Int32Array(B);
  const keep = 1 - opts.dropout;
  const mask = opts.dropout > 0 ? new Float32Array(B * plan.outShape[2]) : undefined;
  const K = top.nClasses;
  // Phase 2 only: phase 1 is a few epochs of the head alone from its warm start.
  const smoothing = trainTop ? (opts.labelSmoothing ?? 0) : 0;
  const mixupAlpha = trainTop ? (opts.mixup ?? 0) : 0;
  const mixBuf = new Float32Array(mixupAlpha > 0 ? B * bDim : 0);
  // CutMix mixes the photos themselves when they go through the frozen base each step (augmenting);
  // otherwise the cached boundary activations, with the box on their grid.
  const cutmixAlpha = trainTop ? (opts.cutmix ?? 0) : 0;
  const cutPixels = new Uint8Array(cutmixAlpha > 0 && ctx.augmenting ? B * per : 0);
  const cutBoundary = new Float32Array(cutmixAlpha > 0 && !ctx.augmenting ? B * bDim : 0);
  let best = bestIn;
  // Phase 2's weights oscillate from epoch to epoch on small data (val loss 0.030 ↔ 0.041 on
  // cats-vs-dogs); the average of the epochs' weights (SWA; BN is frozen, so no recalibration) is a
  // candidate beside the best epoch, chosen on val loss.
  const averaging = trainTop && opts.averageEpochs;
  if (st.epoch >= maxEpochs) st.done = true;
  while (!st.done) {
    const epoch = st.epoch + 1;
    const tEpoch = performance.now();
    let ortSec = 0,
      topSec = 0,
      augSec = 0;
    const rng = new Rng(augmentSeed(opts.seed, PHASE_INDEX[phase], epoch));
    const order = shuffledOrder(n, rng);
    const progress = new Progress({
      label: `${phase} ${epoch}/${maxEpochs}`,
      total: n,
      quiet: opts.quiet,
      log: opts.log,
    });
    let lossSum = 0,
      correct = 0;
    for (let s = 0; s < n; s += B) {
      const bs = Math.min(B, n - s);
      for (let r = 0; r < bs; r++) labels[r] = train.labels[order[s + r]!]!;
      let cut: { box: CutmixBox; partner: Int32Array } | null = null;
      let x: Float32Array;
      if (ctx.augmenting) {
        const ta = performance.now();
        const epochKey = PHASE_INDEX[phase] * 100000 + epoch;
        for (let r = 0; r < bs; r++) {
          const idx = order[s + r]!;
          const p = sampleAugmentParams(opts.augment, seededRandom(augmentSeed(opts.seed, epochKey, idx)));
          augmentImage(train.pixels![idx]!, w, h, p, pixBatch.subarray(r * per, (r + 1) * per));
        }
        let pix = pixBatch;
        if (cutmixAlpha > 0 && bs > 1) {
          cut = cutmixDraw(cutmixAlpha, h, w, bs, rng);
          pasteCutmix(pixBatch, cutPixels, bs, [h, w, 3], cut.box, cut.partner);
          pix = cutPixels;
        }
        augSec += (performance.now() - ta) / 1000;
        const o0 = base.seconds;
        const b = await base.boundary(pix, bs);
        x = trainTop ? b : await base.pooled(b, bs);
        ortSec += base.seconds - o0;
      } else if (trainTop) {
        for (let r = 0; r < bs; r++) fromHalf(train.boundary![order[s + r]!]!, xBatch, r * bDim);
        x = xBatch;
        if (cutmixAlpha > 0 && bs > 1) {
          cut = cutmixDraw(cutmixAlpha, bh, bw, bs, rng);
          pasteCutmix(xBatch, cutBoundary, bs, [bh, bw, bc], cut.box, cut.partner);
          x = cutBoundary;
        }
      } else {
        for (let r = 0; r < bs; r++)
          xBatch.set(train.pooled!.subarray(order[s + r]! * pDim, (order[s + r]! + 1) * pDim), r * pDim);
        x = xBatch;
      }
      if (mask) fillDropoutMask(mask, bs * plan.outShape[2], keep, rng);
      let targets: Float32Array | undefined;
      if (mixupAlpha > 0 && bs > 1) {
        // Mixup on the trainable part's input (the frozen base's output, the boundary activations):
        // one λ per batch, each row mixed with a shuffled partner (manifold mixup at the boundary).
        const lambda = betaSample(mixupAlpha, rng);
        const partner = shuffledOrder(bs, rng);
        const mixed = mixBuf.subarray(0, bs * bDim);
        for (let r = 0; r < bs; r++) {
          const a0 = r * bDim,
            b0 = partner[r]! * bDim;
          for (let j = 0; j < bDim; j++) mixed[a0 + j] = lambda * x[a0 + j]! + (1 - lambda) * x[b0 + j]!;
        }
        x = mixed;
        targets = softTargets(labels, bs, K, smoothing, { lambda, partner });
      } else if (cut) targets = softTargets(labels, bs, K, smoothing, { lambda: cut.box.lambda, partner: cut.partner });
      else if (smoothing > 0) targets = softTargets(labels, bs, K, smoothing);
      const lr = phaseLr(baseLr, (epoch - 1) * stepsPerEpoch + s / B, maxEpochs * stepsPerEpoch, warmupSteps, cosine);
      const optCfg: OptimizerConfig = { kind: opts.optimizer, lr };
      const tt = performance.now();
      const res = await top.trainStep(x, bs, labels, mask, optCfg, trainTop, targets);
      topSec += (performance.now() - tt) / 1000;
      lossSum += res.loss * bs;
      correct += res.correct;
      progress.tick(bs, `loss ${(lossSum / (s + bs)).toFixed(4)} acc ${pct(correct / (s + bs), 1)}`);
    }
    const tv = performance.now();
    const v = ctx.refit ? null : await evaluate(ctx, ctx.val, trainTop);
    topSec += (performance.now() - tv) / 1000;
    const seconds = (performance.now() - tEpoch) / 1000;
    const rec: EpochRecord = {
      phase,
      epoch,
      loss: round(lossSum / n, 5),
      accuracy: round(correct / n, 4),
      valLoss: v ? round(v.loss, 5) : null,
      valAccuracy: v ? round(v.accuracy, 4) : null,
      seconds: round(seconds),
    };
    ctx.history.push(rec);
    progress.finish(
      `${phase} epoch ${epoch}/${maxEpochs}: loss ${rec.loss.toFixed(4)} acc ${pct(rec.accuracy, 1)}${v ? ` · val loss ${v.loss.toFixed(4)} acc ${pct(v.accuracy, 1)}` : ''} · ${seconds.toFixed(1)}s (frozen base ${ortSec.toFixed(1)}s in ORT, top ${topSec.toFixed(1)}s in ${top.name === 'ort' ? 'ORT' : 'TF.js'}, augment ${augSec.toFixed(1)}s)`,
    );
    st.epoch = epoch;
    st.timings.seconds += seconds;
    st.timings.ortSeconds += ortSec;
    st.timings.baseSeconds = (st.timings.baseSeconds ?? 0) + ortSec;
    addTopSeconds(st.timings, topSec, top.name);
    st.timings.augmentSeconds += augSec;
    if (v && (!st.best || v.loss < st.best.valLoss - 1e-6)) {
      st.best = { valLoss: v.loss, valAccuracy: v.accuracy, epoch };
      st.since = 0;
      best = top.values(ctx.names).map((p) => p.data);
    } else if (v) st.since++;
    if (averaging) {
      const cur = top.values(ctx.names);
      ctx.avgSum ??= cur.map((p) => new Float32Array(p.data.length));
      cur.forEach((p, i) => {
        const acc = ctx.avgSum![i]!;
        for (let j = 0; j < acc.length; j++) acc[j]! += p.data[j]!;
      });
      st.avgCount = (st.avgCount ?? 0) + 1;
    }
    if (st.since >= opts.patience || epoch >= maxEpochs) {
      st.done = true;
      if (best) top.setValues(toParams(best, ctx.shapes, ctx.names));
      if (st.best && st.since >= opts.patience && epoch < maxEpochs)
        opts.log.info(`${phase}: early stop after epoch ${epoch} (best epoch ${st.best.epoch})`);
      if (averaging && (st.avgCount ?? 0) >= 2) best = await chooseAverage(ctx, st, best);
    }
    saveCk(ctx, phase, st.done ? null : best);
    opts.onEpoch?.(phase, epoch);
  }
  return best;
}

/**
 * Flip test-time augmentation: each image's probabilities averaged with those of its mirror image
 * (decoded again, flipped, through ORT). Mean cross-entropy and accuracy of the averaged probabilities.
 */
export async function flipTta(
  ctx: PhaseContext,
  split: SplitData,
  probs: Float32Array,
  useTop: boolean,
): Promise<{ loss: number; accuracy: number }> {
  const { top, base, opts } = ctx;
  const [h, w] = ctx.preprocessing.size;
  const per = h * w * 3;
  const K = top.nClasses;
  const B = opts.batch;
  const pix = new Uint8Array(B * per);
  const mean = new Float32Array(split.images.length * K);
  let inBatch = 0,
    done = 0;
  const flush = async (): Promise<void> => {
    if (inBatch === 0) return;
    const b = await base.boundary(pix, inBatch);
    const p = useTop
      ? await top.predict(b, inBatch, false)
      : await top.predict(await base.pooled(b, inBatch), inBatch, true);
    for (let q = 0; q < inBatch * K; q++) mean[done * K + q] = (probs[done * K + q]! + p[q]!) / 2;
    done += inBatch;
    inBatch = 0;
  };
  for await (const d of decodeInOrder(split.images, ctx.preprocessing, {
    workers: opts.workers,
    maxPixels: opts.maxPixels,
  })) {
    if (!('pixels' in d)) throw new Error(`TTA: ${split.images[d.index]!.path} no longer decodes`);
    augmentImage(d.pixels, w, h, { ...IDENTITY_PARAMS, flip: true }, pix.subarray(inBatch * per, (inBatch + 1) * per));
    if (++inBatch === B) await flush();
  }
  await flush();
  return scoreProbs(mean.subarray(0, done * K), split.labels.subarray(0, done), K);
}

/** Mean cross-entropy (meanLogLoss's floor) and accuracy (argmax) of class probabilities [n·K]. */
export function scoreProbs(probs: Float32Array, labels: Int32Array, K: number): { loss: number; accuracy: number } {
  const n = labels.length;
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const row = probs.subarray(i * K, (i + 1) * K);
    let arg = 0;
    for (let c = 1; c < K; c++) if (row[c]! > row[arg]!) arg = c;
    if (arg === labels[i]) correct++;
  }
  return { loss: meanLogLoss(probs, labels, K), accuracy: correct / Math.max(n, 1) };
}

/** Mean cross-entropy and accuracy on a split: the head on pooled features, or top + head on boundary activations. */
export async function evaluate(
  ctx: PhaseContext,
  split: SplitData,
  useTop: boolean,
): Promise<{ loss: number; accuracy: number; probs: Float32Array }> {
  const { top, plan } = ctx;
  const n = split.images.length;
  const K = top.nClasses;
  const probs = new Float32Array(n * K);
  if (!useTop) {
    probs.set(await top.predict(split.pooled!, n, true));
  } else {
    const [bh, bw, bc] = plan.inShape;
    const bDim = bh * bw * bc;
    const B = 64;
    const buf = new Float32Array(B * bDim);
    for (let s = 0; s < n; s += B) {
      const bs = Math.min(B, n - s);
      for (let r = 0; r < bs; r++) fromHalf(split.boundary![s + r]!, buf, r * bDim);
      probs.set(await top.predict(buf, bs, false), s * K);
    }
  }
  return { ...scoreProbs(probs, split.labels.subarray(0, n), K), probs };
}
