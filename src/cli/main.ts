import '../util/threadpool.ts'; // first: sizes libuv's pool (image decodes) before any I/O
import { cpus } from 'node:os';
import { runCommand } from '../util/cli.ts';
import type { CommandSpec } from '../util/args.ts';
import { consoleLogger } from '../util/log.ts';
import { extractFeatures } from '../pipeline/extract.ts';
import { compareHeads } from '../pipeline/compare.ts';
import { stageRows } from '../pipeline/stage-rows.ts';
import { DEFAULT_MODEL } from '../backbone/registry.ts';
import { DEFAULT_MAX_PIXELS } from '../images/decode.ts';

const spec: CommandSpec = {
  name: 'start',
  summary: 'the main job end to end: extract features (cached, incremental), then compare every head and write the report',
  usage: 'npm start -- [--data DIR] [--model MODEL] [--cv K]',
  flags: {
    data: { type: 'string', metavar: 'DIR', description: 'dataset (default: data/images/, else the mirror\'s cats-vs-dogs)' },
    model: { type: 'string', metavar: 'MODEL', description: 'backbone', default: DEFAULT_MODEL },
    cv: { type: 'number', metavar: 'K', description: 'also k-fold cross-validate every head (0 = off)', default: 0 },
    quiet: { type: 'boolean', description: 'less output' },
  },
};

await runCommand(spec, async ({ flags }) => {
  const log = consoleLogger(Boolean(flags.quiet));
  log.info('step 1/2: extract features');
  const { cacheDir, manifest } = await extractFeatures({
    data: flags.data as string | undefined, model: String(flags.model), split: { train: 0.8, val: 0.1, test: 0.1 }, seed: 42,
    batch: 32, workers: cpus().length, threads: cpus().length, maxPixels: DEFAULT_MAX_PIXELS, quiet: Boolean(flags.quiet), log,
  });
  const t = manifest.timings;
  log.info(`cache: ${cacheDir} (computed ${t.computed}, reused ${t.reused}, ${manifest.skipped.length} skipped, ${t.totalSeconds.toFixed(1)} s)`);
  log.info('step 2/2: compare heads');
  const { report, files } = await compareHeads({ cache: cacheDir, cv: Number(flags.cv) || undefined, laterRows: stageRows, log });
  process.stdout.write(`${report.verdict}\nreport: ${files.md}\n        ${files.html}\n`);
});
