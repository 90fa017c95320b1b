import { UserError } from '../util/errors.ts';
import { readHeadFile, resolveParams, type HeadDef, type TuneGrid } from './common.ts';
import { denseHead } from './dense.ts';
import { knnHead } from './knn.ts';
import { logregHead } from './logreg.ts';
import { rfHead } from './rf.ts';
import { svmHead } from './svm.ts';
import type { Head, HeadParams } from './types.ts';

/** One line per head kind. A new head = one file exporting a HeadDef + one line here. */
const DEFS: Record<string, HeadDef> = {
  logreg: logregHead,
  svm: svmHead,
  rf: rfHead,
  knn: knnHead,
  dense: denseHead,
};

export const HEAD_KINDS: readonly string[] = Object.freeze(Object.keys(DEFS));

function def(kind: string): HeadDef {
  const d = DEFS[kind];
  if (!d) throw new UserError(`unknown head '${kind}' (valid: ${HEAD_KINDS.join(', ')})`);
  return d;
}

/** A named head configuration: a row of compare and of the heads benchmark. */
export interface HeadRowDef {
  kind: string;
  params: HeadParams;
  tieRank: number;
}

/** Every head's rows, in registry order (row names are unique across kinds). */
export const HEAD_ROWS: Readonly<Record<string, HeadRowDef>> = Object.freeze(
  Object.fromEntries(
    Object.values(DEFS).flatMap((d) =>
      Object.entries(d.rows).map(
        ([name, r]) => [name, { kind: d.kind, params: r.params, tieRank: r.tieRank }] as const,
      ),
    ),
  ),
);

/** The grid --tune searches for a kind. */
export function tuneGridOf(kind: string): TuneGrid {
  return def(kind).tuneGrid;
}

/** Small settings of a kind that still learn (tests, benchmark warm-ups). */
export function quickParams(kind: string): HeadParams {
  return def(kind).quickParams;
}

/** Whether a kind's Head.save writes a directory rather than one JSON file. */
export function savesDirectory(kind: string): boolean {
  return def(kind).savesDirectory;
}

/** Parameter specs of a head kind (for --help and docs). */
export function headParamSpecs(kind: string): HeadDef['paramSpecs'] {
  return def(kind).paramSpecs;
}

/** A new unfitted head; params are validated and defaults filled in. */
export function createHead(kind: string, params: HeadParams = {}): Head {
  const d = def(kind);
  return d.create(resolveParams(kind, d.paramSpecs, params));
}

/** Load a head saved by Head.save (a JSON file, or a directory containing head.json). */
export async function loadHead(path: string): Promise<Head> {
  const file = readHeadFile(path);
  return def(file.kind).load(file, path);
}

/** ['C=1', 'kernel=rbf', 'bootstrap=false'] → { C: 1, kernel: 'rbf', bootstrap: false }. */
export function parseOpts(items: readonly string[]): HeadParams {
  const out: HeadParams = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UserError(`head option '${item}' must look like name=value`);
    const name = item.slice(0, eq).trim();
    const raw = item.slice(eq + 1).trim();
    if (raw === '') throw new UserError(`head option '${name}' has no value`);
    if (raw === 'true' || raw === 'false') out[name] = raw === 'true';
    else if (Number.isFinite(Number(raw))) out[name] = Number(raw);
    else out[name] = raw;
  }
  return out;
}
