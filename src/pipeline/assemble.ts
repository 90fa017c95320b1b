import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { BackboneConfig } from '../backbone/backbone.ts';
import { compareCodePoints, SPLIT_ORDER, type ImageEntry, type SplitName } from '../dataset/scan.ts';
import type { SplitFractions } from '../dataset/split.ts';
import { ARROW_BATCH_ROWS, featureBatch, featureSchema } from '../store/arrow.ts';
import { ARROW_FILE, CACHE_FORMAT_VERSION, MANIFEST_FILE, type Manifest, type SplitCounts } from '../store/manifest.ts';
import type { RecordStore } from '../store/records.ts';
import { ArrowFileStreamWriter, NpyStreamWriter } from '../store/stream.ts';
import { npyHeader } from '../store/npy.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { UserError } from '../util/errors.ts';
import { meanFeatures } from '../images/tta.ts';
import type { Logger } from '../util/log.ts';
import { toolVersion } from '../util/version.ts';

/**
 * What one image contributes: record keys for view 0 (the image) and each augmented view, and with
 * TTA the keys of the extra fixed views whose features are averaged into view 0.
 */
export interface ImagePlan {
  viewKeys: string[];
  ttaKeys?: string[];
}

export interface AssembleInput {
  cacheDir: string;
  images: readonly ImageEntry[];
  plans: readonly ImagePlan[];
  classes: readonly string[];
  scanSkipped: readonly { path: string; reason: string }[];
  store: RecordStore;
  backbone: BackboneConfig;
  dataRoot: string;
  presplit: boolean;
  split: SplitFractions;
  seed: number;
  augment: { spec: string; views: number; seed: number } | undefined;
  /** TTA: every image's feature is the mean of these fixed views (images/tta.ts). */
  tta?: { spec: string; views: string[] };
  log: Logger;
}

/** What determines the assembled files' bytes: everything assembleCache reads except the record values. */
export type AssemblyInputs = Omit<AssembleInput, 'cacheDir' | 'store' | 'log'>;

/**
 * sha256 over every input of the assembly. Record values are not read: a record key is the image's
 * content hash (plus the view) inside a cache folder whose backbone, decoder and precision are in
 * the digest too, so equal digests mean equal rows, hence byte-identical output files. The tool
 * version is included because the manifest records it.
 */
export function assemblyDigest(a: AssemblyInputs): string {
  const h = createHash('sha256');
  h.update(
    JSON.stringify({
      format: CACHE_FORMAT_VERSION,
      tool: toolVersion(),
      classes: a.classes,
      scanSkipped: a.scanSkipped,
      backbone: a.backbone,
      dataRoot: a.dataRoot,
      presplit: a.presplit,
      split: a.split,
      seed: a.seed,
      augment: a.augment ?? null,
      tta: a.tta ?? null,
    }),
  );
  // One line per image (streamed into the hash: no string the size of the dataset).
  for (let i = 0; i < a.images.length; i++) {
    const img = a.images[i]!;
    const plan = a.plans[i]!;
    h.update(`\n${JSON.stringify([img.path, img.split, img.className, plan.viewKeys, plan.ttaKeys ?? []])}`);
  }
  return h.digest('hex');
}

/**
 * Marker of the last complete assembly (in records/, beside the records it was made from): the
 * digest of its inputs. It is removed before any output file is replaced and written only after
 * the manifest, so its presence certifies that every output on disk came from that one assembly.
 */
const ASSEMBLED_MARKER = join('records', 'assembled.json');

/**
 * The manifest of an assembly from exactly these inputs when the folder holds a complete one (marker
 * digest equal, every listed output present at its size), else null: then there is nothing to write.
 */
export function currentAssembly(cacheDir: string, digest: string): Manifest | null {
  try {
    const marker = JSON.parse(readFileSync(join(cacheDir, ASSEMBLED_MARKER), 'utf8')) as { inputsSha256?: string };
    if (marker.inputsSha256 !== digest) return null;
    const manifest = JSON.parse(readFileSync(join(cacheDir, MANIFEST_FILE), 'utf8')) as Manifest;
    if (!existsSync(join(cacheDir, manifest.files.arrow))) return null;
    const D = manifest.backbone.featureDim;
    const npyFiles: [string, number[]][] = [];
    for (const f of Object.values(manifest.files.npy))
      if (f) npyFiles.push([f.features, [f.rows, D]], [f.labels, [f.rows]]);
    const aug = manifest.files.augmentedNpy;
    if (aug) npyFiles.push([aug.features, [aug.rows, D]], [aug.labels, [aug.rows]], [aug.views, [aug.rows]]);
    for (const [name, shape] of npyFiles) {
      // Both dtypes are 4 bytes wide; the header length depends only on the shape.
      const want = npyHeader('<f4', shape).length + shape.reduce((x, y) => x * y, 1) * 4;
      if (statSync(join(cacheDir, name), { throwIfNoEntry: false })?.size !== want) return null;
    }
    return manifest;
  } catch {
    return null; // no marker, no manifest or an unreadable one: assemble
  }
}

