import { cacheRootFlag, defineCommand } from './command.ts';
import { intInRange } from './validate.ts';
import { consoleLogger } from '../util/log.ts';
import { extractFeatures } from '../pipeline/extract.ts';
import { compareHeads, DEFAULT_SELECTION_CV } from '../pipeline/compare.ts';
import { stageRows } from '../pipeline/stage-rows.ts';
import { DEFAULT_MODEL } from '../backbone/registry.ts';
import { cacheRoot } from '../util/paths.ts';

export const command = defineCommand(
  {
    name: 'start',
    summary:
      'the main job end to end: extract features (cached, incremental), then compare every head and write the report',
    usage: 'convcache start [--data DIR] [--model MODEL] [--cv K]   (in the repo: npm start -- …)',
    flags: {
      data: {
        type: 'string',
        metavar: 'DIR',
        description: "dataset (default: <cache root>/images/, else the mirror's cats-vs-dogs)",
      },
      model: { type: 'string', metavar: 'MODEL', description: 'backbone', default: DEFAULT_MODEL },
      cv: {
        type: 'number',
        metavar: 'K',
        description:
          'k-fold cross-validate every head on train+val; CV chooses the head (0 = choose on the validation split alone)',
        default: DEFAULT_SELECTION_CV,
      },
      'cache-root': cacheRootFlag,
      quiet: { type: 'boolean', description: 'less output' },
    },
  },
  async ({ flags }) => {
    const log = consoleLogger(flags.quiet);
    const root = cacheRoot(flags['cache-root']);
    const cv = flags.cv === 0 ? undefined : intInRange('cv', flags.cv, 2, 50);
    log.info('step 1/2: extract features');
    const { cacheDir, manifest } = await extractFeatures({
      data: flags.data,
      model: flags.model,
      cacheRoot: root,
      quiet: flags.quiet,
      log, // every other option at extract's defaults
    });
    const t = manifest.timings;
    log.info(
      `cache: ${cacheDir} (computed ${t.computed}, reused ${t.reused}, ${manifest.skipped.length} skipped, ${t.totalSeconds.toFixed(1)} s)`,
    );
    log.info('step 2/2: compare heads');
    const { report, files } = await compareHeads({
      cache: cacheDir,
      cv,
      laterRows: (ctx) => stageRows(ctx, root),
      log,
    });
    process.stdout.write(`${report.verdict}\nreport: ${files.md}\n        ${files.html}\n`);
  },
);
