import { UserError } from '../util/errors.ts';

/**
 * Data augmentation on decoded images (uint8 RGB, row-major HWC), in the spirit of Keras's
 * ImageDataGenerator: one inverse-affine warp (horizontal flip, rotation, zoom, shift) with
 * bilinear sampling and 'nearest' fill (coordinates clamped to the edge), then brightness and
 * contrast as one per-channel linear map. Pure and allocation-free per pixel; the random draws
 * live in `AugmentParams` so a (seed, epoch, image) triple always gives the same image.
 */
export interface AugmentSpec {
  /** Random horizontal flip (probability 0.5). */
  flip: boolean;
  /** Rotation range in degrees: angle ~ U(-rotate, rotate). */
  rotate: number;
  /** Zoom range: zx, zy ~ U(1 - zoom, 1 + zoom) independently (Keras zoom_range). */
  zoom: number;
  /** Shift range as a fraction of width / height: tx, ty ~ U(-shift, shift). */
  shift: number;
  /** Brightness factor ~ U(1 - brightness, 1 + brightness) (Keras brightness_range, PIL semantics: multiply). */
  brightness: number;
  /** Contrast factor ~ U(1 - contrast, 1 + contrast) around the image's per-channel mean (tf.image.adjust_contrast). */
  contrast: number;
}

export interface AugmentParams {
  flip: boolean;
  /** Radians. */
  angle: number;
  zx: number;
  zy: number;
  /** Shift as a fraction of the width / height (positive moves the content right / down). */
  tx: number;
  ty: number;
  brightness: number;
  contrast: number;
}

export const NO_AUGMENT: AugmentSpec = { flip: false, rotate: 0, zoom: 0, shift: 0, brightness: 0, contrast: 0 };
export const IDENTITY_PARAMS: AugmentParams = {
  flip: false,
  angle: 0,
  zx: 1,
  zy: 1,
  tx: 0,
  ty: 0,
  brightness: 1,
  contrast: 1,
};

const RANGES: Record<Exclude<keyof AugmentSpec, 'flip'>, [number, number]> = {
  rotate: [0, 180],
  zoom: [0, 0.9],
  shift: [0, 0.9],
  brightness: [0, 0.9],
  contrast: [0, 0.9],
};

/** 'flip,rotate=15,zoom=0.1,shift=0.1,brightness=0.2,contrast=0.2'; '' or 'none' = no augmentation. */
export function parseAugmentSpec(text: string): AugmentSpec {
  const spec: AugmentSpec = { ...NO_AUGMENT };
  const t = text.trim();
  if (t === '' || t === 'none') return spec;
  const seen = new Set<string>();
  for (const raw of t.split(',')) {
    const part = raw.trim();
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = (eq >= 0 ? part.slice(0, eq) : part).trim();
    const value = eq >= 0 ? part.slice(eq + 1).trim() : undefined;
    if (seen.has(key)) throw new UserError(`--augment: '${key}' given twice`);
    seen.add(key);
    if (key === 'flip') {
      if (value !== undefined && !/^(true|false|1|0)$/.test(value))
        throw new UserError(`--augment: 'flip' takes no value (or true/false), got '${value}'`);
      spec.flip = value === undefined || value === 'true' || value === '1';
      continue;
    }
    if (!(key in RANGES)) {
      throw new UserError(
        `--augment: unknown transform '${key}' (known: flip, rotate=DEG, zoom=F, shift=F, brightness=F, contrast=F)`,
      );
    }
    const k = key as keyof typeof RANGES;
    if (value === undefined || value === '')
      throw new UserError(`--augment: '${key}' needs a value, like ${key}=${k === 'rotate' ? 15 : 0.1}`);
    const n = Number(value);
    const [lo, hi] = RANGES[k];
    if (!Number.isFinite(n) || n < lo || n > hi)
      throw new UserError(`--augment: ${key} must be a number from ${lo} to ${hi}, got '${value}'`);
    spec[k] = n;
  }
  return spec;
}

export function formatAugmentSpec(spec: AugmentSpec): string {
  const parts: string[] = [];
  if (spec.flip) parts.push('flip');
  for (const k of ['rotate', 'zoom', 'shift', 'brightness', 'contrast'] as const)
    if (spec[k] > 0) parts.push(`${k}=${spec[k]}`);
  return parts.length ? parts.join(',') : 'none';
}

export function isAugmenting(spec: AugmentSpec): boolean {
  return spec.flip || spec.rotate > 0 || spec.zoom > 0 || spec.shift > 0 || spec.brightness > 0 || spec.contrast > 0;
}

/** Draw one image's parameters. Always consumes the same number of draws, whatever the spec. */
export function sampleAugmentParams(spec: AugmentSpec, rand: () => number): AugmentParams {
  const u = (r: number): number => (rand() * 2 - 1) * r;
  const flip = rand() < 0.5;
  const angle = (u(spec.rotate) * Math.PI) / 180;
  const zx = 1 + u(spec.zoom);
  const zy = 1 + u(spec.zoom);
  const tx = u(spec.shift);
  const ty = u(spec.shift);
  const brightness = 1 + u(spec.brightness);
  const contrast = 1 + u(spec.contrast);
  return { flip: spec.flip && flip, angle, zx, zy, tx, ty, brightness, contrast };
}

