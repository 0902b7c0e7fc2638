#!/usr/bin/env python3
"""PyTorch reference of the CLAIM / LeFusion sampler (RePaint with jumps).

Written from shared/reference/diffusion.md (not from upstream source). It
writes tests/fixtures/synthesis/repaint_steps.safetensors, the golden case of
`tests/engine/synthesis.rs`:

* the cosine schedule buffers (T = 300): `betas`, `alphas_cumprod`,
  `posterior_log_variance_clipped`, `posterior_mean_coef1/2`;
* jump time lists (`jump_<tT>_<L>_<R>`, int64) for a few small cases;
* one RePaint denoising step with the small CLAIM-like network of
  tests/fixtures/denoiser/unet2d_weights.safetensors at t = 137 and at t = 0:
  known region re-noised with `z_known`, one network evaluation, ancestral
  step with `z_step` (inputs `x`, `gt`, `known`, `cond`; outputs
  `step137`, `step0`), plus the same step with classifier-free guidance
  scale 3 (`step137_guided`);
* one jump back up from t = 137 with `z_up` (`up137`).

Requirements: torch, safetensors, numpy. Run from anywhere:
    python tools/repaint_reference.py
"""
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from denoiser_reference import Unet3D  # noqa: E402

ROOT = os.path.join(HERE, "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "synthesis")


def cosine_schedule(T=300, s=0.008):
    """Buffers as float32 tensors, computed in float64 (spec: Noise schedule)."""
    x = np.linspace(0, T, T + 1, dtype=np.float64)
    ac = np.cos(((x / T) + s) / (1 + s) * math.pi * 0.5) ** 2
    ac = ac / ac[0]
    betas = np.clip(1 - (ac[1:] / ac[:-1]), 0, 0.9999)
    alphas = 1.0 - betas
    acp = np.cumprod(alphas)
    acp_prev = np.append(1.0, acp[:-1])
    post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
    f32 = lambda a: torch.tensor(a, dtype=torch.float32)
    return {
        "betas": f32(betas),
        "alphas_cumprod": f32(acp),
        "sqrt_alphas_cumprod": f32(np.sqrt(acp)),
        "sqrt_one_minus_alphas_cumprod": f32(np.sqrt(1.0 - acp)),
        "sqrt_recip_alphas_cumprod": f32(np.sqrt(1.0 / acp)),
        "sqrt_recipm1_alphas_cumprod": f32(np.sqrt(1.0 / acp - 1)),
        "posterior_log_variance_clipped": f32(np.log(np.maximum(post_var, 1e-20))),
        "posterior_mean_coef1": f32(betas * np.sqrt(acp_prev) / (1.0 - acp)),
        "posterior_mean_coef2": f32((1.0 - acp_prev) * np.sqrt(alphas) / (1.0 - acp)),
    }


def jump_schedule(t_T, jump_length, jump_n_sample):
    jumps = {j: jump_n_sample - 1 for j in range(0, t_T - jump_length, jump_length)}
    t, ts = t_T, []
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                ts.append(t)
    ts.append(-1)
    return ts


def at(buf, t, x):
    return buf[t].reshape(-1, *([1] * (x.dim() - 1)))


def repaint_step(model, sch, x, gt, known, cond, t, z_known, z_step, guidance=1.0):
    """Known region re-noised to level t, then one ancestral step at t."""
    tt = torch.full((x.shape[0],), t, dtype=torch.int64)
    noised = at(sch["sqrt_alphas_cumprod"], tt, x) * gt + at(sch["sqrt_one_minus_alphas_cumprod"], tt, x) * z_known
    x = known * noised + (1 - known) * x
    with torch.no_grad():
        eps = model.forward_with_cond_scale(x, tt, cond, guidance)
    x0 = at(sch["sqrt_recip_alphas_cumprod"], tt, x) * x - at(sch["sqrt_recipm1_alphas_cumprod"], tt, x) * eps
    x0 = x0.clamp(-1.0, 1.0)
    mean = at(sch["posterior_mean_coef1"], tt, x) * x0 + at(sch["posterior_mean_coef2"], tt, x) * x
    nonzero = (tt != 0).float().reshape(-1, *([1] * (x.dim() - 1)))
    return mean + nonzero * (0.5 * at(sch["posterior_log_variance_clipped"], tt, x)).exp() * z_step


def main():
    os.makedirs(OUT, exist_ok=True)
    sch = cosine_schedule()
    cfg = dict(dim=8, dim_mults=(1, 2, 4), channels=1, cond_dim=16, heads=2, dim_head=8)
    model = Unet3D(**cfg).eval()
    sd = load_file(os.path.join(ROOT, "tests", "fixtures", "denoiser", "unet2d_weights.safetensors"))
    prefix = "module.denoise_fn."
    sd = {k[len(prefix):]: v.float() for k, v in sd.items() if k.startswith(prefix) and k != prefix + "betas"}
    model.load_state_dict(sd)

    gen = torch.Generator().manual_seed(23)
    shape = (2, 1, 1, 24, 24)
    x = torch.randn(shape, generator=gen)
    gt = torch.rand(shape, generator=gen) * 2 - 1
    known = (torch.rand(shape, generator=gen) > 0.3).float()
    cond = torch.rand(2, 16, generator=gen)
    cond = cond / cond.sum(dim=1, keepdim=True)
    z_known = torch.randn(shape, generator=gen)
    z_step = torch.randn(shape, generator=gen)
    z_up = torch.randn(shape, generator=gen)

    out = {k: sch[k] for k in ["betas", "alphas_cumprod", "posterior_log_variance_clipped",
                                "posterior_mean_coef1", "posterior_mean_coef2"]}
    out.update(x=x, gt=gt, known=known, cond=cond, z_known=z_known, z_step=z_step, z_up=z_up)
    out["step137"] = repaint_step(model, sch, x, gt, known, cond, 137, z_known, z_step)
    out["step0"] = repaint_step(model, sch, x, gt, known, cond, 0, z_known, z_step)
    out["step137_guided"] = repaint_step(model, sch, x, gt, known, cond, 137, z_known, z_step, guidance=3.0)
    beta = sch["betas"][138]
    out["up137"] = (1 - beta).sqrt() * x + beta.sqrt() * z_up
    for case in [(10, 1, 1), (10, 2, 2), (12, 3, 3), (20, 5, 5)]:
        out["jump_%d_%d_%d" % case] = torch.tensor(jump_schedule(*case), dtype=torch.int64)
    counts = {c: sum(1 for a, b in zip(jump_schedule(*c), jump_schedule(*c)[1:]) if b < a)
              for c in [(300, 1, 1), (300, 2, 2), (300, 5, 5), (300, 10, 10)]}
    print("network evaluations at t_T = 300:", counts)
    path = os.path.join(OUT, "repaint_steps.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    print(f"{path}: {len(out)} tensors, step137 |max| {out['step137'].abs().max():.3f}")


if __name__ == "__main__":
    main()
