/**
 * Preprocessing belongs to the model (timm's "data config"): size, resize policy and scaling are
 * resolved from the backbone entry and recorded in the manifest, so predict can never drift from extract.
 */
export interface Preprocessing {
  /** Network input size [height, width]. */
  size: [number, number];
  /** 'squash' resizes to size ignoring aspect (Keras/TF.js MobileNet); 'center-crop' resizes the short side then crops. */
  resize: 'squash' | 'center-crop';
  /** For center-crop: short side = size / cropPct (timm's crop_pct). */
  cropPct?: number;
  /** sharp resize kernel. */
  kernel: 'nearest' | 'linear' | 'cubic' | 'mitchell' | 'lanczos2' | 'lanczos3';
  channelOrder: 'rgb' | 'bgr';
  /** Applied to x/255 per channel: (x/255 - mean) / std. MobileNet's [-1, 1] is mean 0.5, std 0.5. */
  mean: [number, number, number];
  std: [number, number, number];
}

/** Per-channel affine on raw 0..255 values: x * scale + offset. */
export function affineFromPreprocessing(p: Preprocessing): { scale: number[]; offset: number[] } {
  const scale = p.std.map((s) => 1 / (255 * s));
  const offset = p.mean.map((m, i) => -m / p.std[i]!);
  return { scale, offset };
}
