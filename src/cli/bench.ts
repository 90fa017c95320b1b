import { cpus } from 'node:os';
import { join } from 'node:path';
import { cacheRootFlag, defineCommand } from './command.ts';
import { batchSize, intInRange, threads, workers } from './validate.ts';
import { parseEngine } from '../finetune/engine.ts';
import { UserError } from '../util/errors.ts';
import { consoleLogger } from '../util/log.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { benchResultsDir } from '../util/paths.ts';
import { DEFAULT_MODEL } from '../backbone/registry.ts';

export const command = defineCommand({
  name: 'bench',
  summary: 'measure speed and memory: extract (default), heads, features (which features help, by compare), finetune, finetune-step (ms per training step, ORT vs TF.js), startup (convcache --help and a no-op extract); prints JSON and writes data/bench/<name>.json (in a checkout; else <cache root>/bench/)',
  usage: 'convcache bench [extract|heads|features|finetune|finetune-step|startup] [options]',
  positionals: { name: 'WHICH', description: 'extract | heads | features | finetune | finetune-step | startup (default extract)' },
  flags: {
    data: { type: 'string', metavar: 'DIR', description: 'dataset (default: the mirror\'s cats-vs-dogs)' },
    model: { type: 'string', metavar: 'MODEL', description: 'backbone', default: DEFAULT_MODEL },
    cache: { type: 'string', metavar: 'DIR', description: 'feature cache for the heads bench (default: extract the default dataset)' },
    batch: { type: 'number', metavar: 'N', description: 'inference batch', default: 32 },
    workers: { type: 'number', metavar: 'N', description: 'images decoded in parallel (threads)', default: cpus().length },
    threads: { type: 'number', metavar: 'N', description: 'ONNX Runtime threads', default: cpus().length },
    'tfjs-images': { type: 'number', metavar: 'N', description: 'images for the TF.js-wasm comparison pass', default: 32 },
    heads: { type: 'list', metavar: 'LIST', description: 'heads to bench (heads bench)' },
    caches: { type: 'list', metavar: 'DIRS', description: 'features bench: feature caches of the same images to compare (plain, --tta, --layer a,b …)' },
    'per-class': { type: 'number', metavar: 'N', description: 'features bench: training images per class in the small-data run', default: 100 },
    draws: { type: 'number', metavar: 'N', description: 'features bench: small-data subsets drawn (seeds 0..N-1)', default: 3 },
    engine: { type: 'string', metavar: 'NAME', description: 'finetune bench: where the trainable top trains (ort | tfjs); results go to finetune.json / finetune-tfjs.json', default: 'ort' },
    runs: { type: 'number', metavar: 'N', description: 'startup bench: timed runs per command (median reported)', default: 7 },
    'cache-root': cacheRootFlag,
  },
}, async ({ flags, positionals }) => {
  const which = positionals[0] ?? 'extract';
  const log = consoleLogger();
  let result: unknown;
  let name = which;
  if (which === 'extract') {
    const { benchExtract } = await import('../bench/extract.ts');
    result = await benchExtract({
      data: flags.data, model: flags.model,
      batch: batchSize(flags.batch), workers: workers(flags.workers),
      threads: threads(flags.threads), tfjsImages: intInRange('tfjs-images', flags['tfjs-images'], 1, 10000), log,
    });
  } else if (which === 'heads') {
    const { benchHeadsCli } = await import('../bench/heads.ts');
    result = await benchHeadsCli({ cache: flags.cache, heads: flags.heads, log });
  } else if (which === 'features') {
    const { benchFeatures } = await import('../bench/features.ts');
    result = await benchFeatures({ caches: flags.caches ?? [], perClass: intInRange('per-class', flags['per-class'], 2, 1e6), draws: intInRange('draws', flags.draws, 1, 100), log });
  } else if (which === 'finetune') {
    const { benchFinetune } = await import('../bench/finetune.ts');
    const engine = parseEngine(flags.engine);
    result = await benchFinetune({ data: flags.data, engine, log });
    if (engine !== 'ort') name = `finetune-${engine}`;
  } else if (which === 'finetune-step') {
    const { benchTrainStep } = await import('../bench/finetune.ts');
    result = { benchmark: 'finetune-step', date: new Date().toISOString(), rows: await benchTrainStep({ steps: 5, log }) };
  } else if (which === 'startup') {
    const { benchStartup } = await import('../bench/startup.ts');
    result = await benchStartup({ data: flags.data, runs: intInRange('runs', flags.runs, 1, 100), log });
  } else {
    throw new UserError(`unknown benchmark '${which}' (extract, heads, features, finetune, finetune-step, startup)`);
  }
  const json = JSON.stringify(result, null, 2);
  writeFileAtomic(join(benchResultsDir(flags['cache-root']), `${name}.json`), json + '\n');
  process.stdout.write(json + '\n');
});
