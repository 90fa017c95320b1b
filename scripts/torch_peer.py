#!/usr/bin/env python3
"""The PyTorch + Pillow peer for `npm run bench` (extract): the same job as `convcache extract`
done the way a PyTorch user would write it, timed on the same images in the same run.

torchvision ImageFolder + DataLoader (Pillow decode, Resize((S, S)) bicubic with S = convcache's input size, ToTensor,
Normalize to [-1, 1]) -> MobileNet v1 alpha=0.75 (the same architecture and MACs as convcache's
default base; random weights: speed does not depend on them) in TorchScript optimize_for_inference
-> global average pool -> np.save. Best of the given DataLoader worker counts.

Usage: torch_peer.py ROOT[,ROOT...] OUT.npy --workers 0,1,2 --threads 2 [--batch 32] [--size 224]
Prints one JSON object: {"images", "best": {"workers", "seconds"}, "runs": [...], "torch": version}.
Needs python3-torch and python3-torchvision (Debian); never needed by npm test.
"""
import argparse
import warnings
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision import datasets, transforms


def mobilenet_v1(alpha=0.75):
    def conv_bn(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))

    def dw_sep(cin, cout, stride):
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
            nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True),
        )

    c = lambda n: int(n * alpha)
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    layers = [conv_bn(3, c(32), 2)]
    cin = c(32)
    for cout, s in cfg:
        layers.append(dw_sep(cin, c(cout), s))
        cin = c(cout)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def run(roots, out, workers, threads, batch, size):
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = mobilenet_v1().eval()
    with torch.no_grad():
        scripted = torch.jit.optimize_for_inference(torch.jit.script(model))
    tf = transforms.Compose([
        transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    ])
    t0 = time.perf_counter()
    ds = torch.utils.data.ConcatDataset([datasets.ImageFolder(r, transform=tf) for r in roots])
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers)
    feats = []
    with torch.no_grad():
        for x, _ in loader:
            feats.append(scripted(x).numpy())
    np.save(out, np.concatenate(feats))
    return len(ds), time.perf_counter() - t0


def main():
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("roots")
    ap.add_argument("out")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224, help="input size (convcache's extraction size, e.g. 288)")
    a = ap.parse_args()
    runs = []
    for w in [int(x) for x in a.workers.split(",")]:
        n, s = run(a.roots.split(","), a.out, w, a.threads, a.batch, a.size)
        runs.append({"workers": w, "seconds": round(s, 3), "imagesPerSecond": round(n / s, 1)})
    best = min(runs, key=lambda r: r["seconds"])
    print(json.dumps({"images": n, "size": a.size, "best": best, "runs": runs, "torch": torch.__version__, "torchvision": torchvision.__version__}))


if __name__ == "__main__":
    main()
