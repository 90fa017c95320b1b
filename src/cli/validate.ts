import { parseMemory } from '../store/read.ts';
import type { TuneMode } from '../eval/tune.ts';
import { UserError } from '../util/errors.ts';

/**
 * The CLI's value checks, shared by every command so a flag means the same thing everywhere.
 * Each returns the typed value or throws a one-line UserError naming the flag.
 */

/** Largest seed: seeds are used as uint32 by every PRNG (dataset/split.ts seededRandom). */
export const MAX_SEED = 2 ** 32 - 1;

/** An integer in [min, max]. */
export function intInRange(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new UserError(`--${name} must be an integer from ${min} to ${max}, got '${String(v)}'`);
  }
  return v;
}

/** An integer undefined-or-in-range (optional flags without a default). */
export function optionalInt(name: string, v: number | undefined, min: number, max: number): number | undefined {
  return v === undefined ? undefined : intInRange(name, v, min, max);
}

export function seed(v: unknown, name = 'seed'): number {
  return intInRange(name, v, 0, MAX_SEED);
}

/** One of a fixed set of words. */
export function oneOf<T extends string>(name: string, v: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(v as T))
    throw new UserError(`--${name} must be one of ${allowed.join(', ')}, got '${String(v)}'`);
  return v as T;
}

export function classWeight(v: unknown): 'none' | 'balanced' {
  return oneOf('class-weight', v, ['none', 'balanced'] as const);
}

/**
 * Share of train held out for validation. compare/train-head accept 0 (no validation set);
 * finetune needs one (early stopping and the phase choice read it), so it passes allowZero=false.
 */
export function valFraction(v: unknown, allowZero = true): number {
  const ok = typeof v === 'number' && v < 1 && (allowZero ? v >= 0 : v > 0);
  if (!ok) throw new UserError(`--val-fraction must be in ${allowZero ? '[0, 1)' : '(0, 1)'}, got '${String(v)}'`);
  return v;
}

/** A finite number > 0 (learning rates). */
export function positive(name: string, v: unknown): number {
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v))
    throw new UserError(`--${name} must be a positive number, got '${String(v)}'`);
  return v;
}

/** A rate in [0, 1) (dropout). */
export function rate(name: string, v: unknown): number {
  if (typeof v !== 'number' || !(v >= 0 && v < 1))
    throw new UserError(`--${name} must be in [0, 1), got '${String(v)}'`);
  return v;
}

/** Batch/worker/thread counts, with the same limits in every command. */
export const batchSize = (v: unknown, max = 1024): number => intInRange('batch', v, 1, max);
export const workers = (v: unknown): number => intInRange('workers', v, 1, 64);
export const threads = (v: unknown): number => intInRange('threads', v, 1, 256);
/** --sessions N (1..threads), or undefined for the default. */
export const sessions = (v: unknown, threadCount: number): number | undefined =>
  v === undefined ? undefined : intInRange('sessions', v, 1, threadCount);
export const maxPixels = (v: unknown): number => intInRange('max-pixels', v, 1, Number.MAX_SAFE_INTEGER);

/**
 * --max-memory / --max-rows / --seed as LoadOptions for loadFeatureCache. Checked before the cache
 * is located, so a bad value is reported as such even when no cache exists yet.
 */
export function loadLimits(flags: { 'max-memory'?: string; 'max-rows'?: number; seed: unknown }): {
  maxMemoryBytes?: number;
  maxRows?: number;
  seed: number;
} {
  return {
    ...(flags['max-memory'] !== undefined ? { maxMemoryBytes: parseMemory(flags['max-memory']) } : {}),
    ...(flags['max-rows'] !== undefined ? { maxRows: intInRange('max-rows', flags['max-rows'], 1, 2 ** 31 - 1) } : {}),
    seed: seed(flags.seed),
  };
}

/** --tune / --tune-cv K (which implies --tune): tune on the validation split, or by K-fold CV on train+val. */
export function tuneMode(flags: { tune?: boolean; 'tune-cv'?: number }): false | TuneMode {
  if (flags['tune-cv'] !== undefined) return { by: 'cv', folds: intInRange('tune-cv', flags['tune-cv'], 2, 50) };
  return flags.tune ? { by: 'val' } : false;
}
