#!/usr/bin/env python3
"""PyTorch reference of two-channel (scar + MVO) 3-D synthesis, LeFusion-EMIDEC style.

Written from shared/reference/denoiser.md and diffusion.md plus the facts of
issue 12 (not from upstream source). It writes, under tests/fixtures/synthesis/:

* `twochan_lefusion.pt`: a tiny two-channel 3-D denoiser (dim 8, mults
  (1, 2), C 2, cond 32 = 16 per channel, 2 heads x 8) saved the way a
  LeFusion trainer saves checkpoints: `torch.save({'step', 'model', 'ema',
  'scaler'})`, where `model` / `ema` are state dicts of the diffusion wrapper
  (keys under `denoise_fn.` plus the float32 schedule buffers). `ema` holds
  other weights than `model` so a test can tell which one was imported.
* `twochan_repaint.safetensors`: one full RePaint run of the `model`
  weights on a small case, with the noise the Rust sampler draws (its
  counter-based Philox4x32-10 generator, reimplemented below), composed as
  upstream composes two-channel output:
  - the case: `image` and `labels` as volumes [k][j][i] = 3 x 16 x 16
    (f32; labels 0-4, EMIDEC scheme), LV cavity centred at (8, 8);
  - preprocessing: the whole volume min-max scaled to [-1, 1], then
    zero-padded to F = 4 frames (torchio CropOrPad: ceil(1/2) = 1 padding
    frame first, value 0, label 0), repeated on both channels;
  - known region: voxels neither label 3 nor 4 (on both channels);
  - sampler: t_T, L, R = `jump` (300, 20, 2: 580 network evaluations),
    condition `cond` (32 values, not perturbed), seed `seed`, item 0;
  - `final`: [F, H, W] = ch0 * [label 3] + ch1 * [label 4] + ch0 * [known];
  - `expected`: `final` of the 3 real frames scaled back to the image's
    range (what `claim synth --keep-network-output` writes).

Noise (see src/backend/philox.rs): element e of item `item` under
(seed, stream, step) is lane e % 4 of Philox4x32-10 with key
[seed lo, seed hi] and counter [e / 4, item, step, stream], through
Box-Muller on lane pairs (0, 1) and (2, 3). Streams: START 0 (x_T at step
0), KNOWN 1, REVERSE 2, JUMP 3 at step i + 1 for the i-th pair of the time
list. numpy's log/cos/sin differ from the library's own f32 routines by a
few ulp, far below the test's 1e-4 tolerance.

Requirements: torch, safetensors, numpy. Run from anywhere:
    python tools/twochan_reference.py
"""
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from denoiser_reference import Unet3D, randomise  # noqa: E402
from repaint_reference import at, cosine_schedule, jump_schedule  # noqa: E402

OUT = os.path.join(HERE, "..", "tests", "fixtures", "synthesis")

M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK32 = np.uint64(0xFFFFFFFF)
START, KNOWN, REVERSE, JUMP = 0, 1, 2, 3


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Vectorised Philox4x32-10 over uint64 arrays holding 32-bit words."""
    c = [np.asarray(v, dtype=np.uint64) & MASK32 for v in (c0, c1, c2, c3)]
    k = [np.uint64(k0), np.uint64(k1)]
    for r in range(10):
        if r > 0:
            k = [(k[0] + np.uint64(W0)) & MASK32, (k[1] + np.uint64(W1)) & MASK32]
        p0 = np.uint64(M0) * c[0]
        p1 = np.uint64(M1) * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & MASK32
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
    return c


def box_muller(xa, xb):
    u1 = ((xa >> np.uint64(8)) + np.uint64(1)).astype(np.float32) * np.float32(2.0 ** -24)
    r = np.sqrt(np.maximum(np.float32(-2.0) * np.log(u1), np.float32(0.0)))
    theta = (xb >> np.uint64(8)).astype(np.float64) * (2.0 * math.pi / 2.0 ** 24)
    return (r * np.cos(theta).astype(np.float32)), (r * np.sin(theta).astype(np.float32))


def philox_normals(seed, stream, step, item, n):
    """The first n normals of `item` under (seed, stream, step), float32."""
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    x = philox4x32_10(blocks, item, step, stream, seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)
    a, b = box_muller(x[0], x[1])
    c, d = box_muller(x[2], x[3])
    return np.stack([a, b, c, d], axis=1).reshape(-1)[:n].astype(np.float32)


def check_philox():
    """The library's pinned bits: seed 42, item 3, stream 1, step 7."""
    golden = [0xbe2c775c, 0xbf8c50a9, 0x3fdf0845, 0xbfad52d0, 0x3dd11ade, 0x3e8162ee, 0x3d9092a7, 0xbf4d1128]
    want = np.array(golden, dtype=np.uint32).view(np.float32)
    got = philox_normals(42, 1, 7, 3, 8)
    assert np.allclose(got, want, rtol=1e-6, atol=1e-6), (got, want)


def tiny_model():
    return Unet3D(dim=8, dim_mults=(1, 2), channels=2, cond_dim=32, heads=2, dim_head=8)


class Diffusion(torch.nn.Module):
    """The trainer's wrapper: owns the U-Net as `denoise_fn` and the
    schedule buffers (float32), so state-dict keys look like upstream's."""

    def __init__(self, denoise_fn):
        super().__init__()
        self.denoise_fn = denoise_fn
        for name, value in cosine_schedule().items():
            self.register_buffer(name, value)


