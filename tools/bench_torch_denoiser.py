#!/usr/bin/env python3
"""Times the PyTorch reference of the CLAIM-size denoiser on this machine,
for comparison with `cargo bench --bench denoiser`: one forward at batch 1
and batch 8 (1x1x72x72 items, t = 150, a histogram condition) and one
RePaint step at batch 1 (re-noise the known region, predict the noise,
ancestral step, normal draws included). Prints median and minimum over
--reps runs after two warm-up runs, and the peak resident memory.
`--batches 1` skips batch 8, so the peak memory is that of the batch-1
forward (compare with the Rust bench run as `-- 'batch 1'`).

Usage: python3 tools/bench_torch_denoiser.py [--threads N] [--reps R] [--batches 1,8]
Requirements: torch, numpy (from PyPI).
"""
import argparse
import os
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from denoiser_reference import claim_model  # noqa: E402
from repaint_reference import cosine_schedule, repaint_step  # noqa: E402


def timed(label, fn, reps):
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"{label}: median {1e3 * times[len(times) // 2]:.1f} ms, min {1e3 * times[0]:.1f} ms over {reps}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--reps", type=int, default=10, help="timed runs per case")
    ap.add_argument("--batches", default="1,8", help="forward batch sizes, comma-separated (default 1,8)")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = claim_model().eval()
    print(f"pytorch {torch.__version__}, {torch.get_num_threads()} threads")
    with torch.no_grad():
        for batch in batches:
            x = torch.randn(batch, 1, 1, 72, 72)
            t = torch.full((batch,), 150, dtype=torch.int64)
            cond = torch.full((batch, 16), 1.0 / 16.0)
            timed(f"CLAIM forward {batch}x1x1x72x72", lambda: model(x, t, cond), args.reps)

    # One RePaint step at t = 150; a disc of radius 24 pixels is generated.
    sch = cosine_schedule()
    yy, xx = torch.meshgrid(torch.arange(72) - 35.5, torch.arange(72) - 35.5, indexing="ij")
    known = (yy * yy + xx * xx >= 24.0 ** 2).float().reshape(1, 1, 1, 72, 72)
    gt = (0.3 * torch.randn(1, 1, 1, 72, 72)).clamp(-1, 1)
    start = torch.randn(1, 1, 1, 72, 72)
    cond = torch.full((1, 16), 1.0 / 16.0)

    def step():
        z_known = torch.randn_like(start)
        z_step = torch.randn_like(start)
        return repaint_step(model, sch, start, gt, known, cond, 150, z_known, z_step)

    timed("CLAIM RePaint step 1x1x1x72x72", step, args.reps)
    # Peak resident memory of this process (torch runtime, weights, the largest forward); Linux reports KiB.
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
