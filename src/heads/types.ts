import type { Logger } from '../util/log.ts';
import type { LabelledSet, Matrix } from '../linalg/types.ts';

/** Heads see only feature matrices (never images); the types live with the linear algebra. */
export type { LabelledSet, Matrix };

export interface FitOptions {
  /** Number of classes; labels are 0..nClasses-1. */
  nClasses: number;
  /** Validation split for early stopping / tuning; never the test split. */
  val?: LabelledSet;
  /** 'balanced' weights each class by n / (nClasses * count_c), as scikit-learn does. */
  classWeight?: 'none' | 'balanced';
  seed?: number;
  log?: Logger;
}

/** A batch of rows: X (rows × d) and labels. Views may be reused by the source after the next one. */
export interface RowBatch {
  X: Matrix;
  y: Int32Array;
}

/** Rows delivered in batches, without the caller ever holding all of them (an in-memory matrix, or a cache on disk). */
export interface RowBatches {
  readonly rows: number;
  readonly cols: number;
  /**
   * One pass over every row once. `shuffle` asks for a seeded random order (training epochs);
   * without it the order is the source's own (statistics passes). Yields about `batchRows` rows at a time.
   */
  pass(batchRows: number, shuffle?: { seed: number }): AsyncIterable<RowBatch> | Iterable<RowBatch>;
}

/** Hyperparameters are plain JSON values, set at construction (scikit-learn style). */
export type HeadParams = Record<string, number | string | boolean>;

/**
 * The one contract every classifier head implements. Construction only stores hyperparameters;
 * fit() learns (including feature standardisation, fitted on train only, which is part of the head).
 */
export interface Head {
  readonly kind: string;
  readonly params: HeadParams;
  fit(X: Matrix, y: Int32Array, opts: FitOptions): Promise<void>;
  predict(X: Matrix): Promise<Int32Array>;
  /** rows × nClasses, each row sums to 1. */
  predictProba(X: Matrix): Promise<Matrix>;
  /**
   * predict and predictProba of the same rows in one pass (equal to calling both). Optional: on a
   * 20 000-row test split a kNN search or a Nyström map is the whole cost, so doing it once halves
   * scoring; callers fall back to the two calls.
   */
  predictWithProba?(X: Matrix): Promise<{ pred: Int32Array; proba: Matrix }>;
  /**
   * Optional: fit from rows streamed in batches (a training split larger than memory; memory is
   * one batch). Only heads that train by mini-batches have it (logreg, linear SVM).
   */
  fitBatches?(src: RowBatches, opts: FitOptions): Promise<void>;
  /** Save to `path` (a JSON file, or a directory for heads that need several files). */
  save(path: string): Promise<void>;
}
