import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { RecordBatchReader, Table, tableToIPC, type RecordBatch, type Schema } from 'apache-arrow';

/**
 * Read an Arrow IPC file one record batch at a time, synchronously, with only the current batch in
 * memory. apache-arrow's file reader wants the whole file in one buffer; its stream reader pulls
 * chunks lazily. An IPC file is magic + (JS writer: no schema message) record batch messages + EOS +
 * footer, so we read the schema from the footer, put a schema message in front, and hand the stream
 * reader the file's message region in 1 MiB reads.
 */
export function arrowSchemaOf(path: string): Schema {
  const fd = openSync(path, 'r');
  try {
    return readFooterSchema(fd, fstatSync(fd).size).schema;
  } finally {
    closeSync(fd);
  }
}

function readFooterSchema(fd: number, size: number): { schema: Schema; footerStart: number } {
  if (size < 18) throw new Error('arrow: file too short');
  const tail = new Uint8Array(10);
  readSync(fd, tail, 0, 10, size - 10);
  if (new TextDecoder().decode(tail.subarray(4)) !== 'ARROW1')
    throw new Error('arrow: not an Arrow IPC file (bad trailing magic)');
  const flen = new DataView(tail.buffer).getInt32(0, true);
  const footerStart = size - 10 - flen;
  if (flen <= 0 || footerStart < 8) throw new Error('arrow: bad footer length');
  // magic + footer + length + magic: enough for the file reader to decode the schema.
  const mini = new Uint8Array(8 + flen + 10);
  readSync(fd, mini, 0, 8, 0);
  readSync(fd, mini, 8, flen + 10, footerStart);
  const schema = RecordBatchReader.from(mini).open().schema;
  return { schema, footerStart };
}

export function* readArrowBatches(path: string, chunkBytes = 1 << 20): Generator<RecordBatch> {
  const fd = openSync(path, 'r');
  try {
    const { schema, footerStart } = readFooterSchema(fd, fstatSync(fd).size);
    const stream = tableToIPC(new Table(schema), 'stream');
    const schemaMessage = stream.subarray(0, stream.length - 8); // drop the end-of-stream marker
    function* chunks(): Generator<Uint8Array> {
      yield schemaMessage;
      for (let pos = 8; pos < footerStart;) {
        const b = new Uint8Array(Math.min(chunkBytes, footerStart - pos));
        const n = readSync(fd, b, 0, b.length, pos);
        if (n <= 0) throw new Error('arrow: unexpected end of file');
        pos += n;
        yield n === b.length ? b : b.subarray(0, n);
      }
    }
    for (const batch of RecordBatchReader.from(chunks()).open()) {
      if (batch.numRows > 0) yield batch;
    }
  } finally {
    closeSync(fd);
  }
}

/** Where each record batch of an Arrow IPC file lies (from its footer), for reading them in any order. */
export interface ArrowBlockIndex {
  schema: Schema;
  blocks: { offset: number; length: number }[];
}

export function arrowBlockIndex(path: string): ArrowBlockIndex {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const { schema, footerStart } = readFooterSchema(fd, size);
    const mini = new Uint8Array(8 + (size - footerStart));
    readSync(fd, mini, 0, 8, 0);
    readSync(fd, mini, 8, size - footerStart, footerStart);
    const footer = RecordBatchReader.from(mini).open();
    const blocks: { offset: number; length: number }[] = [];
    const f = footer.isFile() ? footer.footer : null;
    if (!f) throw new Error('arrow: not an Arrow IPC file');
    for (const b of f.recordBatches())
      blocks.push({ offset: Number(b.offset), length: b.metaDataLength + Number(b.bodyLength) });
    return { schema, blocks };
  } finally {
    closeSync(fd);
  }
}

/**
 * Record batch `index` of an Arrow IPC file, read alone: a schema message, then that batch's
 * message and body (one read), through the stream reader. For shuffled passes over a file too large
 * to load (random block order, src/pipeline/train.ts cacheRowBatches).
 */
export function readArrowBlock(path: string, index: ArrowBlockIndex, block: number): RecordBatch {
  const b = index.blocks[block];
  if (!b) throw new Error(`arrow: no record batch ${block}`);
  const fd = openSync(path, 'r');
  try {
    const bytes = new Uint8Array(b.length);
    if (readSync(fd, bytes, 0, b.length, b.offset) !== b.length) throw new Error('arrow: unexpected end of file');
    const stream = tableToIPC(new Table(index.schema), 'stream');
    const schemaMessage = stream.subarray(0, stream.length - 8);
    for (const batch of RecordBatchReader.from([schemaMessage, bytes]).open()) return batch;
    throw new Error(`arrow: record batch ${block} is empty`);
  } finally {
    closeSync(fd);
  }
}
