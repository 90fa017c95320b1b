import '../util/threadpool.ts'; // first: sizes libuv's pool (image decodes) before any I/O
import { cpus } from 'node:os';
import { runCommand } from '../util/cli.ts';
import { intInRange, type CommandSpec } from '../util/args.ts';
import { UserError } from '../util/errors.ts';
import { consoleLogger } from '../util/log.ts';
import { DEFAULT_MAX_PIXELS } from '../images/decode.ts';
import { predictImages } from '../pipeline/predict.ts';

const spec: CommandSpec = {
  name: 'predict',
  summary: 'classify images with a trained head, running the conv base exactly as its cache was extracted',
  usage: 'npm run predict -- [--head FILE] [--json] IMAGE|DIR ...',
  positionals: { name: 'IMAGE|DIR', description: 'image files or folders (searched recursively)' },
  flags: {
    head: { type: 'string', metavar: 'PATH', description: 'saved head, or a finetune output folder (default: the newest head of the newest cache)' },
    json: { type: 'boolean', description: 'print JSON (with per-class probabilities) instead of CSV' },
    batch: { type: 'number', metavar: 'N', description: 'images per inference batch', default: 32 },
    threads: { type: 'number', metavar: 'N', description: 'ONNX Runtime threads', default: cpus().length },
    'max-pixels': { type: 'number', metavar: 'N', description: 'skip images with more pixels', default: DEFAULT_MAX_PIXELS },
  },
};

function csvField(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

await runCommand(spec, async ({ flags, positionals }) => {
  if (positionals.length === 0) throw new UserError('give at least one image or folder (see --help)');
  const log = consoleLogger();
  const { predictions, failures } = await predictImages({
    head: flags.head as string | undefined, inputs: positionals,
    batch: intInRange('batch', flags.batch, 1, 1024), workers: cpus().length, threads: intInRange('threads', flags.threads, 1, 256),
    maxPixels: intInRange('max-pixels', flags['max-pixels'], 1, 2 ** 40), log,
  });
  for (const f of failures) log.warn(`${f.path}: ${f.reason}`);
  if (flags.json) {
    process.stdout.write(JSON.stringify({ predictions, failures }, null, 2) + '\n');
  } else {
    const lines = ['path,label,probability', ...predictions.map((p) => `${csvField(p.path)},${csvField(p.label)},${p.probability.toFixed(6)}`)];
    process.stdout.write(lines.join('\n') + '\n');
  }
  if (predictions.length === 0) process.exitCode = 1;
});
