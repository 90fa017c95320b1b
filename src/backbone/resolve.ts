import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import type { Logger } from '../util/log.ts';
import { findBackbone, type BackboneEntry } from './registry.ts';
import { mirrorDirs, modelCacheDir } from '../util/paths.ts';
import { findOnnxModel, ONNX_ZOO, type OnnxZooEntry } from './onnx-zoo.ts';
import { downloadFile } from './download.ts';

export interface ResolvedModel {
  /** Short id used in cache names: the known name or the folder name. */
  id: string;
  format: 'tfjs-layers' | 'onnx';
  /** Directory holding model.json (tfjs-layers) or the .onnx file path. */
  location: string;
  /** sha256 of the model definition and weights (first 16 hex chars). */
  weightsHash: string;
  /** Registry entry when the model is a known one (gives preprocessing and default layer). */
  entry?: BackboneEntry;
  /** Entry of the ONNX registry (onnx-zoo.ts) for known ONNX names. */
  onnxEntry?: OnnxZooEntry;
  /** Where the model came from, for the manifest. */
  source: string;
}

export interface ResolveOptions {
  /** Local model cache (downloads land here). */
  cacheDir?: string;
  mirrors?: string[];
  log: Logger;
  /** Injected for tests; defaults to global fetch. */
  fetchImpl?: typeof fetch;
  /** Known ONNX models; defaults to ONNX_ZOO (tests inject their own). */
  onnxZoo?: readonly OnnxZooEntry[];
}

/** Hash model.json plus every shard it lists, in manifest order. */
export function hashTfjsModel(dir: string): string {
  const h = createHash('sha256');
  const jsonBytes = readFileSync(join(dir, 'model.json'));
  h.update(jsonBytes);
  const json = JSON.parse(jsonBytes.toString('utf8'));
  for (const group of json.weightsManifest ?? []) for (const p of group.paths) h.update(readFileSync(join(dir, p)));
  return h.digest('hex').slice(0, 16);
}

function hashFile(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 16);
}

function localModel(path: string, id: string, source: string, entry?: BackboneEntry): ResolvedModel {
  if (path.toLowerCase().endsWith('.onnx')) {
    return { id, format: 'onnx', location: path, weightsHash: hashFile(path), entry, source };
  }
  const dir = statSync(path).isDirectory() ? path : dirname(path);
  if (!existsSync(join(dir, 'model.json')))
    throw new UserError(`'${path}' has no model.json (expected a TF.js layers model folder or a .onnx file)`);
  return { id, format: 'tfjs-layers', location: dir, weightsHash: hashTfjsModel(dir), entry, source };
}

/**
 * Resolve --model: a directory, a model.json or .onnx path, a URL (downloaded once into the cache),
 * or a known name (cache, then offline mirrors, then the canonical URL).
 */
export async function resolveModel(spec: string, opts: ResolveOptions): Promise<ResolvedModel> {
  const cacheDir = opts.cacheDir ?? modelCacheDir();
  const mirrors = opts.mirrors ?? mirrorDirs();
  if (/^https?:\/\//.test(spec) && /\.onnx$/i.test(new URL(spec).pathname)) {
    const id = sanitize(basename(new URL(spec).pathname).replace(/\.onnx$/i, ''));
    const dest = join(cacheDir, id, 'model.onnx');
    if (!existsSync(dest)) await downloadFile({ url: spec, dest, log: opts.log, label: id, fetchImpl: opts.fetchImpl });
    return localModel(dest, id, spec);
  }
  const onnxEntry = opts.onnxZoo ? opts.onnxZoo.find((e) => e.name === spec) : findOnnxModel(spec);
  if (onnxEntry) return resolveOnnxEntry(onnxEntry, cacheDir, mirrors, opts);
  if (/^https?:\/\//.test(spec)) {
    const id = sanitize(basename(dirname(new URL(spec).pathname)) || 'model');
    const dir = join(cacheDir, id);
    if (!existsSync(join(dir, 'model.json'))) await downloadTfjsModel(spec, dir, opts);
    return localModel(dir, id, spec);
  }
  const entry = findBackbone(spec);
  if (!entry) {
    const p = resolve(spec);
    if (existsSync(p)) return localModel(p, localId(p), p);
    throw new UserError(
      `--model '${spec}' is neither a known model name, an existing path, nor a URL (known: mobilenet_v1_<1.0|0.75|0.50|0.25>_<224|192|160|128>, ${ONNX_ZOO.map((e) => e.name).join(', ')})`,
    );
  }
  const looked: string[] = [];
  for (const base of [cacheDir, ...mirrors.map((m) => join(m, 'models'))]) {
    const dir = join(base, entry.name);
    looked.push(dir);
    if (existsSync(join(dir, 'model.json'))) return localModel(dir, entry.name, dir, entry);
  }
  const dir = join(cacheDir, entry.name);
  try {
    await downloadTfjsModel(entry.url, dir, opts);
  } catch (e) {
    throw new UserError(
      `model '${spec}' not found locally (looked in ${looked.join(', ')}) and the download from ${entry.url} failed: ${e instanceof Error ? e.message : String(e)}. Set CONVCACHE_MIRROR to a folder with models/${entry.name}/`,
    );
  }
  return localModel(dir, entry.name, entry.url, entry);
}

