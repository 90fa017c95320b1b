/** Progress reporting: a redrawn bar on a TTY, plain periodic lines otherwise, nothing when quiet. */
export interface ProgressOptions {
  label: string;
  total: number;
  unit?: string;
  quiet?: boolean;
  stream?: NodeJS.WriteStream;
  /** Seconds between plain-text lines when not on a TTY. */
  plainInterval?: number;
}

export class Progress {
  private done = 0;
  private readonly start = performance.now();
  private lastDraw = 0;
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;

  constructor(private readonly opts: ProgressOptions) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = Boolean(this.stream.isTTY);
  }

  tick(n = 1, extra = ''): void {
    this.done += n;
    if (this.opts.quiet) return;
    const now = performance.now();
    const interval = this.tty ? 100 : (this.opts.plainInterval ?? 5) * 1000;
    if (now - this.lastDraw < interval && this.done < this.opts.total) return;
    this.lastDraw = now;
    this.draw(extra);
  }

  private draw(extra: string): void {
    const { total, label } = this.opts;
    const unit = this.opts.unit ?? 'img';
    const secs = (performance.now() - this.start) / 1000;
    const rate = secs > 0 ? this.done / secs : 0;
    const eta = rate > 0 ? (total - this.done) / rate : 0;
    const pct = total > 0 ? this.done / total : 1;
    const stats = `${this.done}/${total} ${rate.toFixed(1)} ${unit}/s ETA ${formatSeconds(eta)}${extra ? ' ' + extra : ''}`;
    if (this.tty) {
      const width = 30;
      const filled = Math.round(pct * width);
      this.stream.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(pct * 100).toFixed(0)}% ${stats}\x1b[K`);
    } else {
      this.stream.write(`${label}: ${(pct * 100).toFixed(0)}% ${stats}\n`);
    }
  }

  finish(message?: string): void {
    if (this.opts.quiet) return;
    if (this.tty) this.stream.write('\r\x1b[K');
    if (message) this.stream.write(message + '\n');
  }
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${String(Math.round(s - m * 60)).padStart(2, '0')}s`;
}
