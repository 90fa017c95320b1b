import { formatHelp, parseArgs, type CommandSpec, type FlagSpecs, type ParsedArgs } from '../util/args.ts';
import { cpus } from 'node:os';
import { isUserError } from '../util/errors.ts';
import { DEFAULT_MAX_PIXELS } from '../images/limits.ts';
import { MAX_SESSIONS } from '../pipeline/schedule.ts';

/** A CLI command: its spec (for --help) and what it does with the arguments after its name. */
export interface Command {
  readonly spec: CommandSpec;
  run(argv: readonly string[]): Promise<void>;
}

/**
 * Bind a spec to its handler. Flags arrive typed from the spec (`const` keeps the literal flag
 * types), so handlers need no casts. --help prints the spec; UserErrors become one line on
 * stderr with exit code 2; anything else is a bug and keeps its stack trace.
 */
export function defineCommand<const F extends FlagSpecs>(
  spec: CommandSpec<F>,
  main: (args: ParsedArgs<F>) => Promise<void>,
): Command {
  return {
    spec,
    async run(argv) {
      try {
        const args = parseArgs(argv, spec);
        if (args.help) {
          process.stdout.write(formatHelp(spec) + '\n');
          return;
        }
        await main(args);
      } catch (e) {
        if (isUserError(e)) {
          process.stderr.write(`${spec.name}: error: ${e.message}\n`);
          process.exitCode = 2;
          return;
        }
        throw e;
      }
    },
  };
}

/** --cache-root, shared by the commands that read or write caches. */
export const cacheRootFlag = {
  type: 'string',
  metavar: 'DIR',
  description:
    'folder for feature caches, heads and fine-tuning runs (default: $CONVCACHE_HOME, else ./convcache-data)',
} as const;

/** --workers, --threads, --max-pixels: shared by the commands that decode images and run the conv base. */
export const decodeFlags = {
  workers: {
    type: 'number',
    metavar: 'N',
    description: 'images decoded in parallel (threads)',
    default: cpus().length,
  },
  threads: { type: 'number', metavar: 'N', description: 'ONNX Runtime threads', default: cpus().length },
  'max-pixels': {
    type: 'number',
    metavar: 'N',
    description: 'skip images with more pixels (decompression bombs)',
    default: DEFAULT_MAX_PIXELS,
  },
} as const;

/** --sessions: for the commands that stream images through the conv base (extract, predict). */
export const sessionsFlag = {
  type: 'number',
  metavar: 'N',
  description: `ONNX Runtime sessions running batches side by side, each on threads/N threads of its own (default: one per thread, at most ${MAX_SESSIONS})`,
} as const;

/** --tune, --tune-cv: shared by the commands that train heads (read by `tuneMode`). */
export const tuneFlags = {
  tune: {
    type: 'boolean',
    description: 'grid-search the main hyperparameters on the validation set first (never on test)',
  },
  'tune-cv': {
    type: 'number',
    metavar: 'K',
    description: 'tune by K-fold CV on train+val instead of on val (implies --tune)',
  },
} as const;

/** --max-memory, --max-rows: shared by the commands that load a feature cache to train on (read by `loadLimits`). */
export const loadLimitFlags = {
  'max-memory': {
    type: 'string',
    metavar: 'SIZE',
    description: 'refuse to load a cache larger than this (e.g. 8G; default CONVCACHE_MAX_MEMORY or half of RAM)',
  },
  'max-rows': {
    type: 'number',
    metavar: 'N',
    description: 'train on a seeded random subsample of at most N training rows (val/test untouched)',
  },
} as const;

/**
 * Ctrl-C: say what was kept and how to continue, then stop by the signal itself, not process.exit():
 * exit() tears down the worker threads, and one inside an ONNX Runtime run() then aborts the process
 * with a native 'Napi::Error' message (seen with --sessions 2). Re-raised with no listener left, SIGINT
 * ends the process as the shell expects (130).
 */
export function onInterrupt(note: string): void {
  process.once('SIGINT', () => {
    process.stderr.write(`\n${note}\n`);
    process.kill(process.pid, 'SIGINT');
  });
}
