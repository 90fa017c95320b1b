/**
 * Progress of long work. Library code counts (Progress) and reports events to the logger's
 * optional `progress` method; only a CLI logger draws them (a redrawn bar on a TTY, plain
 * periodic lines otherwise). A library caller passes its own logger, or gets silence.
 */
export interface ProgressEvent {
  label: string;
  done: number;
  total: number;
  unit: string;
  /** Seconds since the work started. */
  seconds: number;
  /** Extra text for the line, e.g. a running loss. */
  extra: string;
  /** Last event of this work: the line may be cleared. */
  finished: boolean;
}

/** Where progress goes: a Logger (structurally; util/log.ts imports this module, not the reverse). */
export interface ProgressSink {
  progress?(e: ProgressEvent): void;
  info(msg: string): void;
}

export interface ProgressOptions {
  label: string;
  total: number;
  unit?: string;
  quiet?: boolean;
  log?: ProgressSink;
}

export class Progress {
  private done = 0;
  private readonly start = performance.now();

  constructor(private readonly opts: ProgressOptions) {}

  tick(n = 1, extra = ''): void {
    this.done += n;
    this.emit(extra, false);
  }

  /** End of the work; `message` (a summary line) goes to the logger's info unless quiet. */
  finish(message?: string): void {
    this.emit('', true);
    if (message && !this.opts.quiet) this.opts.log?.info(message);
  }

  private emit(extra: string, finished: boolean): void {
    const sink = this.opts.log;
    if (this.opts.quiet || !sink?.progress) return;
    sink.progress({
      label: this.opts.label,
      done: this.done,
      total: this.opts.total,
      unit: this.opts.unit ?? 'img',
      seconds: (performance.now() - this.start) / 1000,
      extra,
      finished,
    });
  }
}

/** Draw progress events on a stream: a bar redrawn at most every 100 ms on a TTY, else a line every `plainInterval` s. */
export function progressRenderer(
  stream: NodeJS.WriteStream = process.stderr,
  plainInterval = 5,
): (e: ProgressEvent) => void {
  const tty = Boolean(stream.isTTY);
  let lastDraw = 0;
  let drawn = false;
  return (e) => {
    if (e.finished) {
      if (tty && drawn) stream.write('\r\x1b[K');
      drawn = false;
      lastDraw = 0;
      return;
    }
    const now = performance.now();
    if (now - lastDraw < (tty ? 100 : plainInterval * 1000) && e.done < e.total) return;
    lastDraw = now;
    drawn = true;
    const rate = e.seconds > 0 ? e.done / e.seconds : 0;
    const eta = rate > 0 ? (e.total - e.done) / rate : 0;
    const pct = e.total > 0 ? e.done / e.total : 1;
    const stats = `${e.done}/${e.total} ${rate.toFixed(1)} ${e.unit}/s ETA ${formatSeconds(eta)}${e.extra ? ' ' + e.extra : ''}`;
    if (tty) {
      const width = 30;
      const filled = Math.round(pct * width);
      stream.write(
        `\r${e.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(pct * 100).toFixed(0)}% ${stats}\x1b[K`,
      );
    } else {
      stream.write(`${e.label}: ${(pct * 100).toFixed(0)}% ${stats}\n`);
    }
  };
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${String(Math.round(s - m * 60)).padStart(2, '0')}s`;
}
