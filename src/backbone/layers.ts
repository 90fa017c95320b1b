import { join } from 'node:path';
import type { Logger } from '../util/log.ts';
import { defaultDataDir } from '../util/paths.ts';
import { modelSource, type LayerListing } from './backbone.ts';
import { resolveModel } from './resolve.ts';

export type { LayerListing };

/** The layer list with statically inferred output shapes (what `npm run layers` prints). */
export async function describeLayers(model: string, log: Logger): Promise<LayerListing> {
  const resolved = await resolveModel(model, { cacheDir: join(defaultDataDir(), 'models'), log });
  return modelSource(resolved).describeLayers(resolved);
}
