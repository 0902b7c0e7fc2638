#!/usr/bin/env python3
"""PyTorch reference of the 3-D convolutions (`Tensor::conv3d`,
`Tensor::conv_transpose3d`).

* Default action: runs `torch.nn.functional.conv3d` / `conv_transpose3d` on
  small seeded random cases — the kernels, strides and paddings of nnU-Net's
  3D PlainConvUNet plus general ones, odd sizes — and writes inputs, weights,
  biases and outputs to tests/fixtures/ops/conv3d.safetensors, which
  tests/conv3d_golden.rs checks.
* --time: times an nnU-Net-like 3D stage conv ([1,32,32,64,64], 3x3x3,
  32->32, padding 1) and its kernel = stride (2,2,2) transposed conv
  (64 -> 32 channels from [1,64,16,32,32]) on this machine's CPU
  (--threads N, default 2), for comparison with
  `cargo test --release --test engine conv3d_golden -- --ignored --nocapture`
  (`RAYON_NUM_THREADS=N`).

Each case `NAME` stores `NAME.x`, `NAME.weight`, optionally `NAME.bias`,
`NAME.stride` and `NAME.pad` (3 values each, as f32) and `NAME.out`. Names
start with `conv3d_` or `conv_transpose3d_`.

Requirements: torch, safetensors, numpy (all from PyPI).
"""
import argparse
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "tests", "fixtures", "ops", "conv3d.safetensors")

# name, transposed, x shape [B, C, D, H, W], out channels, kernel, stride, pad, bias
CASES = [
    ("conv3d_k333_s111", False, [2, 3, 5, 7, 9], 4, (3, 3, 3), (1, 1, 1), (1, 1, 1), True),
    ("conv3d_k333_s122", False, [2, 3, 5, 7, 9], 4, (3, 3, 3), (1, 2, 2), (1, 1, 1), False),
    ("conv3d_k333_s222", False, [1, 3, 5, 7, 9], 5, (3, 3, 3), (2, 2, 2), (1, 1, 1), True),
    ("conv3d_k133_s111", False, [2, 3, 5, 7, 9], 4, (1, 3, 3), (1, 1, 1), (0, 1, 1), True),
    ("conv3d_k133_s122", False, [1, 4, 5, 7, 9], 3, (1, 3, 3), (1, 2, 2), (0, 1, 1), False),
    ("conv3d_k111", False, [2, 5, 5, 7, 9], 3, (1, 1, 1), (1, 1, 1), (0, 0, 0), True),
    ("conv3d_k111_nobias", False, [1, 4, 3, 5, 7], 2, (1, 1, 1), (1, 1, 1), (0, 0, 0), False),
    # Frames of at least 16x16: the per-frame Winograd route of 3x3x3 convs.
    ("conv3d_k333_s111_frames18x20", False, [1, 3, 3, 18, 20], 4, (3, 3, 3), (1, 1, 1), (1, 1, 1), True),
    # An uneven kernel with unequal strides and paddings.
    ("conv3d_k235_mixed", False, [1, 2, 6, 7, 9], 3, (2, 3, 5), (2, 1, 3), (0, 1, 2), True),
    # nnU-Net's decoder upsampling (kernel = stride, no padding).
    ("conv_transpose3d_k222_s222", True, [2, 4, 3, 4, 5], 3, (2, 2, 2), (2, 2, 2), (0, 0, 0), True),
    ("conv_transpose3d_k122_s122", True, [1, 4, 5, 4, 3], 3, (1, 2, 2), (1, 2, 2), (0, 0, 0), True),
    # A general transposed conv (overlapping kernels, padding).
    ("conv_transpose3d_k333_s222_p111", True, [1, 4, 3, 4, 5], 3, (3, 3, 3), (2, 2, 2), (1, 1, 1), False),
]


def make_cases():
    gen = torch.Generator().manual_seed(20250605)
    tensors = {}
    for name, transposed, xs, c_out, k, s, p, has_bias in CASES:
        c_in = xs[1]
        x = torch.randn(xs, generator=gen)
        wshape = [c_in, c_out, *k] if transposed else [c_out, c_in, *k]
        # Scaled like a default-initialised layer, so outputs are O(1).
        fan_in = (c_out if transposed else c_in) * k[0] * k[1] * k[2]
        w = torch.randn(wshape, generator=gen) / fan_in**0.5
        b = torch.randn([c_out], generator=gen) if has_bias else None
        with torch.no_grad():
            if transposed:
                out = F.conv_transpose3d(x, w, b, stride=s, padding=p)
            else:
                out = F.conv3d(x, w, b, stride=s, padding=p)
        tensors[f"{name}.x"] = x
        tensors[f"{name}.weight"] = w
        if b is not None:
            tensors[f"{name}.bias"] = b
        tensors[f"{name}.stride"] = torch.tensor(s, dtype=torch.float32)
        tensors[f"{name}.pad"] = torch.tensor(p, dtype=torch.float32)
        tensors[f"{name}.out"] = out
        print(f"{name}: x {list(x.shape)} weight {list(w.shape)} -> {list(out.shape)}")
    return tensors


def best_of(fn, reps):
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_stage(threads, reps):
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([1, 32, 32, 64, 64], generator=gen)
    w = torch.randn([32, 32, 3, 3, 3], generator=gen) / (32 * 27) ** 0.5
    b = torch.randn([32], generator=gen)
    xt = torch.randn([1, 64, 16, 32, 32], generator=gen)
    wt = torch.randn([64, 32, 2, 2, 2], generator=gen) / 8**0.5
    with torch.inference_mode():
        conv = best_of(lambda: F.conv3d(x, w, b, padding=1), reps)
        up = best_of(lambda: F.conv_transpose3d(xt, wt, b, stride=2), reps)
    print(f"torch {torch.__version__}, {threads} threads, best of {reps}:")
    print(f"  conv3d [1,32,32,64,64] 3x3x3 32->32 pad 1: {conv * 1e3:.1f} ms")
    print(f"  conv_transpose3d [1,64,16,32,32] k=s=2 64->32: {up * 1e3:.1f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", action="store_true", help="time an nnU-Net-like 3D stage instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    if args.time:
        time_stage(args.threads, args.reps)
        return
    tensors = make_cases()
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, FIXTURE)
    print(f"wrote {os.path.normpath(FIXTURE)} ({os.path.getsize(FIXTURE)} bytes)")


if __name__ == "__main__":
    main()
