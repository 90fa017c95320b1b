import type { Pooling } from './convert.ts';
import type { Preprocessing } from './preprocess.ts';

/**
 * Known pretrained backbones: where the weights live and how images must be prepared for them
 * (timm-style data config), plus the default cut. Users name them with --model.
 */
export interface BackboneEntry {
  name: string;
  description: string;
  /** Canonical model.json URL (TF.js layers format). */
  url: string;
  preprocessing: Preprocessing;
  /**
   * Square input size `extract` uses when no --input-size is given (the network's own size stays in
   * `preprocessing`, for fine-tuning's and the converter's arithmetic). See `fixResInputSize`.
   */
  featureSize?: number;
  /** Last conv activation: Keras's include_top=False. */
  defaultLayer: string;
  defaultPooling: Pooling;
}

const TFJS_MODELS = 'https://storage.googleapis.com/tfjs-models/tfjs';

/**
 * "FixRes" (Touvron et al., 2019): ImageNet training crops (random-resized, then scaled to the input size)
 * show objects larger than a whole photo squashed to that size does, so the pretrained filters see photos at
 * the scale they learned when the photo is fed 1.3× larger (rounded to a multiple of 32: 224 → 288).
 * Measured on cats-vs-dogs (MobileNet v1 0.75; head chosen by 5-fold CV on the 2000 training images, never
 * test): the chosen head's CV accuracy 98.30 % at 224, 98.60 % at 256, 98.70 % at 288, 98.55 % at 320
 * (data/bench/features-input-size.json). The conv base costs (288/224)² = 1.65× more per image.
 */
export const FIXRES_SCALE = 1.3;

export function fixResInputSize(native: number): number {
  return Math.max(32, Math.round((native * FIXRES_SCALE) / 32) * 32);
}

/** Keras MobileNet v1: squash-resize to the input size, then x/127.5 - 1. */
function mobilenetV1(alpha: string, size: number): BackboneEntry {
  return {
    name: `mobilenet_v1_${alpha}_${size}`,
    description: `MobileNet v1 (width ${alpha}, ${size}x${size}), ImageNet-pretrained, TF.js layers model`,
    url: `${TFJS_MODELS}/mobilenet_v1_${alpha}_${size}/model.json`,
    preprocessing: {
      size: [size, size],
      resize: 'squash',
      kernel: 'linear',
      channelOrder: 'rgb',
      mean: [0.5, 0.5, 0.5],
      std: [0.5, 0.5, 0.5],
    },
    featureSize: fixResInputSize(size),
    defaultLayer: 'conv_pw_13_relu',
    defaultPooling: 'avg',
  };
}

export const DEFAULT_MODEL = 'mobilenet_v1_0.75_224';

export const BACKBONES: readonly BackboneEntry[] = ['1.0', '0.75', '0.50', '0.25'].flatMap((a) =>
  [224, 192, 160, 128].map((s) => mobilenetV1(a, s)),
);

export function findBackbone(name: string): BackboneEntry | undefined {
  return BACKBONES.find((b) => b.name === name);
}
