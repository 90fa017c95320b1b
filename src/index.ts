/**
 * convcache as a library: the functions behind the `convcache` command, with typed options.
 * They take an options object (with a `log` for progress and warnings; silent by default),
 * return data, and never print or exit on their own. Problems with the caller's input throw
 * UserError (one readable message); anything else is a bug.
 */
import './util/ort-telemetry.ts'; // before ONNX Runtime loads: no telemetry files or uploads

// Feature extraction (the fast path) and the cache it writes.
export { extractFeatures, type ExtractOptions, type ExtractResult } from './pipeline/extract.ts';
export {
  openFeatureCache,
  loadFeatureCache,
  readFeatureCache,
  iterateSplit,
  type FeatureCache,
  type FeatureCacheReader,
  type LoadOptions,
  type SplitData,
} from './store/read.ts';
export { mergeShards, type MergeOptions } from './pipeline/merge.ts';
export type { Manifest, SplitCounts } from './store/manifest.ts';
export type { SplitName } from './dataset/scan.ts';
export type { SplitFractions } from './dataset/split.ts';
export type { Pooling } from './backbone/convert.ts';
export type { Preprocessing } from './backbone/preprocess.ts';
export { DEFAULT_MODEL } from './backbone/registry.ts';

// Heads: one interface, created by kind or loaded from disk.
export { createHead, loadHead, HEAD_KINDS, headParamSpecs } from './heads/registry.ts';
export type { Head, HeadParams, FitOptions, Matrix, LabelledSet } from './heads/types.ts';
export {
  trainHead,
  saveTrainedHead,
  evaluateSavedHead,
  type TrainHeadOptions,
  type TrainHeadResult,
  type HeadMeta,
} from './pipeline/train.ts';

// Comparing heads, predicting, fine-tuning.
export { compareHeads, type CompareOptions, type CompareResult } from './pipeline/compare.ts';
export type { Report, ReportRow, ExtraRow } from './eval/report.ts';
export { predictImages, type PredictOptions, type Prediction, type PredictFailure } from './pipeline/predict.ts';
export { runFinetune, FINETUNE_DEFAULTS, type FinetuneOptions, type FinetuneReport } from './finetune/recipe.ts';
export { selectThenRefit, type SelectThenRefitResult } from './finetune/select.ts';
export { VALIDATION_MAXIMA } from './finetune/options.ts';
export { parseAugmentSpec, type AugmentSpec } from './images/augment.ts';

// Logging, errors, locations.
export { consoleLogger, silentLogger, type Logger } from './util/log.ts';
export type { ProgressEvent } from './util/progress.ts';
export { UserError, isUserError } from './util/errors.ts';
export { cacheRoot, modelCacheDir } from './util/paths.ts';