def case():
    """A 16 x 16 x 3 volume, LV cavity square centred on (8, 8), a ring of
    myocardium, scar with an MVO core on every slice."""
    gen = torch.Generator().manual_seed(7)
    nk, n = 3, 16
    labels = torch.zeros(nk, n, n, dtype=torch.int64)
    jj, ii = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    r = ((ii - 8.0) ** 2 + (jj - 8.0) ** 2).sqrt()
    for k in range(nk):
        lab = labels[k]
        lab[(r >= 3) & (r < 5.5)] = 2
        lab[(r >= 3) & (r < 5.5) & (ii >= 8 + k - 1)] = 3
        lab[(r >= 3.8) & (r < 4.8) & (ii >= 10) & (jj >= 7)] = 4
        lab[(ii >= 7) & (ii <= 9) & (jj >= 7) & (jj <= 9)] = 1
    image = 100.0 + 40.0 * torch.rand(nk, n, n, generator=gen)
    image[labels == 1] += 150.0
    image[labels == 3] += 250.0
    return image.float(), labels


def repaint_run(model, image, labels, cond, seed, jump, frames):
    sch = cosine_schedule()
    nk, h, w = image.shape
    lo, hi = image.min(), image.max()
    scaled = 2.0 * (image - lo) / (hi - lo) - 1.0
    pad = frames - nk
    before = (pad + 1) // 2
    gt1 = torch.zeros(frames, h, w)
    lab = torch.zeros(frames, h, w, dtype=torch.int64)
    gt1[before:before + nk] = scaled
    lab[before:before + nk] = labels
    gt = gt1.unsqueeze(0).repeat(2, 1, 1, 1).unsqueeze(0)  # [1, 2, F, H, W]
    known = ((lab != 3) & (lab != 4)).float().unsqueeze(0).unsqueeze(0)  # broadcast over channels
    shape = (1, 2, frames, h, w)
    count = int(np.prod(shape))

    def noise(stream, step):
        return torch.from_numpy(philox_normals(seed, stream, step, 0, count)).reshape(shape)

    times = jump_schedule(*jump)
    x = noise(START, 0)
    evaluations = 0
    for i, (t_last, t_cur) in enumerate(zip(times[:-1], times[1:])):
        step = i + 1
        tt = torch.full((1,), t_last, dtype=torch.int64)
        if t_cur < t_last:
            noised = at(sch["sqrt_alphas_cumprod"], tt, x) * gt + at(sch["sqrt_one_minus_alphas_cumprod"], tt, x) * noise(KNOWN, step)
            x = known * noised + (1 - known) * x
            with torch.no_grad():
                eps = model(x, tt, cond)
            evaluations += 1
            x0 = (at(sch["sqrt_recip_alphas_cumprod"], tt, x) * x - at(sch["sqrt_recipm1_alphas_cumprod"], tt, x) * eps).clamp(-1.0, 1.0)
            mean = at(sch["posterior_mean_coef1"], tt, x) * x0 + at(sch["posterior_mean_coef2"], tt, x) * x
            nonzero = float(t_last != 0)
            x = mean + nonzero * (0.5 * at(sch["posterior_log_variance_clipped"], tt, x)).exp() * noise(REVERSE, step)
        else:
            beta = sch["betas"][t_last + 1]
            x = (1 - beta).sqrt() * x + beta.sqrt() * noise(JUMP, step)
    m3 = (lab == 3).float()
    m4 = (lab == 4).float()
    final = x[0, 0] * m3 + x[0, 1] * m4 + x[0, 0] * known[0, 0]
    expected = lo + (final[before:before + nk] + 1.0) / 2.0 * (hi - lo)
    return final, expected, evaluations


def main():
    check_philox()
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(12)
    gen = torch.Generator().manual_seed(13)
    model = tiny_model().eval()
    randomise(model, gen, torch.float32)
    ema = tiny_model().eval()
    ema.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, p in ema.state_dict().items():
            if not name.endswith("freqs"):
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
    ckpt = {
        "step": 1234,
        "model": Diffusion(model).state_dict(),
        "ema": Diffusion(ema).state_dict(),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                   "growth_interval": 2000, "_growth_tracker": 0},
    }
    pt = os.path.join(OUT, "twochan_lefusion.pt")
    torch.save(ckpt, pt)
    n = sum(p.numel() for p in model.parameters())
    print(f"{pt}: {n} parameters, {os.path.getsize(pt)} bytes")

    image, labels = case()
    cond = torch.rand(1, 32, generator=gen)
    cond = torch.cat([cond[:, :16] / cond[:, :16].sum(), cond[:, 16:] / cond[:, 16:].sum()], dim=1)
    seed, jump, frames = 77, (300, 20, 2), 4
    final, expected, evaluations = repaint_run(model, image, labels, cond, seed, jump, frames)
    out = {
        "image": image,
        "labels": labels.float(),
        "cond": cond[0],
        "seed": torch.tensor([seed], dtype=torch.int64),
        "jump": torch.tensor(jump, dtype=torch.int64),
        "frames": torch.tensor([frames], dtype=torch.int64),
        "final": final,
        "expected": expected,
    }
    path = os.path.join(OUT, "twochan_repaint.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    print(f"{path}: {evaluations} network evaluations, final range [{final.min():.3f}, {final.max():.3f}], "
          f"{os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
