import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.ts';
import { UserError } from '../util/errors.ts';

export type PhaseName = 'head' | 'finetune';

export interface EpochRecord {
  phase: PhaseName;
  epoch: number;
  loss: number;
  accuracy: number;
  /** null when refitting (no validation split). */
  valLoss: number | null;
  valAccuracy: number | null;
  seconds: number;
}

/**
 * Wall seconds of a phase and where they went: `baseSeconds` the frozen base (always ORT),
 * `topSeconds` the trainable top (in the engine that trains it); `ortSeconds`/`tfjsSeconds` are the
 * same time split by runtime.
 */
export interface PhaseTimings {
  seconds: number;
  ortSeconds: number;
  tfjsSeconds: number;
  augmentSeconds: number;
  baseSeconds: number;
  topSeconds: number;
}

export interface WarmStart {
  epochs: number;
  /** The last epoch when refitting (nothing to choose on). */
  bestEpoch: number;
  valLoss: number | null;
  valAccuracy: number | null;
  seconds: number;
}

export interface PhaseState {
  /** Epochs completed. */
  epoch: number;
  /** True once early stopping fired or the epoch budget is used up. */
  done: boolean;
  best: { valLoss: number; valAccuracy: number; epoch: number } | null;
  /** Epochs since the best. */
  since: number;
  timings: PhaseTimings;
  /** Test accuracy of the phase's best model (reported, never used for any decision). */
  testAccuracy?: number;
  /** Phase 2 with epoch averaging: how many epochs' weights are in the running sum. */
  avgCount?: number;
  /** Phase 2 with epoch averaging: the averaged weights' val scores and whether they were kept. */
  averaged?: { epochs: number; valLoss: number | null; valAccuracy: number | null; chosen: boolean };
  /** Phase 1 only: the warm start on clean cached features that preceded the augmented epochs. */
  warmStart?: WarmStart;
}

/** Everything needed to continue a run exactly where it stopped; arrays travel in a binary blob. */
export interface Checkpoint {
  version: 1;
  fingerprint: Record<string, unknown>;
  phase: PhaseName;
  phases: Record<PhaseName, PhaseState>;
  history: EpochRecord[];
  optimizerStep: number;
  /** Current parameters, best parameters of the running phase (if any), optimiser moments. */
  params: Float32Array[];
  best: Float32Array[] | null;
  m: Float32Array[];
  v: Float32Array[];
  /** Phase 2: running sum of the weights after each epoch (for the epoch average), if enabled. */
  avgSum?: Float32Array[] | null;
}

const STATE = 'state.json';

export function emptyPhase(): PhaseState {
  return {
    epoch: 0,
    done: false,
    best: null,
    since: 0,
    timings: { seconds: 0, ortSeconds: 0, tfjsSeconds: 0, augmentSeconds: 0, baseSeconds: 0, topSeconds: 0 },
  };
}

/**
 * Atomic per-epoch checkpoint: the blob goes to a new file first, then state.json (which names the
 * blob) is replaced; only then is the previous blob removed. A crash at any point leaves a
 * consistent (old or new) pair.
 */
export function saveCheckpoint(dir: string, ck: Checkpoint): void {
  const arrays = [...ck.params, ...(ck.best ?? []), ...ck.m, ...ck.v, ...(ck.avgSum ?? [])];
  const counts = {
    params: ck.params.length,
    best: ck.best?.length ?? 0,
    m: ck.m.length,
    v: ck.v.length,
    avgSum: ck.avgSum?.length ?? 0,
  };
  const tag = `${ck.phase}-${String(ck.phases[ck.phase].epoch).padStart(3, '0')}-${ck.phases[ck.phase].done ? 'done' : 'run'}`;
  const blob = `weights-${tag}.bin`;
  writeFileAtomic(
    join(dir, blob),
    arrays.map((a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)),
  );
  const { params: _p, best: _b, m: _m, v: _v, avgSum: _a, ...rest } = ck;
  const state = { ...rest, blob, counts, lengths: arrays.map((a) => a.length) };
  writeFileAtomic(join(dir, STATE), JSON.stringify(state, null, 1) + '\n');
  for (const f of readdirSync(dir))
    if (f.startsWith('weights-') && f.endsWith('.bin') && f !== blob) rmSync(join(dir, f), { force: true });
}

export function loadCheckpoint(dir: string): Checkpoint | undefined {
  const statePath = join(dir, STATE);
  if (!existsSync(statePath)) return undefined;
  const s = JSON.parse(readFileSync(statePath, 'utf8'));
  if (s.version !== 1) throw new UserError(`${statePath}: unknown checkpoint version ${s.version}`);
  const buf = readFileSync(join(dir, s.blob));
  const lengths: number[] = s.lengths;
  const total = lengths.reduce((a, b) => a + b, 0);
  if (buf.byteLength !== total * 4)
    throw new UserError(
      `${join(dir, s.blob)}: expected ${total * 4} bytes, found ${buf.byteLength} (corrupt checkpoint)`,
    );
  const arrays: Float32Array[] = [];
  let off = 0;
  for (const n of lengths) {
    const a = new Float32Array(n);
    new Uint8Array(a.buffer).set(buf.subarray(off, off + n * 4));
    arrays.push(a);
    off += n * 4;
  }
  const c = s.counts;
  let i = 0;
  const take = (k: number): Float32Array[] => {
    const r = arrays.slice(i, i + k);
    i += k;
    return r;
  };
  const params = take(c.params);
  const best = c.best > 0 ? take(c.best) : null;
  const m = take(c.m);
  const v = take(c.v);
  const avgSum = c.avgSum > 0 ? take(c.avgSum) : null;
  const { blob: _b, counts: _c, lengths: _l, ...rest } = s;
  return { ...rest, params, best, m, v, avgSum } as Checkpoint;
}
