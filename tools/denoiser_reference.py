#!/usr/bin/env python3
"""PyTorch reference of the LeFusion / CLAIM denoiser ("Unet3D").

Written from shared/reference/denoiser.md (not from upstream source). It

* builds small random-weight models, runs them on seeded inputs and writes
  the golden fixtures under tests/fixtures/denoiser/ (default action);
* writes the state-dict key/shape list of the full CLAIM configuration
  (dim 72, C 1, cond 16) to tests/fixtures/denoiser/claim_state_dict.json;
* with --time, times one CLAIM-size forward (1x1x1x72x72) on this machine;
* with --convert IN.pt OUT.safetensors, converts a LeFusion/CLAIM training
  checkpoint (a dict with `model` and `ema` state dicts, or a bare state
  dict) to safetensors for `claim::models::Denoiser::from_file`. Upstream
  inference uses `model`; pass --ema for the EMA weights. Key prefixes
  (`module.`, `denoise_fn.`) and schedule buffers are left for the Rust
  loader to strip and ignore. torch.load unpickles: convert only trusted files.

Requirements: torch, safetensors, numpy (all from PyPI).
"""
import argparse
import json
import math
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

EPS = 1e-5
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "denoiser")


class LayerNorm(nn.Module):
    """Normalise across channels at each position; gamma only."""

    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, c, 1, 1, 1))

    def forward(self, x):
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) / (var + EPS).sqrt() * self.gamma


class PreNorm(nn.Module):
    def __init__(self, c, fn):
        super().__init__()
        self.fn = fn
        self.norm = LayerNorm(c)

    def forward(self, x, **kw):
        return self.fn(self.norm(x), **kw)


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, **kw):
        return self.fn(x, **kw) + x


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        e = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -e)
        a = t.float()[:, None] * freqs[None, :]
        return torch.cat((a.sin(), a.cos()), dim=-1)


class Block(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.proj = nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1))
        self.norm = nn.GroupNorm(groups, cout)

    def forward(self, x, scale_shift=None):
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim=None, groups=8):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout * 2)) if emb_dim else None
        self.block1 = Block(cin, cout, groups)
        self.block2 = Block(cout, cout, groups)
        self.res_conv = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb=None):
        ss = None
        if self.mlp is not None and emb is not None:
            e = self.mlp(emb)[:, :, None, None, None]
            ss = e.chunk(2, dim=1)
        h = self.block1(x, ss)
        h = self.block2(h)
        return h + self.res_conv(x)


class SpatialLinearAttention(nn.Module):
    def __init__(self, c, heads, dim_head):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        hid = heads * dim_head
        self.to_qkv = nn.Conv2d(c, hid * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hid, c, 1)

    def forward(self, x):
        b, c, f, h, w = x.shape
        x = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        q, k, v = self.to_qkv(x).chunk(3, dim=1)
        q, k, v = (t.reshape(b * f, self.heads, self.dim_head, h * w) for t in (q, k, v))
        q = q.softmax(dim=-2) * self.dim_head ** -0.5
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        out = self.to_out(out.reshape(b * f, -1, h, w))
        return out.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


class RotaryEmbedding(nn.Module):
    def __init__(self, dim):
        super().__init__()
        freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.register_buffer("freqs", freqs)

    def rotate(self, t):
        n = t.shape[-2]
        ang = torch.arange(n, dtype=torch.float32)[:, None] * self.freqs[None, :]
        ang = ang.repeat_interleave(2, dim=-1)
        pairs = t.reshape(*t.shape[:-1], -1, 2)
        rot = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(t.shape)
        return t * ang.cos() + rot * ang.sin()


