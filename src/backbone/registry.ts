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
  /** Last conv activation: Keras's include_top=False. */
  defaultLayer: string;
  defaultPooling: Pooling;
}

const TFJS_MODELS = 'https://storage.googleapis.com/tfjs-models/tfjs';

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