/** Call before replacing any output file (see ASSEMBLED_MARKER). */
export function clearAssembled(cacheDir: string): void {
  rmSync(join(cacheDir, ASSEMBLED_MARKER), { force: true });
}

/** Call after the manifest is written. */
export function markAssembled(cacheDir: string, digest: string): void {
  writeFileAtomic(join(cacheDir, ASSEMBLED_MARKER), JSON.stringify({ inputsSha256: digest }) + '\n');
}

/**
 * Write features.arrow, the .npy files and return the manifest (without timings), streaming: rows
 * are read from the record store one at a time in the cache's row order and leave in Arrow record
 * batches of ARROW_BATCH_ROWS and .npy row blocks, so memory is the same for 5 000 or 5 000 000
 * images. Every file is written under a temporary name and renamed only when all are complete.
 */
export function assembleCache(a: AssembleInput): Manifest {
  const { images, plans, store, classes } = a;
  const D = a.backbone.featureDim;
  // Rows: split, then path, then view (0 = the image, 1..K its augmented views).
  const order = Int32Array.from(images.keys()).sort((x, y) => {
    const sx = SPLIT_ORDER.indexOf(images[x]!.split!);
    const sy = SPLIT_ORDER.indexOf(images[y]!.split!);
    return sx - sy || compareCodePoints(images[x]!.path, images[y]!.path);
  });
  const classIndex = new Map(classes.map((c, i) => [c, i]));

  // Pass 1 (keys only): usable images, per-split counts, skipped list.
  const skipped = [...a.scanSkipped];
  const usable = new Uint8Array(images.length);
  const counts: Manifest['counts'] = {};
  let augRows = 0;
  let rows = 0;
  for (const i of order) {
    const plan = plans[i]!;
    if (!store.has(plan.viewKeys[0]!)) throw new Error(`internal: no record for ${images[i]!.path}`);
    const err = store.errorOf(plan.viewKeys[0]!);
    if (err !== undefined) {
      skipped.push({ path: images[i]!.path, reason: err });
      continue;
    }
    for (const key of [...plan.viewKeys.slice(1), ...(plan.ttaKeys ?? [])]) {
      if (store.errorOf(key) !== undefined || !store.has(key))
        throw new Error(`internal: no features for ${images[i]!.path} view ${key}`);
    }
    usable[i] = 1;
    const split = images[i]!.split!;
    const c = (counts[split] ??= {
      total: 0,
      perClass: Object.fromEntries(classes.map((k) => [k, 0])) as SplitCounts['perClass'],
    });
    c.total++;
    c.perClass[images[i]!.className]! += 1;
    augRows += plan.viewKeys.length - 1;
    rows += plan.viewKeys.length;
  }
  skipped.sort((x, y) => compareCodePoints(x.path, y.path));
  if (!counts.train) throw new UserError('no usable training images (all were skipped); see the warnings above');

  // Pass 2: stream rows into every output at once.
  const metadata = {
    'convcache.format_version': String(CACHE_FORMAT_VERSION),
    'convcache.classes': JSON.stringify(classes),
    'convcache.model': a.backbone.modelId,
    'convcache.weights_hash': a.backbone.weightsHash,
    'convcache.layer': a.backbone.layer,
    'convcache.pooling': a.backbone.pooling,
    'convcache.preprocessing': JSON.stringify(a.backbone.preprocessing),
    ...(a.augment ? { 'convcache.augment': JSON.stringify(a.augment) } : {}),
    ...(a.tta ? { 'convcache.tta': JSON.stringify(a.tta) } : {}),
  };
  const schema = featureSchema(D, metadata);
  type Out = { features: NpyStreamWriter; labels: NpyStreamWriter; views?: NpyStreamWriter };
  const writers: { commit(): unknown; abort(): void }[] = [];
  const open = <T extends { commit(): unknown; abort(): void }>(w: T): T => {
    writers.push(w);
    return w;
  };
  const npy: Manifest['files']['npy'] = {};
  const perSplit = new Map<SplitName, Out>();
  let aug: Out | undefined;
  try {
    const arrow = open(new ArrowFileStreamWriter(join(a.cacheDir, ARROW_FILE), schema));
    for (const split of SPLIT_ORDER) {
      const n = counts[split]?.total ?? 0;
      if (n === 0) continue;
      perSplit.set(split, {
        features: open(new NpyStreamWriter(join(a.cacheDir, `${split}_features.npy`), [n, D], '<f4')),
        labels: open(new NpyStreamWriter(join(a.cacheDir, `${split}_labels.npy`), [n], '<i4')),
      });
      npy[split] = { features: `${split}_features.npy`, labels: `${split}_labels.npy`, rows: n };
    }
    if (a.augment) {
      aug = {
        features: open(new NpyStreamWriter(join(a.cacheDir, 'train_aug_features.npy'), [augRows, D], '<f4')),
        labels: open(new NpyStreamWriter(join(a.cacheDir, 'train_aug_labels.npy'), [augRows], '<i4')),
        views: open(new NpyStreamWriter(join(a.cacheDir, 'train_aug_views.npy'), [augRows], '<i4')),
      };
    }

    const B = Math.min(ARROW_BATCH_ROWS, Math.max(1, rows));
    const features = new Float32Array(B * D);
    const labels = new Int32Array(B);
    const views = new Int32Array(B);
    let paths: string[] = [];
    let splits: string[] = [];
    const one = new Int32Array(1);
    const flush = (): void => {
      const len = paths.length;
      if (len === 0) return;
      arrow.write(
        featureBatch(schema, {
          paths,
          splits,
          labels: labels.subarray(0, len),
          views: views.subarray(0, len),
          features: features.subarray(0, len * D),
          dim: D,
        }),
      );
      paths = [];
      splits = [];
    };
    for (const i of order) {
      if (!usable[i]) continue;
      const img = images[i]!;
      const label = classIndex.get(img.className)!;
      const keys = plans[i]!.viewKeys;
      const ttaKeys = plans[i]!.ttaKeys ?? [];
      for (let v = 0; v < keys.length; v++) {
        const k = paths.length;
        const row = features.subarray(k * D, (k + 1) * D);
        store.readInto(keys[v]!, row);
        if (v === 0 && ttaKeys.length > 0) {
          // TTA: the image's feature is the mean over its fixed views, computed as predict computes it.
          const extra = ttaKeys.map((key) => {
            const f = new Float32Array(D);
            store.readInto(key, f);
            return f;
          });
          row.set(meanFeatures([row.slice(), ...extra]));
        }
        labels[k] = label;
        views[k] = v;
        paths.push(img.path);
        splits.push(img.split!);
        one[0] = label;
        const out = v === 0 ? perSplit.get(img.split!)! : aug!;
        out.features.appendRow(row);
        out.labels.appendRow(one);
        if (v > 0) {
          one[0] = v;
          out.views!.appendRow(one);
        }
        if (paths.length === B) flush();
      }
    }
    flush();
    store.close();
    // Commit the .npy files first and the Arrow file last; the manifest (written by the caller)
    // records the Arrow file's sha256, so a reader can tell a complete set.
    for (const w of writers.slice(1)) w.commit();
    const arrowSha256 = arrow.commit();
    for (const c of classes) if (!counts.train.perClass[c]) a.log.warn(`class '${c}' has no usable training images`);
    return {
      format: 'convcache-features',
      formatVersion: CACHE_FORMAT_VERSION,
      toolVersion: toolVersion(),
      dataRoot: a.dataRoot,
      split: a.presplit
        ? { mode: 'folders' }
        : { mode: 'stratified', fractions: [a.split.train, a.split.val, a.split.test], seed: a.seed },
      classes: [...classes],
      counts,
      augment: a.augment ? { ...a.augment, rows: augRows } : null,
      ...(a.tta ? { tta: a.tta } : {}),
      backbone: a.backbone,
      rowOrder:
        'split (train, val, test), then path in code-point order, then view (0 = the image, 1..K augmented views); <split>_*.npy hold the view-0 rows of each split in that order, train_aug_*.npy the augmented rows',
      files: {
        arrow: ARROW_FILE,
        npy,
        ...(a.augment
          ? {
              augmentedNpy: {
                features: 'train_aug_features.npy',
                labels: 'train_aug_labels.npy',
                views: 'train_aug_views.npy',
                rows: augRows,
              },
            }
          : {}),
        arrowSha256,
      },
      skipped,
      timings: {
        scanSeconds: 0,
        hashSeconds: 0,
        extractSeconds: 0,
        writeSeconds: 0,
        totalSeconds: 0,
        computed: 0,
        reused: 0,
        extractImagesPerSecond: null,
      },
    };
  } catch (e) {
    for (const w of writers) {
      try {
        w.abort();
      } catch {
        /* already committed or closed */
      }
    }
    throw e;
  }
}