class Attention(nn.Module):
    def __init__(self, c, heads, dim_head, rotary=False):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        hid = heads * dim_head
        self.rotary_emb = RotaryEmbedding(dim_head) if rotary else None
        self.to_qkv = nn.Linear(c, hid * 3, bias=False)
        self.to_out = nn.Linear(hid, c, bias=False)

    def forward(self, x, pos_bias=None):
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(*t.shape[:-1], self.heads, self.dim_head).transpose(-2, -3) for t in (q, k, v))
        q = q * self.dim_head ** -0.5
        if self.rotary_emb is not None:
            q, k = self.rotary_emb.rotate(q), self.rotary_emb.rotate(k)
        sim = q @ k.transpose(-1, -2)
        if pos_bias is not None:
            sim = sim + pos_bias
        sim = sim - sim.amax(dim=-1, keepdim=True)
        out = sim.softmax(dim=-1) @ v
        out = out.transpose(-2, -3).reshape(*x.shape[:-1], -1)
        return self.to_out(out)


class Temporal(nn.Module):
    """b c f h w -> (b h w) f c, attend over frames, back."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, pos_bias=None):
        b, c, f, h, w = x.shape
        t = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, f, c)
        y = self.fn(t, pos_bias=pos_bias)
        return y.reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2)


class Spatial(nn.Module):
    """b c f h w -> (b f) (h w) c, attend over positions, back."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        b, c, f, h, w = x.shape
        t = x.permute(0, 2, 3, 4, 1).reshape(b * f, h * w, c)
        y = self.fn(t)
        return y.reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3)


class RelativePositionBias(nn.Module):
    def __init__(self, heads, num_buckets=32, max_distance=32):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def bucket(self, rel):
        half = self.num_buckets // 2
        n = -rel
        ret = (n < 0).long() * half
        n = n.abs()
        max_exact = half // 2
        large = max_exact + (torch.log(n.float() / max_exact) / math.log(self.max_distance / max_exact) * (half - max_exact)).long()
        large = torch.minimum(large, torch.full_like(large, half - 1))
        return ret + torch.where(n < max_exact, n, large)

    def forward(self, n):
        pos = torch.arange(n)
        rel = pos[None, :] - pos[:, None]  # key minus query
        return self.relative_attention_bias(self.bucket(rel)).permute(2, 0, 1)


