/** Warnings go to stderr as one line each, so they never mix with CSV/JSON on stdout. */
export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
}

export function consoleLogger(quiet = false): Logger {
  return {
    info: (msg) => { if (!quiet) process.stderr.write(msg + '\n'); },
    warn: (msg) => { process.stderr.write(`warning: ${msg}\n`); },
  };
}

export const silentLogger: Logger = { info: () => {}, warn: () => {} };
