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
  summary: 'measure speed and memory: extract (default), heads, finetune, finetune-step (ms per training step, ORT vs TF.js), startup (convcache --help and a no-op extract), scale (memory at 5k/100k images, shards, 200k-row compare); prints JSON and writes data/bench/<name>.json (in a checkout; else <cache root>/bench/)',
  usage: 'convcache bench [extract|heads|finetune|finetune-step|startup|scale] [options]',
  positionals: { name: 'WHICH', description: 'extract | heads | finetune | finetune-step | startup | scale (default extract)' },
  flags: {
    data: { type: 'string', metavar: 'DIR', description: 'dataset (default: the mirror\'s cats-vs-dogs)' },
    model: { type: 'string', metavar: 'MODEL', description: 'backbone', default: DEFAULT_MODEL },
    cache: { type: 'string', metavar: 'DIR', description: 'feature cache for the heads bench (default: extract the default dataset)' },
    batch: { type: 'number', metavar: 'N', description: 'inference batch', default: 32 },
    workers: { type: 'number', metavar: 'N', description: 'images decoded in parallel (threads)', default: cpus().length },
    threads: { type: 'number', metavar: 'N', description: 'ONNX Runtime threads', default: cpus().length },
    'tfjs-images': { type: 'number', metavar: 'N', description: 'images for the TF.js-wasm comparison pass', default: 32 },
    heads: { type: 'list', metavar: 'LIST', description: 'heads to bench (heads bench)' },
    engine: { type: 'string', metavar: 'NAME', description: 'finetune bench: where the trainable top trains (ort | tfjs); results go to finetune.json / finetune-tfjs.json', default: 'ort' },
    runs: { type: 'number', metavar: 'N', description: 'startup bench: timed runs per command (median reported)', default: 7 },
    parts: { type: 'list', metavar: 'LIST', description: 'scale bench: extract,shards,approx,compare', default: 'extract,shards,approx,compare' },
    sizes: { type: 'list', metavar: 'N,N', description: 'scale bench: synthetic image folder sizes', default: '5000,100000' },
    rows: { type: 'number', metavar: 'N', description: 'scale bench: rows of the synthetic feature cache for compare', default: 200000 },
    dim: { type: 'number', metavar: 'D', description: 'scale bench: feature width of the synthetic cache', default: 768 },
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
  } else if (which === 'finetune') {
    const { benchFinetune } = await import('../bench/finetune.ts');
    const engine = parseEngine(flags.engine);
    result = await benchFinetune({ data: flags.data, engine, log });
    if (engine !== 'ort') name = `finetune-${engine}`;
  } else if (which === 'finetune-step') {
    const { benchTrainStep } = await import('../bench/finetune.ts');
    result = { benchmark: 'finetune-step', date: new Date().toISOString(), rows: await benchTrainStep({ steps: 5, log }) };
  } else if (which === 'scale') {
    const { benchScale } = await import('../bench/scale.ts');
    result = await benchScale({
      parts: flags.parts, sizes: flags.sizes.map((v) => intInRange('sizes', Number(v), 100, 10_000_000)),
      rows: intInRange('rows', flags.rows, 1000, 10_000_000), dim: intInRange('dim', flags.dim, 2, 8192), heads: flags.heads ?? ['all'], log,
      resultsDir: benchResultsDir(flags['cache-root']),
    });
  } else if (which === 'startup') {
    const { benchStartup } = await import('../bench/startup.ts');
    result = await benchStartup({ data: flags.data, runs: intInRange('runs', flags.runs, 1, 100), log });
  } else {
    throw new UserError(`unknown benchmark '${which}' (extract, heads, finetune, finetune-step, startup, scale)`);
  }
  const json = JSON.stringify(result, null, 2);
  writeFileAtomic(join(benchResultsDir(flags['cache-root']), `${name}.json`), json + '\n');
  process.stdout.write(json + '\n');
});
