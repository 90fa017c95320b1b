import { cacheRootFlag, decodeFlags, defineCommand, onInterrupt, sessionsFlag } from './command.ts';
import { batchSize, intInRange, maxPixels, oneOf, optionalInt, seed, sessions, threads, workers } from './validate.ts';
import { UserError } from '../util/errors.ts';
import { consoleLogger } from '../util/log.ts';
import { DEFAULT_SPLIT_SPEC, parseSplitFractions } from '../dataset/split.ts';
import { extractFeatures, type ExtractOptions } from '../pipeline/extract.ts';
import { extractShard, resolveShard } from '../pipeline/shard.ts';
import { DEFAULT_MODEL } from '../backbone/registry.ts';
import type { Preprocessing } from '../backbone/preprocess.ts';
import { parseAugmentSpec, type AugmentSpec } from '../images/augment.ts';
import { DEFAULT_PRECISION } from '../backbone/quantize.ts';
import { parseTtaSpec } from '../images/tta.ts';
import { POOLINGS } from '../backbone/convert.ts';
import { DEFAULT_EXTRACT_BATCH } from '../pipeline/schedule.ts';

const KERNEL = { bilinear: 'linear', bicubic: 'cubic', nearest: 'nearest', lanczos: 'lanczos3' } as const;

function triple(name: string, v: string[] | undefined): [number, number, number] | undefined {
  if (v === undefined) return undefined;
  const xs = v.map(Number);
  if (xs.length !== 3 || xs.some((x) => !Number.isFinite(x)))
    throw new UserError(`--${name} needs three numbers like 0.485,0.456,0.406`);
  if (name === 'std' && xs.some((x) => x <= 0)) throw new UserError('--std values must be positive');
  return xs as [number, number, number];
}

function augmentOption(
  augment: string | undefined,
  viewsFlag: number,
): { spec: AugmentSpec; views: number } | undefined {
  const views = intInRange('views', viewsFlag, 0, 1000);
  if (augment === undefined) {
    if (views > 0) throw new UserError('--views needs --augment SPEC');
    return undefined;
  }
  const spec = parseAugmentSpec(augment);
  if (views === 0) throw new UserError('--augment needs --views K (K >= 1 augmented views per training image)');
  return { spec, views };
}

