import { UserError } from '../util/errors.ts';
import type { ParamTensor } from './plan.ts';

/** Adam moments per parameter tensor, checkpointed exactly. */
export interface AdamState {
  step: number;
  m: Float32Array[];
  v: Float32Array[];
}

export interface OptimizerConfig {
  kind: 'adam' | 'rmsprop';
  lr: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
  rho?: number;
}

/** Where the trainable top runs. Same mathematics and parameter layouts; ORT is the fast default. */
export type EngineName = 'ort' | 'tfjs';
export const ENGINES: readonly EngineName[] = ['ort', 'tfjs'];

/** An --engine value, or a one-line UserError. */
export function parseEngine(v: unknown): EngineName {
  const s = String(v);
  if (!(ENGINES as readonly string[]).includes(s))
    throw new UserError(`--engine must be one of ${ENGINES.join(', ')}, got '${s}'`);
  return s as EngineName;
}

/**
 * The trainable part of a split network (unfrozen conv ops + GAP → dropout → dense softmax head),
 * whichever engine trains it. Inputs are plain arrays: boundary activations channels-last
 * [n·H·W·C], or pooled features [n·C] for the head alone.
 */
export interface TopEngine {
  readonly name: EngineName;
  readonly headIndex: number;
  readonly nClasses: number;
  values(names: readonly string[]): ParamTensor[];
  setValues(values: readonly ParamTensor[]): void;
  resetOptimizer(): void;
  getOptimizerState(): AdamState;
  /** Optimiser moments for parameters [from, end). */
  setOptimizerState(s: AdamState, from: number): void;
  /**
   * One optimisation step; returns the batch's mean cross-entropy and number correct (against
   * `labels`). `targets` [n·K]: soft target distributions (label smoothing, mixup) instead of the
   * one-hot `labels` for the loss and its gradient.
   */
  trainStep(
    x: Float32Array,
    n: number,
    labels: Int32Array,
    mask: Float32Array | undefined,
    opt: OptimizerConfig,
    trainTop: boolean,
    targets?: Float32Array,
  ): Promise<{ loss: number; correct: number }>;
  /** Class probabilities [n·K] (inference: no dropout). */
  predict(x: Float32Array, n: number, pooled: boolean): Promise<Float32Array>;
  dispose(): Promise<void>;
}
