import '../util/threadpool.ts';
import '../util/ort-telemetry.ts';
import { readFileSync } from 'node:fs';
import { extractFeatures, type ExtractOptions } from '../pipeline/extract.ts';
import { silentLogger } from '../util/log.ts';

/**
 * One end-to-end extraction in its own process, for the bench: wall time of the whole job and the
 * process's peak RSS, as a user running `extract` would see them. argv[2] = JSON ExtractOptions.
 */
const opts = JSON.parse(process.argv[2]!) as Omit<ExtractOptions, 'log'>;
const t = performance.now();
const { manifest } = await extractFeatures({ ...opts, log: silentLogger });
const seconds = (performance.now() - t) / 1000;
process.stdout.write(
  JSON.stringify({ seconds, peakRssMiB: peakRssMiB(), timings: manifest.timings, skipped: manifest.skipped.length }) +
    '\n',
);

/**
 * This process's own high-water mark. Not getrusage's maxRSS: on Linux a child starts with its
 * parent's (the bench's) maxRSS at fork, which would hide ours below it.
 */
function peakRssMiB(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Math.round(Number(m[1]) / 1024);
  } catch {
    /* not Linux */
  }
  return Math.round(process.resourceUsage().maxRSS / 1024);
}