class Unet3D(nn.Module):
    def __init__(self, dim, dim_mults=(1, 2, 4, 8), channels=1, cond_dim=None, heads=8, dim_head=32,
                 init_kernel_size=7, groups=8):
        super().__init__()
        self.channels = channels
        temporal = lambda c: Residual(PreNorm(c, Temporal(Attention(c, heads, dim_head, rotary=True))))
        self.time_rel_pos_bias = RelativePositionBias(heads)
        p = init_kernel_size // 2
        self.init_conv = nn.Conv3d(channels, dim, (1, init_kernel_size, init_kernel_size), padding=(0, p, p))
        self.init_temporal_attn = temporal(dim)
        dims = [dim] + [dim * m for m in dim_mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        time_dim = dim * 4
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))
        self.has_cond = cond_dim is not None
        if self.has_cond:
            self.null_cond_emb = nn.Parameter(torch.randn(1, cond_dim))
        emb = time_dim + (cond_dim or 0)
        spatial_lin = lambda c: Residual(PreNorm(c, SpatialLinearAttention(c, heads, dim_head)))
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        n = len(in_out)
        for i, (a, b) in enumerate(in_out):
            last = i >= n - 1
            self.downs.append(nn.ModuleList([
                ResnetBlock(a, b, emb, groups), ResnetBlock(b, b, emb, groups), spatial_lin(b), temporal(b),
                nn.Conv3d(b, b, (1, 4, 4), (1, 2, 2), (0, 1, 1)) if not last else nn.Identity()]))
        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, emb, groups)
        self.mid_spatial_attn = Residual(PreNorm(mid, Spatial(Attention(mid, heads, dim_head))))
        self.mid_temporal_attn = temporal(mid)
        self.mid_block2 = ResnetBlock(mid, mid, emb, groups)
        for i, (a, b) in enumerate(reversed(in_out)):
            last = i >= n - 1
            self.ups.append(nn.ModuleList([
                ResnetBlock(b * 2, a, emb, groups), ResnetBlock(a, a, emb, groups), spatial_lin(a), temporal(a),
                nn.ConvTranspose3d(a, a, (1, 4, 4), (1, 2, 2), (0, 1, 1)) if not last else nn.Identity()]))
        self.final_conv = nn.Sequential(ResnetBlock(dim * 2, dim, None, groups), nn.Conv3d(dim, channels, 1))

    def forward(self, x, t, cond=None):
        pos_bias = self.time_rel_pos_bias(x.shape[2])
        x = self.init_conv(x)
        r = x.clone()
        x = self.init_temporal_attn(x, pos_bias=pos_bias)
        e = self.time_mlp(t)
        if self.has_cond:
            if cond is None:
                cond = self.null_cond_emb.expand(x.shape[0], -1)
            e = torch.cat((e, cond), dim=-1)
        h = []
        for b1, b2, sa, ta, down in self.downs:
            x = b1(x, e)
            x = b2(x, e)
            x = sa(x)
            x = ta(x, pos_bias=pos_bias)
            h.append(x)
            x = down(x)
        x = self.mid_block1(x, e)
        x = self.mid_spatial_attn(x)
        x = self.mid_temporal_attn(x, pos_bias=pos_bias)
        x = self.mid_block2(x, e)
        for b1, b2, sa, ta, up in self.ups:
            x = torch.cat((x, h.pop()), dim=1)
            x = b1(x, e)
            x = b2(x, e)
            x = sa(x)
            x = ta(x, pos_bias=pos_bias)
            x = up(x)
        x = torch.cat((x, r), dim=1)
        return self.final_conv(x)

    def forward_with_cond_scale(self, x, t, cond, scale):
        out = self(x, t, cond)
        if scale == 1:
            return out
        null = self(x, t, None)
        return null + (out - null) * scale


def randomise(model, gen, dtype):
    """Perturb norms away from identity, then round every tensor to `dtype`
    (the fixture's storage type) so Rust and PyTorch use identical values."""
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name.endswith("gamma") or name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("norm.bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            if not name.endswith("freqs"):
                p.copy_(p.to(dtype).float())


def make_case(name, cfg, shape, dtype, guidance, seed, key_prefix="", out_dir=None):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = Unet3D(**cfg).eval()
    randomise(model, gen, dtype)
    b = shape[0]
    x = torch.randn(shape, generator=gen)
    t = torch.tensor([0, 137, 299][:b], dtype=torch.int64)
    cond = torch.rand(b, cfg["cond_dim"], generator=gen) if cfg.get("cond_dim") else None
    io = {"x": x, "t": t.float()}
    with torch.no_grad():
        io["out"] = model(x, t, cond)
        if cond is not None:
            io["cond"] = cond
            io["out_null"] = model(x, t, None)
            io["out_guided"] = model.forward_with_cond_scale(x, t, cond, guidance)
            io["guidance"] = torch.tensor([guidance])
    sd = {key_prefix + k: v.to(dtype if not k.endswith("freqs") else torch.float32).contiguous() for k, v in model.state_dict().items()}
    if key_prefix:
        sd[key_prefix + "betas"] = torch.linspace(1e-4, 0.02, 300)  # a schedule buffer the loader must ignore
    out_dir = out_dir or FIXTURES
    save_file(sd, os.path.join(out_dir, f"{name}_weights.safetensors"))
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out_dir, f"{name}_io.safetensors"))
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n} parameters, output {tuple(io['out'].shape)}, |out| max {io['out'].abs().max():.3f}")


def claim_model():
    return Unet3D(dim=72, dim_mults=(1, 2, 4, 8), channels=1, cond_dim=16, heads=8, dim_head=32)


