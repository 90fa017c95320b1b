import '../util/threadpool.ts'; // first: sizes libuv's pool (image decodes) before any I/O
import { cpus } from 'node:os';
import { join } from 'node:path';
import { runCommand } from '../util/cli.ts';
import { intInRange, type CommandSpec } from '../util/args.ts';
import { parseEngine } from '../finetune/engine.ts';
import { UserError } from '../util/errors.ts';
import { consoleLogger } from '../util/log.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { defaultDataDir } from '../util/paths.ts';
import { DEFAULT_MODEL } from '../backbone/registry.ts';

const spec: CommandSpec = {
  name: 'bench',
  summary: 'measure speed and memory: extract (default), heads, finetune, finetune-step (ms per training step, ORT vs TF.js); prints JSON and writes data/bench/<name>.json',
  usage: 'npm run bench -- [extract|heads|finetune|finetune-step] [options]',
  positionals: { name: 'WHICH', description: 'extract | heads | finetune | finetune-step (default extract)' },
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
  },
};

await runCommand(spec, async ({ flags, positionals }) => {
  const which = positionals[0] ?? 'extract';
  const log = consoleLogger();
  let result: unknown;
  let name = which;
  if (which === 'extract') {
    const { benchExtract } = await import('../bench/extract.ts');
    result = await benchExtract({
      data: flags.data as string | undefined, model: String(flags.model),
      batch: intInRange('batch', flags.batch, 1, 1024), workers: intInRange('workers', flags.workers, 1, 64),
      threads: intInRange('threads', flags.threads, 1, 256), tfjsImages: intInRange('tfjs-images', flags['tfjs-images'], 1, 10000), log,
    });
  } else if (which === 'heads') {
    const { benchHeadsCli } = await import('../bench/heads.ts');
    result = await benchHeadsCli({ cache: flags.cache as string | undefined, heads: flags.heads as string[] | undefined, log });
  } else if (which === 'finetune') {
    const { benchFinetune } = await import('../bench/finetune.ts');
    const engine = parseEngine(flags.engine);
    result = await benchFinetune({ data: flags.data as string | undefined, engine, log });
    if (engine !== 'ort') name = `finetune-${engine}`;
  } else if (which === 'finetune-step') {
    const { benchTrainStep } = await import('../bench/finetune.ts');
    result = { benchmark: 'finetune-step', date: new Date().toISOString(), rows: await benchTrainStep({ steps: 5, log }) };
  } else {
    throw new UserError(`unknown benchmark '${which}' (extract, heads, finetune, finetune-step)`);
  }
  const json = JSON.stringify(result, null, 2);
  writeFileAtomic(join(defaultDataDir(), 'bench', `${name}.json`), json + '\n');
  process.stdout.write(json + '\n');
});