/**
 * A known ONNX name: the cache or a mirror (<dir>/<name>/model.onnx), else a verified download into the
 * cache. A cached file whose hash is not the registry's is refused rather than silently used.
 */
async function resolveOnnxEntry(
  entry: OnnxZooEntry,
  cacheDir: string,
  mirrors: string[],
  opts: ResolveOptions,
): Promise<ResolvedModel> {
  const check = (m: ResolvedModel): ResolvedModel => {
    if (entry.sha256 && !entry.sha256.startsWith(m.weightsHash)) {
      throw new UserError(
        `${m.location} is not the published ${entry.name} (sha256 starts ${m.weightsHash}, expected ${entry.sha256.slice(0, 16)}); delete it to download again`,
      );
    }
    return m;
  };
  for (const base of [cacheDir, ...mirrors.map((m) => join(m, 'models'))]) {
    const file = join(base, entry.name, 'model.onnx');
    if (existsSync(file)) return check({ ...localModel(file, entry.name, entry.url), onnxEntry: entry });
  }
  const dest = join(cacheDir, entry.name, 'model.onnx');
  await downloadFile({
    url: entry.url,
    dest,
    sha256: entry.sha256,
    bytes: entry.bytes,
    log: opts.log,
    label: entry.name,
    fetchImpl: opts.fetchImpl,
  });
  return check({ ...localModel(dest, entry.name, entry.url), onnxEntry: entry });
}

async function downloadTfjsModel(url: string, dir: string, opts: ResolveOptions): Promise<void> {
  const fetchImpl = opts.fetchImpl ?? fetch;
  const get = async (u: string): Promise<Uint8Array> => {
    const res = await fetchImpl(u);
    if (!res.ok) throw new Error(`HTTP ${res.status} for ${u}`);
    return new Uint8Array(await res.arrayBuffer());
  };
  opts.log.info(`downloading ${url} ...`);
  const jsonBytes = await get(url);
  const json = JSON.parse(new TextDecoder().decode(jsonBytes));
  if (!json.modelTopology || !json.weightsManifest) throw new Error(`${url} is not a TF.js layers model.json`);
  // Shards first, model.json last: its presence marks a complete download.
  for (const group of json.weightsManifest) {
    for (const p of group.paths) {
      if (p.includes('..') || p.startsWith('/')) throw new Error(`unsafe shard path '${p}' in model.json`);
      writeFileAtomic(join(dir, p), await get(new URL(p, url).toString()));
    }
  }
  writeFileAtomic(join(dir, 'model.json'), jsonBytes);
}

/** Cache id of a local model: the file or folder name; for a generic model.json / model.onnx, the folder it sits in (skipping Hub-style onnx/). */
function localId(p: string): string {
  let name = basename(p).replace(/\.onnx$/i, '');
  if (name === 'model.json' || name.toLowerCase() === 'model') {
    let d = dirname(p);
    if (basename(d) === 'onnx') d = dirname(d);
    name = basename(d);
  }
  return sanitize(name);
}

export function sanitize(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 80) || 'model';
}
