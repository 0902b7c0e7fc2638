#!/usr/bin/env python3
"""PyTorch fp16 (autocast) timings of upstream's denoiser network and RePaint
loop on the same GPU as claim's model benchmark (tests/engine/gpu.rs,
`gpu_model_bench_or_skipped`), for tools/gpu_check.sh's table.

The network is tools/denoiser_reference.py's Unet3D (written from
shared/reference/denoiser.md), with random weights, run as upstream runs
it: fp32 weights under torch.autocast(float16), eager. Cases (names match
claim's):

* claim_2d_forward_b{1,16,64}: CLAIM's model (C1, cond 16) on [B,1,1,72,72];
* lefusion_3d_forward_b1: LeFusion's EMIDEC model (C2, cond 32), one
  72x72x10 window;
* repaint_5_5_b16: RePaint 5/5 (t_T 300, 1480 evaluations) over 16 slices.
  The first `--repaint-steps` sampler steps are timed and scaled to the
  whole schedule (every step costs one network evaluation plus the same
  element-wise work), so this anchor stays short.

It also measures the GPU's dense fp16 tensor-core rate (an 8192^3 matmul)
and each network's FLOPs per item (torch.utils.flop_counter), so the table
can report achieved TFLOP/s. Times are medians of CUDA-event timings after
warm-up. Prints one JSON object per line.

Usage: python3 tools/torch_gpu_denoiser.py [--repeats N] [--repaint-steps N]
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from denoiser_reference import Unet3D  # noqa: E402
from repaint_reference import cosine_schedule, jump_schedule  # noqa: E402
from torch_gpu_ops import median_ms  # noqa: E402


def model(channels, cond_dim, dev):
    torch.manual_seed(0)
    return Unet3D(dim=72, dim_mults=(1, 2, 4, 8), channels=channels, cond_dim=cond_dim, heads=8, dim_head=32).to(dev).eval()


def flops_per_item(net, channels, cond_dim, frames, dev):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, channels, frames, 72, 72, device=dev)
    t = torch.tensor([150], device=dev)
    cond = torch.rand(1, cond_dim, device=dev)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, t, cond)
    return counter.get_total_flops()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--repaint-steps", type=int, default=100)
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    emit = lambda **row: print(json.dumps(row), flush=True)

    a = torch.randn(8192, 8192, device=dev, dtype=torch.float16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.float16)
    ms = median_ms(lambda: a @ b, 10)
    emit(kind="peak", name="fp16_matmul_8192", torch_ms=ms, tflops=2 * 8192**3 / ms / 1e9)
    del a, b

    layouts = [("claim_2d", 1, 16, 1, [1, 16, 64]), ("lefusion_3d", 2, 32, 10, [1])]
    for name, channels, cond_dim, frames, batches in layouts:
        net = model(channels, cond_dim, dev)
        flops = flops_per_item(net, channels, cond_dim, frames, dev)
        emit(kind="flops", name=name, flops_per_item=flops)
        for batch in batches:
            x = torch.randn(batch, channels, frames, 72, 72, device=dev)
            t = torch.randint(0, 300, (batch,), device=dev)
            cond = torch.rand(batch, cond_dim, device=dev)

            def forward():
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
                    net(x, t, cond)

            emit(kind="bench", name=f"{name}_forward_b{batch}", torch_ms=median_ms(forward, args.repeats),
                 flops=flops * batch)
        del net
        torch.cuda.empty_cache()

    # RePaint 5/5 over 16 slices: the first steps of the schedule, timed
    # with CUDA events, scaled to the whole schedule.
    net = model(1, 16, dev)
    sch = {k: v.to(dev) for k, v in cosine_schedule(300).items()}
    times = jump_schedule(300, 5, 5)
    evaluations = sum(1 for t_last, t_cur in zip(times[:-1], times[1:]) if t_cur < t_last)
    batch = 16
    gt = (0.3 * torch.randn(batch, 1, 1, 72, 72, device=dev)).clamp(-1, 1)
    yy, xx = torch.meshgrid(torch.arange(72, device=dev) - 35.5, torch.arange(72, device=dev) - 35.5, indexing="ij")
    known = ((yy**2 + xx**2) >= 144).float().expand(batch, 1, 1, 72, 72).contiguous()
    cond = torch.full((batch, 16), 1.0 / 16, device=dev)
    x = torch.randn_like(gt)
    steps = [(tl, tc) for tl, tc in zip(times[:-1], times[1:])][: args.repaint_steps]

    def at(buf, tt):
        return buf[tt].reshape(-1, 1, 1, 1, 1)

    def step(x, t):
        # RePaint's step as upstream composes it (tools/repaint_reference.py).
        tt = torch.full((batch,), t, dtype=torch.int64, device=dev)
        noised = at(sch["sqrt_alphas_cumprod"], tt) * gt + at(sch["sqrt_one_minus_alphas_cumprod"], tt) * torch.randn_like(x)
        x = known * noised + (1 - known) * x
        with torch.no_grad():
            eps = net(x, tt, cond).float()
        x0 = (at(sch["sqrt_recip_alphas_cumprod"], tt) * x - at(sch["sqrt_recipm1_alphas_cumprod"], tt) * eps).clamp(-1, 1)
        mean = at(sch["posterior_mean_coef1"], tt) * x0 + at(sch["posterior_mean_coef2"], tt) * x
        return mean + (t != 0) * (0.5 * at(sch["posterior_log_variance_clipped"], tt)).exp() * torch.randn_like(x)

    def run():
        nonlocal x
        with torch.autocast("cuda", dtype=torch.float16):
            for t_last, t_cur in steps:
                if t_cur < t_last:
                    x = step(x, t_last)
                else:
                    beta = sch["betas"][min(t_last + 1, 299)]
                    x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn_like(x)

    ms = median_ms(run, 3)
    counted = sum(1 for tl, tc in steps if tc < tl)
    total_ms = ms * evaluations / counted
    emit(kind="bench", name="repaint_5_5_b16", torch_ms=total_ms, evaluations=evaluations,
         timed_evaluations=counted, per_slice_s=total_ms / 1e3 / batch)


if __name__ == "__main__":
    main()
