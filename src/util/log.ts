import { progressRenderer, type ProgressEvent } from './progress.ts';

/**
 * Library functions report through a Logger and never print on their own. Warnings go to stderr
 * as one line each (CLI), so they never mix with CSV/JSON on stdout.
 */
export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  /** Progress of long work (extraction, epochs); optional — omit it for no progress. */
  progress?(e: ProgressEvent): void;
}

/** The CLI's logger: info and progress on stderr (unless quiet), warnings always. */
export function consoleLogger(quiet = false): Logger {
  return {
    info: (msg) => {
      if (!quiet) process.stderr.write(msg + '\n');
    },
    warn: (msg) => {
      process.stderr.write(`warning: ${msg}\n`);
    },
    ...(quiet ? {} : { progress: progressRenderer(process.stderr) }),
  };
}

export const silentLogger: Logger = { info: () => {}, warn: () => {} };