def write_claim_shapes():
    model = claim_model()
    sd = model.state_dict()
    entries = [[k, list(v.shape)] for k, v in sd.items()]
    n = sum(p.numel() for p in model.parameters())
    with open(os.path.join(FIXTURES, "claim_state_dict.json"), "w") as f:
        json.dump({"parameters": n, "keys": entries}, f, indent=0)
        f.write("\n")
    print(f"claim: {len(entries)} state-dict entries, {n / 1e6:.2f} M parameters")


def time_claim(reps):
    model = claim_model().eval()
    x = torch.randn(1, 1, 1, 72, 72)
    t = torch.tensor([150])
    cond = torch.rand(1, 16)
    with torch.no_grad():
        for _ in range(2):
            model(x, t, cond)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x, t, cond)
            times.append(time.perf_counter() - t0)
    times.sort()
    # Peak resident memory of this process (torch runtime, weights, forwards); Linux reports KiB.
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pytorch {torch.__version__}, {torch.get_num_threads()} threads: CLAIM forward 1x1x1x72x72 "
          f"median {1e3 * times[len(times) // 2]:.1f} ms, min {1e3 * times[0]:.1f} ms over {reps}, "
          f"peak RSS {peak_mib:.0f} MiB")


def convert(src, dst, use_ema):
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    part = "ema" if use_ema else "model"
    sd = ckpt[part] if isinstance(ckpt, dict) and part in ckpt else ckpt
    if use_ema and sd is ckpt:
        raise SystemExit(f"{src}: no 'ema' entry")
    tensors = {k: v.detach().float().contiguous() for k, v in sd.items() if torch.is_tensor(v)}
    skipped = [k for k, v in sd.items() if not torch.is_tensor(v)]
    save_file(tensors, dst)
    print(f"{dst}: {len(tensors)} tensors from '{part if sd is not ckpt else 'state dict'}'"
          + (f", skipped non-tensors {skipped}" if skipped else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", action="store_true", help="time a CLAIM-size forward instead of writing fixtures")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--claim-check", metavar="DIR",
                    help="write a full-size CLAIM case (about 180 MB, not committed) to DIR for the ignored Rust test")
    ap.add_argument("--convert", nargs=2, metavar=("IN", "OUT"), help="checkpoint (.pt/.pth) to safetensors")
    ap.add_argument("--ema", action="store_true", help="with --convert: take the EMA weights")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for --time (0 = torch default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.time:
        time_claim(args.reps)
        return
    if args.convert:
        convert(*args.convert, args.ema)
        return
    if args.claim_check:
        os.makedirs(args.claim_check, exist_ok=True)
        make_case("claim", dict(dim=72, dim_mults=(1, 2, 4, 8), channels=1, cond_dim=16, heads=8, dim_head=32),
                  (1, 1, 1, 72, 72), torch.float32, 3.0, seed=17, out_dir=args.claim_check)
        return
    os.makedirs(FIXTURES, exist_ok=True)
    # CLAIM-like 2-D case: C1 F1, conditional, fp16 weights under wrapper prefixes.
    make_case("unet2d", dict(dim=8, dim_mults=(1, 2, 4), channels=1, cond_dim=16, heads=2, dim_head=8),
              (2, 1, 1, 24, 24), torch.float16, 3.0, seed=7, key_prefix="module.denoise_fn.")
    # LeFusion-like 3-D case: C2 F4, conditional, bf16 weights.
    make_case("unet3d", dict(dim=8, dim_mults=(1, 2, 4), channels=2, cond_dim=8, heads=2, dim_head=8),
              (2, 2, 4, 16, 16), torch.bfloat16, 2.0, seed=11)
    # Unconditional 3-D case with f32 weights and more frames than the exact buckets.
    make_case("unet3d_uncond", dict(dim=8, dim_mults=(1, 2), channels=1, cond_dim=None, heads=2, dim_head=4),
              (1, 1, 12, 8, 8), torch.float32, 1.0, seed=13)
    write_claim_shapes()


if __name__ == "__main__":
    main()
