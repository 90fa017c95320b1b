import type { Pooling } from '../backbone/convert.ts';
import { parseAugmentSpec } from '../images/augment.ts';
import { parseTtaSpec } from '../images/tta.ts';
import type { Logger } from '../util/log.ts';
import { extractFeatures, type ExtractResult } from './extract.ts';
import { readShardRun } from './shard.ts';

export interface MergeOptions {
  out: string;
  log: Logger;
  quiet?: boolean;
}

/**
 * Assemble a sharded extraction's outputs (features.arrow, .npy files, manifest.json) from the
 * shards' records in --out: the same code path as a plain extract that finds everything cached, so
 * the files are byte-identical to a single-machine run (manifest `timings` aside, which describe the
 * run that wrote them). If any image has no record yet, fails with one line naming how many and from
 * which shards, before writing anything.
 */
export async function mergeShards(opts: MergeOptions): Promise<ExtractResult> {
  const run = readShardRun(opts.out);
  const o = run.options;
  return extractFeatures({
    data: o.data,
    out: opts.out,
    model: o.model,
    ...(o.layer ? { layer: o.layer } : {}),
    ...(o.pooling ? { pooling: o.pooling as Pooling } : {}),
    ...(o.preprocessing ? { preprocessing: o.preprocessing } : {}),
    ...(o.onnxLayout ? { onnxLayout: o.onnxLayout } : {}),
    split: o.split,
    seed: o.seed,
    ...(o.augment ? { augment: { spec: parseAugmentSpec(o.augment.spec), views: o.augment.views } } : {}),
    ...(o.tta ? { tta: parseTtaSpec(o.tta) } : {}),
    quiet: opts.quiet ?? false,
    log: opts.log,
    merge: { backbone: run.backbone, shards: run.shards },
  });
}
