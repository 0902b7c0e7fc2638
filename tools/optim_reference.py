#!/usr/bin/env python3
"""PyTorch reference trajectories for claim's optimisers (src/train/optim.rs).

Writes tests/fixtures/optim/optim.safetensors: two parameters (a [3, 4]
matrix and a [5] vector), a fixed sequence of 6 gradients for each, and the
parameters after every step of

* torch.optim.Adam(lr=1e-2, weight_decay=1e-2)           -> `adam.<step>.<p>`
* torch.optim.AdamW(lr=1e-2, weight_decay=1e-2)          -> `adamw.<step>.<p>`
* torch.optim.SGD(lr=1e-2, momentum=0.99, nesterov=True,
                  weight_decay=3e-5)                      -> `sgd.<step>.<p>`

with the gradients clipped by torch.nn.utils.clip_grad_norm_(max_norm=1.0)
before each step (so clipping is checked too), and the learning rate
following nnU-Net's poly schedule lr·(1 − step/6)^0.9. The vector gets no
gradient at step 2 (p.grad = None), which PyTorch skips: its per-parameter
state then lags the matrix's by one step.

Usage: python tools/optim_reference.py   (needs torch, safetensors)
"""
import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "optim", "optim.safetensors")
STEPS = 6


def main():
    g = torch.Generator().manual_seed(0)
    init = {
        "matrix": torch.randn(3, 4, generator=g),
        "vector": torch.randn(5, generator=g),
    }
    grads = [
        {k: torch.randn(v.shape, generator=g) * (0.5 + s) for k, v in init.items()}
        for s in range(STEPS)
    ]
    out = {f"init.{k}": v.clone() for k, v in init.items()}
    for s in range(STEPS):
        for k, v in grads[s].items():
            out[f"grad.{s}.{k}"] = v.clone()
    makers = {
        "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-2),
        "sgd": lambda ps: torch.optim.SGD(
            ps, lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5
        ),
    }
    for name, make in makers.items():
        params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
        opt = make(list(params.values()))
        for s in range(STEPS):
            for k, p in params.items():
                p.grad = None if (k == "vector" and s == 2) else grads[s][k].clone()
            torch.nn.utils.clip_grad_norm_(
                [p for p in params.values() if p.grad is not None], max_norm=1.0
            )
            for group in opt.param_groups:
                group["lr"] = 1e-2 * (1 - s / STEPS) ** 0.9
            opt.step()
            for k, p in params.items():
                out[f"{name}.{s}.{k}"] = p.detach().clone()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, OUT)
    print(f"wrote {OUT} ({len(out)} tensors) with torch {torch.__version__}")


if __name__ == "__main__":
    main()
