#!/usr/bin/env python3
"""Loads a model written by `claim train diffusion` into the upstream
Unet3D (tools/denoiser_reference.py, written from
shared/reference/denoiser.md) with `load_state_dict(strict=True)`, and runs
it on a fixed input.

Usage: python tools/torch_load_trained.py MODEL.safetensors [OUT.safetensors]

The network's size comes from the model's `train_config` metadata. With
OUT, the input (x, t, cond) and PyTorch's output are written there, so a
caller (tests/engine/train.rs) can check claim's forward gives the same.
Needs torch and safetensors.
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from denoiser_reference import Unet3D  # noqa: E402


def main():
    path = sys.argv[1]
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if "train_config" not in meta:
        sys.exit(f"{path}: no train_config metadata (not written by claim train diffusion)")
    cfg = json.loads(meta["train_config"])["model"]
    model = Unet3D(
        cfg["dim"],
        tuple(cfg["dim_mults"]),
        channels=cfg["channels"],
        cond_dim=cfg["cond_dim"],
        heads=cfg["attn_heads"],
        dim_head=cfg["attn_dim_head"],
        init_kernel_size=cfg["init_kernel_size"],
        groups=cfg["resnet_groups"],
    )
    model.load_state_dict(load_file(path), strict=True)
    model.eval()
    g = torch.Generator().manual_seed(0)
    side = 2 ** (len(cfg["dim_mults"]) - 1) * 4
    x = torch.randn(2, cfg["channels"], 1, side, side, generator=g)
    t = torch.tensor([5.0, 120.0])
    cond = None
    if cfg["cond_dim"] is not None:
        cond = torch.rand(2, cfg["cond_dim"], generator=g)
    with torch.no_grad():
        out = model(x, t, cond)
    print(f"{path}: strict load ok, {sum(p.numel() for p in model.parameters())} parameters, "
          f"output {tuple(out.shape)}")
    if len(sys.argv) > 2:
        tensors = {"x": x, "t": t, "out": out}
        if cond is not None:
            tensors["cond"] = cond
        save_file({k: v.contiguous() for k, v in tensors.items()}, sys.argv[2])


if __name__ == "__main__":
    main()
