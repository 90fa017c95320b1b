import { defineCommand } from './command.ts';
import { UserError } from '../util/errors.ts';
import { consoleLogger } from '../util/log.ts';
import { mergeShards } from '../pipeline/merge.ts';

export const command = defineCommand(
  {
    name: 'merge',
    summary:
      "after a sharded extract (--shard K/N on one --out), write features.arrow, the .npy files and manifest.json from every shard's records",
    usage: 'convcache merge --out DIR',
    flags: {
      out: { type: 'string', metavar: 'DIR', description: 'the --out folder the shards wrote to' },
      quiet: { type: 'boolean', description: 'no progress output' },
    },
  },
  async ({ flags }) => {
    if (flags.out === undefined) throw new UserError('--out DIR is required (the folder the shards wrote to)');
    const log = consoleLogger(flags.quiet);
    const { cacheDir, manifest } = await mergeShards({ out: flags.out, log, quiet: flags.quiet });
    const counts = Object.entries(manifest.counts)
      .map(([s, c]) => `${s} ${c!.total}`)
      .join(', ');
    process.stdout.write(`${cacheDir}\n`);
    log.info(
      `merged ${counts} (D=${manifest.backbone.featureDim}); ${manifest.skipped.length} skipped; ${manifest.timings.totalSeconds.toFixed(2)} s`,
    );
  },
);
