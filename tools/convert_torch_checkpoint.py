#!/usr/bin/env python3
"""Convert an upstream CLAIM / LeFusion PyTorch checkpoint to safetensors.

    python tools/convert_torch_checkpoint.py IN.pt OUT.safetensors [--ema] [--half]

Upstream training saves a dict with `model` (the GaussianDiffusion module's
state dict: the U-Net under `denoise_fn.`, plus schedule buffers such as
`betas`) and `ema` (the EMA copy), sometimes with `step` and optimiser
state; a bare state dict is accepted too. Upstream inference loads `model`;
`--ema` takes the EMA weights instead. Keys are written unchanged: the Rust
loader (`claim_diffusion_load`, `claim::models::Denoiser::from_file`) strips
the `module.`, `_orig_mod.` and `denoise_fn.` prefixes and ignores the
schedule buffers, which the sampler recomputes. Values are written as f32
(`--half`: f16, half the size; the loader widens them back to f32).

torch.load unpickles arbitrary objects: convert only checkpoints you trust.
The script first tries `weights_only=True` and falls back to a full load
only with `--trust`.

Requirements: torch, safetensors (PyPI).
"""
import argparse
import sys

import torch
from safetensors.torch import save_file


def pick_state_dict(ckpt, use_ema):
    """The state dict to convert and a description of where it came from."""
    part = "ema" if use_ema else "model"
    if isinstance(ckpt, dict) and part in ckpt and isinstance(ckpt[part], dict):
        return ckpt[part], f"'{part}'"
    if use_ema:
        keys = sorted(ckpt.keys()) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise SystemExit(f"no 'ema' state dict in the checkpoint (top level: {keys})")
    if isinstance(ckpt, dict) and any(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt, "the bare state dict"
    raise SystemExit("the checkpoint holds neither a 'model' state dict nor tensors")


def convert(src, dst, use_ema=False, half=False, trust=False):
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled non-tensor objects (e.g. optimiser classes)
        if not trust:
            raise SystemExit(f"{src}: a weights-only load failed ({e}); rerun with --trust "
                             "if you trust this file")
        ckpt = torch.load(src, map_location="cpu", weights_only=False)
    sd, origin = pick_state_dict(ckpt, use_ema)
    dtype = torch.float16 if half else torch.float32
    tensors, skipped = {}, []
    for key, value in sd.items():
        if not torch.is_tensor(value):
            skipped.append(key)
            continue
        value = value.detach().cpu()
        # Rotary frequencies stay f32: f16 would round them.
        keep_f32 = key.endswith("rotary_emb.freqs") or not value.is_floating_point()
        tensors[key] = value.float().contiguous() if keep_f32 else value.to(dtype).contiguous()
    if not tensors:
        raise SystemExit(f"{src}: {origin} holds no tensors")
    save_file(tensors, dst, metadata={"source": "claim convert_torch_checkpoint.py",
                                      "part": "ema" if use_ema else "model"})
    n = sum(t.numel() for t in tensors.values())
    print(f"{dst}: {len(tensors)} tensors, {n / 1e6:.2f} M values from {origin}"
          + (f"; skipped non-tensors {skipped}" if skipped else ""))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="upstream checkpoint (.pt / .pth)")
    ap.add_argument("dst", help="output .safetensors")
    ap.add_argument("--ema", action="store_true", help="convert the EMA weights instead of 'model'")
    ap.add_argument("--half", action="store_true", help="store f16 values")
    ap.add_argument("--trust", action="store_true", help="allow a full (unpickling) load")
    args = ap.parse_args(argv)
    convert(args.src, args.dst, args.ema, args.half, args.trust)


if __name__ == "__main__":
    sys.exit(main())