export const command = defineCommand(
  {
    name: 'extract',
    summary: 'run the frozen conv base once over every image and cache the features (Arrow + .npy + manifest)',
    usage: 'convcache extract [--data DIR] [--model NAME|DIR|URL] [--layer NAME] [--pool avg|max|none] [--out DIR]',
    flags: {
      data: {
        type: 'string',
        metavar: 'DIR',
        description:
          "data root with class folders (or train/val/test folders); default <cache root>/images/, else the mirror's cats-vs-dogs",
      },
      model: {
        type: 'string',
        metavar: 'MODEL',
        description: 'known name, model folder, model.json, or URL',
        default: DEFAULT_MODEL,
      },
      layer: {
        type: 'string',
        metavar: 'NAME',
        description:
          'cut the base at this layer (see convcache layers), or at several (a,b: their pooled features concatenated); default: the last conv activation',
      },
      pool: {
        type: 'string',
        metavar: 'MODE',
        description:
          "pooling on the cut feature map: avg | max | none (flatten) | avg-l2 | max-l2 (pooled, then L2-normalised per layer); default: the model's (avg for a feature map, none for a vector)",
      },
      out: {
        type: 'string',
        metavar: 'DIR',
        description: 'cache folder (default <cache root>/cache/<dataset>-<model>-<layer>-<pool>-<hash>)',
      },
      'cache-root': cacheRootFlag,
      split: {
        type: 'string',
        metavar: 'F,F,F',
        description: 'train,val,test fractions when the data has no split folders',
        default: DEFAULT_SPLIT_SPEC,
      },
      seed: { type: 'number', metavar: 'N', description: 'seed for the split', default: 42 },
      batch: {
        type: 'number',
        metavar: 'N',
        description: 'images per inference batch (of each session)',
        default: DEFAULT_EXTRACT_BATCH,
      },
      ...decodeFlags,
      sessions: sessionsFlag,
      'decode-threads': {
        type: 'boolean',
        description:
          "decode JPEGs in --workers threads of their own beside the sessions, instead of in the sessions' threads (each decodes its batch, then runs it: the default, faster on 2 cores)",
      },
      'input-size': {
        type: 'number',
        metavar: 'N',
        description:
          "square input size (default: the model's feature size — 288 for the 224-px MobileNets, 1.3× their own: README 'Features for little data')",
      },
      mean: { type: 'list', metavar: 'R,G,B', description: 'override normalisation mean (on x/255)' },
      std: { type: 'list', metavar: 'R,G,B', description: 'override normalisation std (on x/255)' },
      resize: { type: 'string', metavar: 'MODE', description: 'override resize policy: squash | center-crop' },
      'crop-pct': {
        type: 'number',
        metavar: 'F',
        description: 'override the centre-crop fraction (short side resized to size / F)',
      },
      interpolation: {
        type: 'string',
        metavar: 'K',
        description: 'override resize interpolation: bilinear | bicubic | nearest | lanczos',
      },
      'channel-order': { type: 'string', metavar: 'ORDER', description: 'override channel order: rgb | bgr' },
      layout: {
        type: 'string',
        metavar: 'L',
        description: "input layout of a .onnx model: nchw | nhwc (default: from the model's config, else nchw)",
      },
      augment: {
        type: 'string',
        metavar: 'SPEC',
        description:
          'also store augmented views of the training images, e.g. flip,rotate=15,zoom=0.1,shift=0.1,brightness=0.2',
      },
      views: {
        type: 'number',
        metavar: 'K',
        description: 'augmented views per training image (with --augment)',
        default: 0,
      },
      precision: {
        type: 'string',
        metavar: 'P',
        description:
          'conv base precision: fp32 | int8 (int8: GPTQ-rounded weights, calibrated and bias-corrected on seeded training images, first four convs float; ~1.9x fp32 inference, a one-off ~12 s preparation; its own cache)',
        default: DEFAULT_PRECISION,
      },
      decoder: {
        type: 'string',
        metavar: 'D',
        description:
          'fast (JPEGs via libjpeg-turbo, the rest via sharp) | sharp (everything via sharp); each its own cache',
        default: 'fast',
      },
      shard: {
        type: 'string',
        metavar: 'K/N',
        description:
          'run only shard K (0..N-1) of N into a shared --out; then `convcache merge --out DIR` (README "Scaling out")',
      },
      shards: {
        type: 'number',
        metavar: 'N',
        description:
          'shard count when the index comes from JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID or AWS_BATCH_JOB_ARRAY_INDEX',
      },
      tta: {
        type: 'string',
        metavar: 'VIEWS',
        description:
          'store the mean feature of fixed views of every image (train, val, test): flip | crops | flip,crops (2, 5 or 10 views)',
      },
      quiet: { type: 'boolean', description: 'no progress output' },
    },
  },
  async ({ flags }) => {
    // Every finished batch is already on disk (atomic chunk files): say so, and stop at once.
    onInterrupt('extract: interrupted; finished batches are saved, re-run the same command to resume');
    const log = consoleLogger(flags.quiet);
    const size = optionalInt('input-size', flags['input-size'], 8, 4096);
    const cropPct = flags['crop-pct'];
    if (cropPct !== undefined && !(cropPct > 0 && cropPct <= 1))
      throw new UserError(`--crop-pct must be in (0, 1], got '${cropPct}'`);
    const mean = triple('mean', flags.mean);
    const std = triple('std', flags.std);
    const preprocessing: Partial<Preprocessing> = {
      ...(size !== undefined ? { size: [size, size] as [number, number] } : {}),
      ...(mean ? { mean } : {}),
      ...(std ? { std } : {}),
      ...(flags.resize !== undefined
        ? { resize: oneOf('resize', flags.resize, ['squash', 'center-crop'] as const) }
        : {}),
      ...(cropPct !== undefined ? { cropPct } : {}),
      ...(flags.interpolation !== undefined
        ? {
            kernel:
              KERNEL[
                oneOf('interpolation', flags.interpolation, ['bilinear', 'bicubic', 'nearest', 'lanczos'] as const)
              ],
          }
        : {}),
      ...(flags['channel-order'] !== undefined
        ? { channelOrder: oneOf('channel-order', flags['channel-order'], ['rgb', 'bgr'] as const) }
        : {}),
    };
    const shard = resolveShard({ shard: flags.shard, shards: optionalInt('shards', flags.shards, 1, 100000) });
    const options: ExtractOptions = {
      data: flags.data,
      out: flags.out,
      cacheRoot: flags['cache-root'],
      model: flags.model,
      layer: flags.layer,
      pooling: flags.pool === undefined ? undefined : oneOf('pool', flags.pool, POOLINGS),
      split: parseSplitFractions(flags.split),
      seed: seed(flags.seed),
      batch: batchSize(flags.batch),
      workers: workers(flags.workers),
      threads: threads(flags.threads),
      sessions: sessions(flags.sessions, threads(flags.threads)),
      ...(flags['decode-threads'] ? { decodeInSessions: false } : {}),
      maxPixels: maxPixels(flags['max-pixels']),
      precision: oneOf('precision', flags.precision, ['fp32', 'int8'] as const),
      decoder: oneOf('decoder', flags.decoder, ['fast', 'sharp'] as const),
      quiet: flags.quiet,
      preprocessing,
      onnxLayout: flags.layout === undefined ? undefined : oneOf('layout', flags.layout, ['nchw', 'nhwc'] as const),
      augment: augmentOption(flags.augment, flags.views),
      tta: flags.tta === undefined ? undefined : parseTtaSpec(flags.tta),
      log,
    };
    if (shard) {
      const r = await extractShard(options, shard);
      process.stdout.write(`${r.cacheDir}\n`);
      log.info(
        `shard ${r.shard.index}/${r.shard.count}: ${r.images} of ${r.totalImages} images; computed ${r.computed}, reused ${r.reused}; ${r.seconds.toFixed(2)} s${r.imagesPerSecond ? `, ${r.imagesPerSecond} img/s` : ''}; when every shard has finished: convcache merge --out ${r.cacheDir}`,
      );
      return;
    }
    const { cacheDir, manifest } = await extractFeatures(options);
    const t = manifest.timings;
    const counts = Object.entries(manifest.counts)
      .map(([s, c]) => `${s} ${c!.total}`)
      .join(', ');
    process.stdout.write(`${cacheDir}\n`);
    log.info(
      `cached ${counts} (D=${manifest.backbone.featureDim}); ${manifest.skipped.length} skipped; computed ${t.computed}, reused ${t.reused}; ${t.totalSeconds.toFixed(2)} s total${t.extractImagesPerSecond ? `, ${t.extractImagesPerSecond} img/s extraction` : ''}`,
    );
  },
);
