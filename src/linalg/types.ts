/** Row-major float32 matrix: the data type features travel in, from the feature store to heads and metrics. */
export interface Matrix {
  data: Float32Array;
  rows: number;
  cols: number;
}

/** Features and their class labels (0..nClasses-1). */
export interface LabelledSet {
  X: Matrix;
  y: Int32Array;
}
