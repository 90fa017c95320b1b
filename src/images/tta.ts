import { UserError } from '../util/errors.ts';
import { IDENTITY_PARAMS, type AugmentParams } from './augment.ts';

/**
 * Test-time augmentation of the *features*: every image (train, val and test alike) is run through
 * the conv base as several fixed views and its stored feature is the mean of the views' features.
 * Unlike `--augment` (random views of training images as extra rows), this is part of the feature
 * definition — recorded in the manifest and in the cache key — so a head sees the same kind of
 * feature at fit and at predict time.
 *
 *   flip   the image and its mirror image (2 views)
 *   crops  the image and its four corner crops at 87.5 % of each side (5 views), a small
 *          multi-crop in the spirit of the ten-crop evaluation of AlexNet/VGG
 *   flip,crops  both: the 5 crops and their mirrors (10 views)
 */

export interface TtaSpec {
  flip: boolean;
  crops: boolean;
}

export const NO_TTA: TtaSpec = Object.freeze({ flip: false, crops: false });

/** Side of each corner crop, as a fraction of the image side. */
export const CROP_FRACTION = 0.875;

/** 'flip', 'crops', 'flip,crops'; '' or 'none' = no TTA. */
export function parseTtaSpec(text: string): TtaSpec {
  const spec = { ...NO_TTA };
  const t = text.trim();
  if (t === '' || t === 'none') return spec;
  for (const raw of t.split(',')) {
    const part = raw.trim();
    if (part === '') continue;
    if (part !== 'flip' && part !== 'crops')
      throw new UserError(`--tta: unknown view set '${part}' (known: flip, crops, or flip,crops)`);
    if (spec[part]) throw new UserError(`--tta: '${part}' given twice`);
    spec[part] = true;
  }
  return spec;
}

export function formatTtaSpec(s: TtaSpec): string {
  const parts = [...(s.flip ? ['flip'] : []), ...(s.crops ? ['crops'] : [])];
  return parts.length ? parts.join(',') : 'none';
}

export function isTta(s: TtaSpec | undefined): s is TtaSpec {
  return !!s && (s.flip || s.crops);
}

export interface TtaView {
  name: string;
  params: AugmentParams | null;
}

/**
 * The views whose features are averaged, the image itself first (params null). Crops are inverse
 * warps of the resized image (zoom < 1 shows less of it; shift moves the window to a corner), so
 * they need no second decode.
 */
export function ttaViews(s: TtaSpec): TtaView[] {
  const base: TtaView[] = [{ name: 'id', params: null }];
  if (s.crops) {
    const z = CROP_FRACTION,
      off = (1 - z) / 2;
    for (const [name, tx, ty] of [
      ['tl', off, off],
      ['tr', -off, off],
      ['bl', off, -off],
      ['br', -off, -off],
    ] as const) {
      base.push({ name, params: { ...IDENTITY_PARAMS, zx: z, zy: z, tx, ty } });
    }
  }
  if (!s.flip) return base;
  return [
    ...base,
    ...base.map((v) => ({ name: `${v.name}-flip`, params: { ...(v.params ?? IDENTITY_PARAMS), flip: true } })),
  ];
}

/** Mean of equally long feature vectors (the stored TTA feature), in float64 then rounded once. */
export function meanFeatures(views: readonly Float32Array[]): Float32Array {
  const d = views[0]!.length;
  const acc = new Float64Array(d);
  for (const v of views) {
    if (v.length !== d) throw new Error(`meanFeatures: widths ${v.length} and ${d} differ`);
    for (let i = 0; i < d; i++) acc[i]! += v[i]!;
  }
  const out = new Float32Array(d);
  for (let i = 0; i < d; i++) out[i] = acc[i]! / views.length;
  return out;
}
