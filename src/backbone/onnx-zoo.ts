import type { Pooling } from './convert.ts';
import type { Preprocessing } from './preprocess.ts';

/**
 * Known ONNX bases people pick for transfer learning, by name (`--model resnet50`). Each entry is a
 * published ONNX export (URL pinned to a commit where the host allows it), its sha256 and size, and the
 * data config from the publisher's own files. A download is refused unless its sha256 matches.
 *
 * Values and where they come from (read 2026-11 through public copies of those files):
 *  - resnet50: ONNX Model Zoo, validated/vision/classification/resnet/model/resnet50-v1-12.onnx
 *    (the zoo's fp32 ResNet50). sha256 and size from the zoo's ONNX_HUB_MANIFEST.json ("model_sha",
 *    "model_bytes", the values onnx.hub.load checks) and identical in the file's Git LFS pointer
 *    (oid sha256). Preprocessing from the zoo's resnet/README.md: shortest side to 256 with
 *    Resize mode "linear", centre crop 224, mean 255*[0.485, 0.456, 0.406], std 255*[0.229, 0.224, 0.225].
 *  - efficientnet_b0: Kalray/efficientnet-b0 on Hugging Face, efficientNet-b0.onnx at commit c7cdbbf
 *    (sha256 and size 21144194 from that commit's Git LFS pointer). Kalray's model card gives no
 *    preprocessing; the export's size matches torchvision's EfficientNet-B0, so the entry uses
 *    torchvision's EfficientNet_B0_Weights.IMAGENET1K_V1 transforms (ImageClassification crop_size=224,
 *    resize_size=256, interpolation=BICUBIC, ImageNet mean/std): an inference, not a published pairing.
 *  - mobilenet_v3_large: Kalray/mobilenet-v3-large, mobilenetv3-large.onnx at commit fffac31 (sha256 and
 *    size 21927468 from its Git LFS pointer); likewise torchvision's MobileNet_V3_Large_Weights.IMAGENET1K_V1
 *    transforms (crop 224, resize 256, bilinear, ImageNet mean/std), inferred as for EfficientNet-B0.
 *  - convnext_tiny: Xenova/convnext-tiny-224 (facebook/convnext-tiny-224 exported by Transformers.js),
 *    onnx/model.onnx. Preprocessing from its preprocessor_config.json (ConvNextImageProcessor: crop_pct
 *    0.875, size.shortest_edge 224, resample 3 = bicubic, ImageNet mean/std). NO sha256: the file is
 *    now stored with Xet and no public copy of its hash was found, so it is NOT a known name here (every
 *    known name is checksum-verified); ConvNeXt exports work as `--model file.onnx` (default cut checked
 *    against PyTorch in scripts/torchvision_parity.py).
 *  - dinov2_small: Xenova/dinov2-small (facebook/dinov2-small, self-supervised ViT-S/14) at commit
 *    560a572, onnx/model.onnx, sha256 from that commit's Git LFS details (88.5 MB). Preprocessing: the
 *    BitImageProcessor config the dinov2 repos publish (crop_size 224, size.shortest_edge 256,
 *    resample 3 = bicubic, ImageNet mean/std; the 436-byte file is identical across Xenova/dinov2-*).
 *    Features: the 'pooler_output' output, Dinov2Model's layer-normed class token (384-d).
 */
export interface OnnxZooEntry {
  name: string;
  description: string;
  url: string;
  /** Lower-case hex sha256 of the file: every known name is verified (an export without a published hash is left out). */
  sha256: string;
  bytes?: number;
  /** Where the sha256 and the data config were read. */
  sources: string[];
  preprocessing: Preprocessing;
  /** Tensor to cut at; undefined = the default cut (the last pooling before the classifier). */
  featureNode?: string;
  pooling?: Pooling;
}

const IMAGENET_MEAN: [number, number, number] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [number, number, number] = [0.229, 0.224, 0.225];
const crop = (kernel: Preprocessing['kernel'], cropPct = 224 / 256): Preprocessing => ({
  size: [224, 224],
  resize: 'center-crop',
  cropPct,
  kernel,
  channelOrder: 'rgb',
  mean: IMAGENET_MEAN,
  std: IMAGENET_STD,
});

export const ONNX_ZOO: readonly OnnxZooEntry[] = [
  {
    name: 'resnet50',
    description: 'ResNet-50 v1 (ImageNet-1k), ONNX Model Zoo fp32, opset 12; 2048-d features',
    url: 'https://github.com/onnx/models/raw/main/validated/vision/classification/resnet/model/resnet50-v1-12.onnx',
    sha256: '3f03fdef724b22947eed826f1eef1dc5c34151bb4c37d634f1db89dfa2dd1526',
    bytes: 102576593,
    sources: ['onnx/models ONNX_HUB_MANIFEST.json', 'onnx/models validated/vision/classification/resnet/README.md'],
    preprocessing: crop('linear'),
  },
  {
    name: 'efficientnet_b0',
    description: 'EfficientNet-B0 (ImageNet-1k, torchvision weights), ONNX; 1280-d features',
    url: 'https://huggingface.co/Kalray/efficientnet-b0/resolve/c7cdbbfc4eda1e43e3577a583135c1af05a80081/efficientNet-b0.onnx',
    sha256: '0fb1e040635c36fb710abd6c07ff5448654a16eeeaf5a75134f83021e1c33a7c',
    bytes: 21144194,
    sources: [
      'huggingface.co/Kalray/efficientnet-b0 commit c7cdbbf (LFS pointer)',
      'torchvision EfficientNet_B0_Weights.IMAGENET1K_V1',
    ],
    preprocessing: crop('cubic'),
  },
  {
    name: 'mobilenet_v3_large',
    description: 'MobileNetV3-Large (ImageNet-1k, torchvision weights), ONNX; 960-d features',
    url: 'https://huggingface.co/Kalray/mobilenet-v3-large/resolve/fffac31287745ffaa3fcc38a2742e8cb7f3ba151/mobilenetv3-large.onnx',
    sha256: '6d54d05c76e656abb0c4cb6fe3180d9be199f90919bb82d542e0cf985dbfc5f4',
    bytes: 21927468,
    sources: [
      'huggingface.co/Kalray/mobilenet-v3-large commit fffac31 (LFS pointer)',
      'torchvision MobileNet_V3_Large_Weights.IMAGENET1K_V1',
    ],
    preprocessing: crop('linear'),
  },
  {
    name: 'dinov2_small',
    description:
      'DINOv2 ViT-S/14 (self-supervised, facebook/dinov2-small), Transformers.js ONNX export; 384-d class token',
    url: 'https://huggingface.co/Xenova/dinov2-small/resolve/560a572cedd01ab59cf1a614c2d9673397b65ef2/onnx/model.onnx',
    sha256: '83141175ec78b4ff9a2bb58a4c7c264ba0054d1c2e122e5a8114b79a8d4179ea',
    sources: [
      'huggingface.co/Xenova/dinov2-small commit 560a572 (LFS details)',
      'Xenova/dinov2-* preprocessor_config.json (BitImageProcessor)',
    ],
    preprocessing: crop('cubic'),
    featureNode: 'pooler_output',
    pooling: 'none',
  },
];

export function findOnnxModel(name: string): OnnxZooEntry | undefined {
  return ONNX_ZOO.find((e) => e.name === name);
}
