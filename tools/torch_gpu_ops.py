#!/usr/bin/env python3
"""PyTorch fp16 timings of the ops in claim's GPU benchmark list, on the
same GPU, as the anchor for tools/gpu_check.sh's table.

Each case mirrors one entry of `claim::nn::op_harness::gpu_bench_cases()`
(same name, same shapes): fp16 tensors for the network ops, fp32 for the
sampler state (as claim keeps it). Times are medians of CUDA-event timings
after warm-up. Prints one JSON object per line: {"name", "torch_ms"}.

Usage: python3 tools/torch_gpu_ops.py [--repeats N]
"""
import argparse
import json
import math

import torch
import torch.nn.functional as F


def median_ms(fn, repeats):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def cases(dev):
    h, f = torch.float16, torch.float32

    def r(*shape, dtype=h):
        return torch.randn(*shape, device=dev, dtype=dtype)

    x = r(8, 72, 1, 72, 72)
    out = {}
    out["silu"] = lambda: F.silu(x)
    g = r(8, 288)
    out["gelu"] = lambda: F.gelu(g)
    b = r(8, 72, 1, 1, 1)
    out["add_broadcast"] = lambda: x + b
    y = r(8, 144, 1, 36, 36)
    gw, gb = r(144), r(144)
    sc, sh = r(8, 144, 1, 1, 1), r(8, 144, 1, 1, 1)
    res = r(8, 144, 1, 36, 36)
    out["group_norm_silu_film_residual"] = (
        lambda: F.silu(F.group_norm(y, 8, gw, gb, 1e-5) * (sc + 1) + sh) + res
    )
    z = r(2, 32, 256, 256)
    iw, ib = r(32), r(32)
    out["instance_norm_leaky_relu"] = lambda: F.leaky_relu(
        F.instance_norm(z, weight=iw, bias=ib, eps=1e-5), 0.01
    )
    gamma = r(1, 72, 1, 1, 1)

    def layer_norm_channels():
        var, mean = torch.var_mean(x.float(), dim=1, unbiased=False, keepdim=True)
        return ((x.float() - mean) / (var + 1e-5).sqrt()).half() * gamma

    out["layer_norm_channels"] = layer_norm_channels
    s = r(64, 32, 5184)
    out["softmax"] = lambda: torch.softmax(s.float(), dim=1).half()
    wq = r(768, 72, 1, 1, 1)
    out["conv1x1_qkv"] = lambda: F.conv3d(x, wq)
    a, w = r(4096, 4096), r(4096, 4096)
    bias = r(4096)
    out["linear_4096"] = lambda: F.linear(a, w, bias)
    out["cat_channels"] = lambda: torch.cat([x, x], dim=1)
    im = r(1, 4, 128, 128)
    out["flip_hw"] = lambda: torch.flip(im, dims=[2, 3])
    state = r(8, 1, 1, 72, 72, dtype=f)
    gt, known = r(8, 1, 1, 72, 72, dtype=f), (r(8, 1, 1, 72, 72, dtype=f) > 0).float()
    out["normal_noise"] = lambda: torch.randn(8, 1, 1, 72, 72, device=dev)
    noise = r(8, 1, 1, 72, 72, dtype=f)
    out["known_blend"] = lambda: known * (0.7 * gt + 0.71 * noise) + (1 - known) * state
    eps = r(8, 1, 1, 72, 72, dtype=f)
    out["ancestral_step"] = (
        lambda: 0.9 * (1.3 * state - 0.4 * eps).clamp(-1, 1) + 0.1 * state + 0.05 * noise
    )
    t = torch.full((8,), 150.0, device=dev)

    def sinusoidal():
        half = 36
        freqs = torch.exp(torch.arange(half, device=dev) * -(math.log(10000) / (half - 1)))
        e = t[:, None] * freqs[None]
        return torch.cat([e.sin(), e.cos()], dim=-1).half()

    out["sinusoidal_embedding"] = sinusoidal
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    for name, fn in cases(dev).items():
        print(json.dumps({"name": name, "torch_ms": round(median_ms(fn, args.repeats), 5)}))


if __name__ == "__main__":
    main()
