#!/usr/bin/env python3
"""PyTorch CPU timings of one training step, for comparison with claim's
`cargo bench --bench train` on the same machine (issue 10, "Benchmarks").

A step is forward + backward + optimizer update, as each upstream trainer
runs it:

* denoiser: the full CLAIM denoiser (dim 72, mults 1,2,4,8, one channel,
  16-bin condition; tools/denoiser_reference.py's Unet3D) at batch 4 on
  72x72 windows (F = 1), lesion-focused masked L1 on the predicted noise,
  Adam lr 1e-4;
* segmenter: the 2-D PlainConvUNet of the phantom's nnU-Net 2d plan
  (6 stages, features 32..512, 3x3, strides 1,2,2,2,2,2, 2 convs per stage
  and per decoder stage, InstanceNorm affine, LeakyReLU, 4 classes;
  tools/grad_reference.py's PlainConvUNet) at --seg-batch patches of
  --seg-patch, with deep supervision off, cross-entropy loss, SGD 0.01
  Nesterov 0.99, weight decay 3e-5.

Prints one JSON object: median and minimum step time per model (after
--warmup steps, over --reps steps) and the peak resident memory of the
process after each model (ru_maxrss). Run each model in its own process
(--only) to compare peak memory with claim's.

Usage: python tools/bench_torch_train.py [--threads 2] [--reps 5] [--only denoiser|segmenter]
Requirements: torch, safetensors (PyPI).
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from denoiser_reference import Unet3D  # noqa: E402
from grad_reference import PlainConvUNet  # noqa: E402


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(step, warmup, reps):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times.sort()
    return {"median_ms": 1e3 * times[len(times) // 2], "min_ms": 1e3 * times[0]}


def bench_denoiser(warmup, reps):
    torch.manual_seed(0)
    model = Unet3D(dim=72, dim_mults=(1, 2, 4, 8), channels=1, cond_dim=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    shape = (4, 1, 1, 72, 72)
    x, noise = torch.randn(shape), torch.randn(shape)
    mask = (torch.rand(shape) < 0.2).float()
    t = torch.tensor([10, 100, 200, 290])
    cond = torch.rand(4, 16)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x, t, cond)
        F.l1_loss(noise * mask, out * mask).backward()
        opt.step()

    result = timed(step, warmup, reps)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    return result


def bench_segmenter(warmup, reps, batch, patch):
    torch.manual_seed(0)
    features = [32, 64, 128, 256, 512, 512]
    model = PlainConvUNet(2, 1, features, [1, 2, 2, 2, 2, 2], [2] * 6, [2] * 5, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True,
                          weight_decay=3e-5)
    x = torch.randn(batch, 1, patch, patch)
    target = torch.randint(0, 4, (batch, patch, patch))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
        opt.step()

    result = timed(step, warmup, reps)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    result["batch"], result["patch"] = batch, patch
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seg-batch", type=int, default=12)
    ap.add_argument("--seg-patch", type=int, default=192)
    ap.add_argument("--only", choices=["denoiser", "segmenter"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"torch": torch.__version__, "threads": args.threads}
    if args.only in (None, "denoiser"):
        out["denoiser"] = bench_denoiser(args.warmup, args.reps)
        out["denoiser"]["peak_rss_mib"] = peak_rss_mib()
    if args.only in (None, "segmenter"):
        out["segmenter"] = bench_segmenter(args.warmup, args.reps, args.seg_batch, args.seg_patch)
        out["segmenter"]["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
