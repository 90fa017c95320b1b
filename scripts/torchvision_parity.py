#!/usr/bin/env python3
"""Export torchvision architectures to ONNX and record PyTorch's pooled features (dev only).

Random weights (seeded), BatchNorm statistics calibrated by two train-mode passes on the images so
activations keep a sensible scale through deep nets, then eval mode. For each architecture writes
    OUT/<arch>/model.onnx        opset 13, input 'input' [N, 3, 224, 224] float, output 'logits'
    OUT/<arch>/features.npy      float32 [N, D]: model.avgpool's output, flattened (what the classifier sees);
                                 for the ViT, the class token entering model.heads
and once OUT/images.npy (uint8 [N, 224, 224, 3]) with the images both sides consume; PyTorch normalises
them with the ImageNet mean/std, convcache in-graph from the same bytes.

Needs python3-torch and python3-torchvision (Debian: apt-get install python3-torchvision); npm test never runs it.
Usage: python3 scripts/torchvision_parity.py OUT_DIR IMAGE.jpg [IMAGE.jpg ...]
Driven by scripts/torchvision-parity.ts.
"""
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

ARCHS = ['efficientnet_b0', 'mobilenet_v3_large', 'regnet_y_400mf', 'resnet18', 'convnext_tiny', 'vit_b_16']
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    imgs = np.stack([np.asarray(Image.open(p).convert('RGB').resize((224, 224), Image.BILINEAR)) for p in sys.argv[2:]]).astype(np.uint8)
    np.save(out / 'images.npy', imgs)
    x = torch.from_numpy(((imgs.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    torch.set_num_threads(1)  # the machine is shared
    for arch in ARCHS:
        d = out / arch
        if (d / 'features.npy').exists() and (d / 'model.onnx').exists():
            print(f'{arch}: already exported')
            continue
        d.mkdir(exist_ok=True)
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None)
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(x)
        model.eval()
        pooled = {}
        if hasattr(model, 'avgpool'):
            model.avgpool.register_forward_hook(lambda _m, _i, o: pooled.__setitem__('f', torch.flatten(o, 1)))
        else:  # ViT: no spatial map; the classifier's input is the class token
            model.heads.register_forward_pre_hook(lambda _m, i: pooled.__setitem__('f', i[0]))
        with torch.no_grad():
            model(x)
        np.save(d / 'features.npy', pooled['f'].numpy().astype(np.float32))
        torch.onnx.export(model, x, str(d / 'model.onnx'), opset_version=13, input_names=['input'], output_names=['logits'],
                          dynamic_axes={'input': {0: 'N'}, 'logits': {0: 'N'}})
        print(f'{arch}: features {tuple(pooled["f"].shape)}, torch {torch.__version__}, torchvision {torchvision.__version__}')


if __name__ == '__main__':
    main()
