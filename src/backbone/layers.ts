import type { Logger } from '../util/log.ts';
import { modelCacheDir } from '../util/paths.ts';
import { modelSource, type LayerListing } from './backbone.ts';
import { resolveModel } from './resolve.ts';

export type { LayerListing };

/** The layer list with statically inferred output shapes (what `convcache layers` prints). */
export async function describeLayers(model: string, log: Logger): Promise<LayerListing> {
  const resolved = await resolveModel(model, { cacheDir: modelCacheDir(), log });
  return modelSource(resolved).describeLayers(resolved);
}
