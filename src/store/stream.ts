import { createHash, type Hash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { AsyncByteQueue, RecordBatch, RecordBatchFileWriter, type Schema } from 'apache-arrow';
import { npyHeader } from './npy.ts';

/**
 * A file written piece by piece under a temporary name and renamed into place by commit(): readers
 * see the old file or the complete new one, never a torn one, however large it is.
 */
export class AtomicFileWriter {
  private fd: number;
  private readonly tmp: string;
  private readonly hash: Hash | null;
  bytes = 0;

  constructor(
    readonly path: string,
    opts: { sha256?: boolean } = {},
  ) {
    mkdirSync(dirname(path), { recursive: true });
    this.tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
    this.fd = openSync(this.tmp, 'w');
    this.hash = opts.sha256 ? createHash('sha256') : null;
  }

  write(chunk: Uint8Array): void {
    let off = 0;
    while (off < chunk.byteLength) off += writeSync(this.fd, chunk, off, chunk.byteLength - off);
    this.hash?.update(chunk);
    this.bytes += chunk.byteLength;
  }

  /** fsync, close and rename into place; returns the sha256 (hex) when asked for at construction. */
  commit(): string | undefined {
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = -1;
    renameSync(this.tmp, this.path);
    return this.hash?.digest('hex');
  }

  /** Drop the temporary file (after an error): the previous file, if any, stays as it was. */
  abort(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    rmSync(this.tmp, { force: true });
  }
}

/**
 * apache-arrow's writers buffer their output in an AsyncByteQueue until the caller drains it. This
 * queue instead hands each chunk straight to the file, so RecordBatchFileWriter writes record batch
 * after record batch with nothing but the current batch in memory (the footer keeps only offsets).
 */
class FileSinkQueue extends AsyncByteQueue {
  constructor(private readonly file: AtomicFileWriter) {
    super();
  }
  override write(value: Uint8Array | ArrayBufferView | ArrayBuffer): void {
    const bytes =
      value instanceof Uint8Array
        ? value
        : ArrayBuffer.isView(value)
          ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
          : new Uint8Array(value);
    if (bytes.byteLength > 0) this.file.write(bytes);
  }
}

/**
 * Arrow IPC *file* written one record batch at a time. The bytes equal tableToIPC(table, 'file')
 * of a table made of the same batches: same writer, same framing, only the destination differs.
 */
export class ArrowFileStreamWriter {
  private readonly file: AtomicFileWriter;
  private readonly writer: RecordBatchFileWriter;
  private wrote = false;

  constructor(
    path: string,
    private readonly schema: Schema,
  ) {
    this.file = new AtomicFileWriter(path, { sha256: true });
    this.writer = new RecordBatchFileWriter({ autoDestroy: true });
    this.writer.reset(new FileSinkQueue(this.file), schema);
  }

  write(batch: RecordBatch): void {
    this.writer.write(batch);
    this.wrote = true;
  }

  /** Footer, fsync, rename; returns the file's sha256. */
  commit(): string {
    // A file with no batches still needs its schema message (tableToIPC of an empty table writes one).
    if (!this.wrote) this.writer.write(new RecordBatch(this.schema));
    this.writer.finish();
    return this.file.commit()!;
  }

  abort(): void {
    this.file.abort();
  }
}

/**
 * A .npy file whose shape is known up front: header first, then rows appended in order (gathered in
 * a fixed-size block so row-sized appends do not each cost a write). commit() checks that exactly
 * the promised number of rows arrived.
 */
export class NpyStreamWriter {
  private readonly file: AtomicFileWriter;
  private readonly width: number;
  private readonly block: Float32Array | Int32Array;
  private filled = 0;
  private rows = 0;

  constructor(
    path: string,
    private readonly shape: readonly number[],
    dtype: '<f4' | '<i4',
    blockRows = 1024,
  ) {
    this.file = new AtomicFileWriter(path);
    this.width = shape.slice(1).reduce((a, b) => a * b, 1);
    this.block = dtype === '<f4' ? new Float32Array(blockRows * this.width) : new Int32Array(blockRows * this.width);
    this.file.write(npyHeader(dtype, shape));
  }

  /** One row (`width` values). */
  appendRow(row: ArrayLike<number>): void {
    if (this.filled + this.width > this.block.length) this.flush();
    this.block.set(row, this.filled);
    this.filled += this.width;
    this.rows++;
  }

  private flush(): void {
    if (this.filled === 0) return;
    this.file.write(new Uint8Array(this.block.buffer, 0, this.filled * 4));
    this.filled = 0;
  }

  commit(): void {
    if (this.rows !== this.shape[0]) {
      this.file.abort();
      throw new Error(`internal: npy ${this.file.path} promised ${this.shape[0]} rows, got ${this.rows}`);
    }
    this.flush();
    this.file.commit();
  }

  abort(): void {
    this.file.abort();
  }
}
