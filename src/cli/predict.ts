import { cpus } from 'node:os';
import { cacheRootFlag, defineCommand, sessionsFlag } from './command.ts';
import { DEFAULT_EXTRACT_BATCH } from '../pipeline/schedule.ts';
import { batchSize, maxPixels, sessions, threads } from './validate.ts';
import { UserError } from '../util/errors.ts';
import { consoleLogger } from '../util/log.ts';
import { DEFAULT_MAX_PIXELS } from '../images/limits.ts';
import { predictImages } from '../pipeline/predict.ts';

function csvField(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export const command = defineCommand(
  {
    name: 'predict',
    summary: 'classify images with a trained head, running the conv base exactly as its cache was extracted',
    usage: 'convcache predict [--head FILE] [--json] IMAGE|DIR ...',
    positionals: { name: 'IMAGE|DIR', description: 'image files or folders (searched recursively)' },
    flags: {
      head: {
        type: 'string',
        metavar: 'PATH',
        description: 'saved head, or a finetune output folder (default: the newest head of the newest cache)',
      },
      'cache-root': cacheRootFlag,
      json: { type: 'boolean', description: 'print JSON (with per-class probabilities) instead of CSV' },
      batch: {
        type: 'number',
        metavar: 'N',
        description: 'images per inference batch (of each session)',
        default: DEFAULT_EXTRACT_BATCH,
      },
      threads: { type: 'number', metavar: 'N', description: 'ONNX Runtime threads', default: cpus().length },
      sessions: sessionsFlag,
      'max-pixels': {
        type: 'number',
        metavar: 'N',
        description: 'skip images with more pixels',
        default: DEFAULT_MAX_PIXELS,
      },
    },
  },
  async ({ flags, positionals }) => {
    if (positionals.length === 0) throw new UserError('give at least one image or folder (see --help)');
    const log = consoleLogger();
    const { predictions, failures } = await predictImages({
      head: flags.head,
      cacheRoot: flags['cache-root'],
      inputs: positionals,
      batch: batchSize(flags.batch),
      workers: cpus().length,
      threads: threads(flags.threads),
      sessions: sessions(flags.sessions, threads(flags.threads)),
      maxPixels: maxPixels(flags['max-pixels']),
      log,
    });
    for (const f of failures) log.warn(`${f.path}: ${f.reason}`);
    if (flags.json) {
      process.stdout.write(JSON.stringify({ predictions, failures }, null, 2) + '\n');
    } else {
      const lines = [
        'path,label,probability',
        ...predictions.map((p) => `${csvField(p.path)},${csvField(p.label)},${p.probability.toFixed(6)}`),
      ];
      process.stdout.write(lines.join('\n') + '\n');
    }
    if (predictions.length === 0) process.exitCode = 1;
  },
);