/** Seed for one (seed, epoch, image index) triple: a 32-bit hash so neighbouring triples are unrelated. */
export function augmentSeed(seed: number, epoch: number, index: number): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (const v of [epoch, index]) {
    h = Math.imul(h ^ (v >>> 0), 0x9e3779b1) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
  }
  return h;
}

/**
 * Warp `src` (w×h×3) into `out` (same size). Output pixel (x, y) samples the source at
 * c + A·(x' − c) − t, where x' is x mirrored when flipping, A = R(angle)·diag(zx, zy) (zoom > 1
 * shows more of the image, as in Keras), c the image centre and t the shift in pixels; sampling is
 * bilinear with coordinates clamped to the border ('nearest' fill). Brightness b and contrast k
 * then map each channel value v to v·b·k + mean_c·b·(1 − k), rounded and clamped to 0..255.
 * Identity parameters reproduce `src` exactly.
 */
export function augmentImage(src: Uint8Array, w: number, h: number, p: AugmentParams, out: Uint8Array): void {
  if (src.length < w * h * 3 || out.length < w * h * 3) throw new Error('augmentImage: buffer smaller than w*h*3');
  if (out === src) throw new Error('augmentImage: out must not alias src');
  const cos = Math.cos(p.angle),
    sin = Math.sin(p.angle);
  const a = cos * p.zx,
    b = -sin * p.zy,
    c = sin * p.zx,
    d = cos * p.zy;
  const cx = (w - 1) / 2,
    cy = (h - 1) / 2;
  const sx = p.tx * w,
    sy = p.ty * h;
  // Per-channel linear colour map.
  const alpha = p.brightness * p.contrast;
  let b0 = 0,
    b1 = 0,
    b2 = 0;
  if (p.contrast !== 1) {
    let s0 = 0,
      s1 = 0,
      s2 = 0;
    const n = w * h * 3;
    for (let i = 0; i < n; i += 3) {
      s0 += src[i]!;
      s1 += src[i + 1]!;
      s2 += src[i + 2]!;
    }
    const k = (p.brightness * (1 - p.contrast)) / (w * h);
    b0 = s0 * k;
    b1 = s1 * k;
    b2 = s2 * k;
  }
  const colour = alpha !== 1 || b0 !== 0 || b1 !== 0 || b2 !== 0;
  const xStart = p.flip ? w - 1 : 0;
  const xStep = p.flip ? -1 : 1;
  const du = a * xStep,
    dv = c * xStep;
  const wMax = w - 1,
    hMax = h - 1;
  const stride = w * 3;
  let o = 0;
  for (let y = 0; y < h; y++) {
    const ry = y - cy;
    let u = cx + a * (xStart - cx) + b * ry - sx;
    let v = cy + c * (xStart - cx) + d * ry - sy;
    for (let x = 0; x < w; x++, u += du, v += dv, o += 3) {
      const uc = u < 0 ? 0 : u > wMax ? wMax : u;
      const vc = v < 0 ? 0 : v > hMax ? hMax : v;
      const x0 = uc | 0,
        y0 = vc | 0;
      const fx = uc - x0,
        fy = vc - y0;
      const x1 = x0 < wMax ? x0 + 1 : x0;
      const y1 = y0 < hMax ? y0 + 1 : y0;
      const i00 = y0 * stride + x0 * 3,
        i01 = y0 * stride + x1 * 3;
      const i10 = y1 * stride + x0 * 3,
        i11 = y1 * stride + x1 * 3;
      const w00 = (1 - fx) * (1 - fy),
        w01 = fx * (1 - fy),
        w10 = (1 - fx) * fy,
        w11 = fx * fy;
      let r = src[i00]! * w00 + src[i01]! * w01 + src[i10]! * w10 + src[i11]! * w11;
      let g = src[i00 + 1]! * w00 + src[i01 + 1]! * w01 + src[i10 + 1]! * w10 + src[i11 + 1]! * w11;
      let bl = src[i00 + 2]! * w00 + src[i01 + 2]! * w01 + src[i10 + 2]! * w10 + src[i11 + 2]! * w11;
      if (colour) {
        r = r * alpha + b0;
        g = g * alpha + b1;
        bl = bl * alpha + b2;
      }
      // Uint8Array assignment truncates: +0.5 rounds; clamp first.
      out[o] = r <= 0 ? 0 : r >= 255 ? 255 : r + 0.5;
      out[o + 1] = g <= 0 ? 0 : g >= 255 ? 255 : g + 0.5;
      out[o + 2] = bl <= 0 ? 0 : bl >= 255 ? 255 : bl + 0.5;
    }
  }
}
