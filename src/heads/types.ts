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
  /** Save to `path` (a JSON file, or a directory for heads that need several files). */
  save(path: string): Promise<void>;
}
