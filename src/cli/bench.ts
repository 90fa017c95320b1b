import { cpus } from 'node:os';
import { join } from 'node:path';
import { cacheRootFlag, defineCommand, sessionsFlag } from './command.ts';
import { batchSize, intInRange, sessions, threads, workers } from './validate.ts';
import { parseEngine } from '../finetune/engine.ts';
import { UserError } from '../util/errors.ts';
import { consoleLogger } from '../util/log.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { benchResultsDir } from '../util/paths.ts';
import { DEFAULT_MODEL } from '../backbone/registry.ts';
import { DEFAULT_EXTRACT_BATCH } from '../pipeline/schedule.ts';

export const command = defineCommand(
  {
    name: 'bench',
    summary:
      'measure speed and memory: extract (default), heads, features (which features help, by compare), finetune, finetune-step (ms per training step, ORT vs TF.js), startup (convcache --help and a no-op extract), scale (memory at 5k/100k images, shards, 200k-row compare); prints JSON and writes data/bench/<name>.json (in a checkout; else <cache root>/bench/)',
    usage: 'convcache bench [extract|heads|features|finetune|finetune-step|startup|scale] [options]',
    positionals: {
      name: 'WHICH',
      description: 'extract | heads | features | finetune | finetune-step | startup | scale (default extract)',
    },
    flags: {
      data: { type: 'string', metavar: 'DIR', description: "dataset (default: the mirror's cats-vs-dogs)" },
      model: { type: 'string', metavar: 'MODEL', description: 'backbone', default: DEFAULT_MODEL },
      cache: {
        type: 'string',
        metavar: 'DIR',
        description: 'feature cache for the heads bench (default: extract the default dataset)',
      },
      batch: {
        type: 'number',
        metavar: 'N',
        description: 'inference batch (of each session)',
        default: DEFAULT_EXTRACT_BATCH,
      },
      workers: {
        type: 'number',
        metavar: 'N',
        description: 'images decoded in parallel (threads)',
        default: cpus().length,
      },
      threads: { type: 'number', metavar: 'N', description: 'ONNX Runtime threads', default: cpus().length },
      sessions: sessionsFlag,
      images: {
        type: 'number',
        metavar: 'N',
        description: 'extract bench: use a stratified subset of N images (0 = all)',
        default: 0,
      },
      repeats: {
        type: 'number',
        metavar: 'N',
        description: 'extract bench: end-to-end runs per configuration (median reported)',
        default: 3,
      },
      'large-photos': {
        type: 'number',
        metavar: 'N',
        description: 'extract bench: 12 MP JPEGs generated for the large-photo case (0 = skip)',
        default: 24,
      },
      'schedule-images': {
        type: 'number',
        metavar: 'N',
        description: 'extract bench: also time other threads/workers schedules on N images (0 = skip)',
        default: 0,
      },
      'tfjs-images': {
        type: 'number',
        metavar: 'N',
        description: 'images for the TF.js-wasm comparison pass (0 = skip)',
        default: 32,
      },
      heads: { type: 'list', metavar: 'LIST', description: 'heads to bench (heads bench)' },
      caches: {
        type: 'list',
        metavar: 'DIRS',
        description: 'features bench: feature caches of the same images to compare (plain, --tta, --layer a,b …)',
      },
      'per-class': {
        type: 'number',
        metavar: 'N',
        description: 'features bench: training images per class in the small-data run',
        default: 100,
      },
      draws: {
        type: 'number',
        metavar: 'N',
        description: 'features bench: small-data subsets drawn (seeds 0..N-1)',
        default: 3,
      },
      engine: {
        type: 'string',
        metavar: 'NAME',
        description:
          'finetune bench: where the trainable top trains (ort | tfjs); results go to finetune.json / finetune-tfjs.json',
        default: 'ort',
      },
      runs: {
        type: 'number',
        metavar: 'N',
        description: 'startup bench: timed runs per command (median reported)',
        default: 7,
      },
      parts: {
        type: 'list',
        metavar: 'LIST',
        description: 'scale bench: extract,shards,approx,compare',
        default: 'extract,shards,approx,compare',
      },
      sizes: {
        type: 'list',
        metavar: 'N,N',
        description: 'scale bench: synthetic image folder sizes',
        default: '5000,100000',
      },
      rows: {
        type: 'number',
        metavar: 'N',
        description: 'scale bench: rows of the synthetic feature cache for compare',
        default: 200000,
      },
      dim: {
        type: 'number',
        metavar: 'D',
        description: 'scale bench: feature width of the synthetic cache',
        default: 768,
      },
      'cache-root': cacheRootFlag,
    },
  },
  async ({ flags, positionals }) => {
    const which = positionals[0] ?? 'extract';
    const log = consoleLogger();
    let result: unknown;
    let name = which;
    if (which === 'extract') {
      const { benchExtract } = await import('../bench/extract.ts');
      result = await benchExtract({
        data: flags.data,
        model: flags.model,
        batch: batchSize(flags.batch),
        schedule: {
          workers: workers(flags.workers),
          threads: threads(flags.threads),
          sessions: sessions(flags.sessions, threads(flags.threads)),
        },
        images: intInRange('images', flags.images, 0, 10_000_000),
        repeats: intInRange('repeats', flags.repeats, 1, 20),
        largePhotos: intInRange('large-photos', flags['large-photos'], 0, 1000),
        scheduleImages: intInRange('schedule-images', flags['schedule-images'], 0, 100_000),
        tfjsImages: intInRange('tfjs-images', flags['tfjs-images'], 0, 10000),
        log,
      });
    } else if (which === 'heads') {
      const { benchHeadsCli } = await import('../bench/heads.ts');
      result = await benchHeadsCli({ cache: flags.cache, heads: flags.heads, log });
    } else if (which === 'features') {
      const { benchFeatures } = await import('../bench/features.ts');
      result = await benchFeatures({
        caches: flags.caches ?? [],
        perClass: intInRange('per-class', flags['per-class'], 2, 1e6),
        draws: intInRange('draws', flags.draws, 1, 100),
        log,
      });
    } else if (which === 'finetune') {
      const { benchFinetune } = await import('../bench/finetune.ts');
      const engine = parseEngine(flags.engine);
      result = await benchFinetune({ data: flags.data, engine, log });
      if (engine !== 'ort') name = `finetune-${engine}`;
    } else if (which === 'finetune-step') {
      const { benchTrainStep } = await import('../bench/finetune.ts');
      result = {
        benchmark: 'finetune-step',
        date: new Date().toISOString(),
        rows: await benchTrainStep({ steps: 5, log }),
      };
    } else if (which === 'scale') {
      const { benchScale } = await import('../bench/scale.ts');
      result = await benchScale({
        parts: flags.parts,
        sizes: flags.sizes.map((v) => intInRange('sizes', Number(v), 100, 10_000_000)),
        rows: intInRange('rows', flags.rows, 1000, 10_000_000),
        dim: intInRange('dim', flags.dim, 2, 8192),
        heads: flags.heads ?? ['all'],
        log,
        resultsDir: benchResultsDir(flags['cache-root']),
      });
    } else if (which === 'startup') {
      const { benchStartup } = await import('../bench/startup.ts');
      result = await benchStartup({ data: flags.data, runs: intInRange('runs', flags.runs, 1, 100), log });
    } else {
      throw new UserError(
        `unknown benchmark '${which}' (extract, heads, features, finetune, finetune-step, startup, scale)`,
      );
    }
    const json = JSON.stringify(result, null, 2);
    writeFileAtomic(join(benchResultsDir(flags['cache-root']), `${name}.json`), json + '\n');
    process.stdout.write(json + '\n');
  },
);
