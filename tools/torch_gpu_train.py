#!/usr/bin/env python3
"""PyTorch AMP training-step timings on the same GPU as claim's
(tests/engine/gpu_train.rs, `gpu_train_bench_or_skipped`), for
tools/gpu_check.sh's table. Same shapes, same names:

* train_denoiser_claim_2d_b16: CLAIM's denoiser (tools/denoiser_reference.py's
  Unet3D, dim 72, mults 1,2,4,8, C1, cond 16) on [16,1,1,72,72], the
  lesion-focused L1 in fp32, Adam;
* train_segmenter_2d_b12_256: nnU-Net's 2-D PlainConvUNet
  (dynamic_network_architectures; features 32..512 over 6 stages, 4 classes,
  deep supervision) on 12 patches of 256x256, Dice + CE on every head
  (nnU-Net's weights), SGD Nesterov 0.99. Skipped when
  dynamic_network_architectures is not importable.

Each step is PyTorch AMP as its users write it: fp32 weights, forward under
torch.autocast(float16), the loss in fp32, GradScaler's scaled backward,
unscale, optimizer step, zero_grad. Times are medians of CUDA-event
timings after warm-up. Prints one JSON object per line.

Usage: python3 tools/torch_gpu_train.py [--repeats N]
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from denoiser_reference import Unet3D  # noqa: E402
from torch_gpu_ops import median_ms  # noqa: E402


def grad_scaler():
    """torch.amp.GradScaler("cuda") (torch >= 2.3), else the older spelling."""
    try:
        return torch.amp.GradScaler("cuda")
    except (AttributeError, TypeError):
        return torch.cuda.amp.GradScaler()


def amp_step(net, optimizer, scaler, loss_fn):
    def step():
        with torch.autocast("cuda", dtype=torch.float16):
            out = net()
        loss = loss_fn(out)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def denoiser_case(dev, repeats):
    torch.manual_seed(0)
    net = Unet3D(dim=72, dim_mults=(1, 2, 4, 8), channels=1, cond_dim=16, heads=8, dim_head=32).to(dev).train()
    batch = 16
    x = torch.randn(batch, 1, 1, 72, 72, device=dev)
    t = torch.randint(0, 1000, (batch,), device=dev)
    cond = torch.rand(batch, 16, device=dev)
    noise = torch.randn_like(x)
    mask = (torch.rand_like(x) < 0.35).float()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-5)
    scaler = grad_scaler()

    def loss_fn(pred):
        return (mask * noise - mask * pred.float()).abs().mean()

    step = amp_step(lambda: net(x, t, cond), optimizer, scaler, loss_fn)
    return median_ms(step, repeats)


def segmenter_case(dev, repeats):
    try:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
    except ImportError as e:
        print(f"segmenter timing skipped: {e}", file=sys.stderr)
        return None
    torch.manual_seed(0)
    features = [32, 64, 128, 256, 512, 512]
    stages = len(features)
    net = PlainConvUNet(
        input_channels=1, n_stages=stages, features_per_stage=features, conv_op=torch.nn.Conv2d,
        kernel_sizes=[[3, 3]] * stages, strides=[[1, 1]] + [[2, 2]] * (stages - 1),
        n_conv_per_stage=[2] * stages, num_classes=4, n_conv_per_stage_decoder=[2] * (stages - 1),
        conv_bias=True, norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"negative_slope": 0.01, "inplace": True},
        deep_supervision=True,
    ).to(dev).train()
    batch, size, classes = 12, 256, 4
    x = torch.randn(batch, 1, size, size, device=dev)
    target = torch.randint(0, classes, (batch, 1, size, size), device=dev)
    heads = stages - 1
    weights = [0.5**i for i in range(heads)]
    weights[-1] = 0.0
    weights = [w / sum(weights) for w in weights]
    # nnU-Net's data loader hands over the targets of every head.
    targets = [target]
    for i in range(1, heads):
        targets.append(F.interpolate(target.float(), scale_factor=0.5**i, mode="nearest").long())
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-5, momentum=0.99, nesterov=True)
    scaler = grad_scaler()

    def dice_ce(logits, y):
        logits = logits.float()
        ce = F.cross_entropy(logits, y[:, 0])
        p = logits.softmax(1)
        onehot = F.one_hot(y[:, 0], classes).permute(0, 3, 1, 2).float()
        axes = (0, 2, 3)
        tp = (p * onehot).sum(axes)[1:]
        den = p.sum(axes)[1:] + onehot.sum(axes)[1:]
        dice = (2 * tp + 1e-5) / (den + 1e-5).clamp_min(1e-8)
        return ce - dice.mean()

    def loss_fn(outs):
        return sum(w * dice_ce(o, y) for w, o, y in zip(weights, outs, targets) if w > 0)

    step = amp_step(lambda: net(x), optimizer, scaler, loss_fn)
    return median_ms(step, repeats)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    emit = lambda **row: print(json.dumps(row), flush=True)
    emit(kind="train_bench", name="train_denoiser_claim_2d_b16", torch_ms=denoiser_case(dev, args.repeats))
    torch.cuda.empty_cache()
    ms = segmenter_case(dev, args.repeats)
    if ms is not None:
        emit(kind="train_bench", name="train_segmenter_2d_b12_256", torch_ms=ms)


if __name__ == "__main__":
    main()
