#!/usr/bin/env python3
"""PyTorch autograd reference for claim's whole-network parameter gradients.

Writes tests/fixtures/grad/<case>.safetensors for tiny configurations of
the two networks claim trains:

* the LeFusion/CLAIM denoiser (tools/denoiser_reference.py's Unet3D,
  written from shared/reference/denoiser.md): a 2-D conditional
  one-channel model (CLAIM's layout) and a 3-D two-channel model with 3
  frames (LeFusion's), both on the lesion-focused masked L1 objective;
* nnU-Net's PlainConvUNet (written here from
  shared/reference/segmentation.md, with nnU-Net's state-dict keys), 2-D
  and 3-D, on a vector-Jacobian product of its logits.

Each fixture holds the weights (`w.<key>`, f32), the inputs, the output,
and the gradient of every parameter (`g.<key>`), computed in float64 from
the same f32 values, so the Rust test measures claim's f32 error alone.

Usage: python tools/grad_reference.py   (needs torch, safetensors)
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from denoiser_reference import Unet3D, randomise  # noqa: E402

OUT = os.path.join(HERE, "..", "tests", "fixtures", "grad")


def save(name, model, inputs, out, grads):
    tensors = {f"w.{k}": v.detach().float().contiguous() for k, v in model.state_dict().items()}
    tensors.update({k: v.detach().float().contiguous() for k, v in inputs.items()})
    tensors["out"] = out.detach().float().contiguous()
    for k, p in model.named_parameters():
        if p.grad is not None:
            tensors[f"g.{k}"] = p.grad.detach().float().contiguous()
    save_file(tensors, os.path.join(OUT, f"{name}.safetensors"))
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{sum(1 for k in tensors if k.startswith('g.'))} gradients")


class Float64(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).double()


def denoiser_case(name, cfg, shape, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = Unet3D(**cfg)
    randomise(model, gen, torch.float32)
    model = model.double()
    # The timestep features stay f32 values (as claim computes them), fed
    # to the float64 network.
    sinusoidal = model.time_mlp[0]
    model.time_mlp[0] = Float64(sinusoidal)
    b = shape[0]
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    t = torch.tensor([3, 250, 77, 140][:b], dtype=torch.float64)
    noise = torch.randn(shape, generator=gen, dtype=torch.float64)
    mask = (torch.rand(shape, generator=gen) < 0.3).double()
    cond = torch.rand(b, cfg["cond_dim"], generator=gen, dtype=torch.float64)
    # Row 1 uses the learned null condition (classifier-free dropout).
    rows = torch.cat([cond[:1], model.null_cond_emb, cond[2:]], 0) if b > 1 else cond
    out = model(x, t, rows)
    loss = F.l1_loss(noise * mask, out * mask)
    loss.backward()
    inputs = {"x": x, "t": t, "noise": noise, "mask": mask, "cond": cond,
              "loss": loss.reshape(1)}
    save(name, model, inputs, out, None)


class ConvNormAct(nn.Module):
    def __init__(self, dim, c_in, c_out, k, stride):
        super().__init__()
        conv = nn.Conv2d if dim == 2 else nn.Conv3d
        norm = nn.InstanceNorm2d if dim == 2 else nn.InstanceNorm3d
        self.conv = conv(c_in, c_out, k, stride, k // 2, bias=True)
        self.norm = norm(c_out, eps=1e-5, affine=True)

    def forward(self, x):
        return F.leaky_relu(self.norm(self.conv(x)), 0.01)


class Stacked(nn.Module):
    def __init__(self, dim, n, c_in, c_out, k, stride):
        super().__init__()
        self.convs = nn.Sequential(*[ConvNormAct(dim, c_in if i == 0 else c_out, c_out, k,
                                                 stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.convs(x)


class Encoder(nn.Module):
    def __init__(self, dim, c_in, features, strides, n_conv):
        super().__init__()
        self.stages = nn.ModuleList()
        for f, s, n in zip(features, strides, n_conv):
            self.stages.append(nn.Sequential(Stacked(dim, n, c_in, f, 3, s)))
            c_in = f


class Decoder(nn.Module):
    def __init__(self, dim, features, strides, n_conv_dec, classes):
        super().__init__()
        tconv = nn.ConvTranspose2d if dim == 2 else nn.ConvTranspose3d
        head = nn.Conv2d if dim == 2 else nn.Conv3d
        self.transpconvs, self.stages, self.seg_layers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        n = len(features)
        for s in range(n - 1):
            below, skip = features[n - 1 - s], features[n - 2 - s]
            stride = strides[n - 1 - s]
            self.transpconvs.append(tconv(below, skip, stride, stride, bias=True))
            self.stages.append(Stacked(dim, n_conv_dec[s], 2 * skip, skip, 3, 1))
            self.seg_layers.append(head(skip, classes, 1, 1, 0, bias=True))


class PlainConvUNet(nn.Module):
    def __init__(self, dim, c_in, features, strides, n_conv, n_conv_dec, classes):
        super().__init__()
        self.encoder = Encoder(dim, c_in, features, strides, n_conv)
        self.decoder = Decoder(dim, features, strides, n_conv_dec, classes)

    def forward(self, x):
        skips = []
        for stage in self.encoder.stages:
            x = stage(x)
            skips.append(x)
        low = skips.pop()
        for up, stage in zip(self.decoder.transpconvs, self.decoder.stages):
            low = stage(torch.cat([up(low), skips.pop()], 1))
        return self.decoder.seg_layers[-1](low)


def unet_case(name, dim, shape, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    features, strides = [4, 8, 16], [1, 2, 2]
    model = PlainConvUNet(dim, shape[1], features, strides, [2, 2, 2], [2, 2], 3)
    with torch.no_grad():
        for k, p in model.state_dict().items():
            if k.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif k.endswith("norm.bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    model = model.double()
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    out = model(x)
    r = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (out * r).sum().backward()
    save(name, model, {"x": x, "r": r}, out, None)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    denoiser_case("denoiser_2d", dict(dim=8, dim_mults=(1, 2), channels=1, cond_dim=16, heads=2,
                                      dim_head=4, init_kernel_size=7, groups=2), (2, 1, 1, 8, 8), 10)
    denoiser_case("denoiser_3d", dict(dim=8, dim_mults=(1, 2), channels=2, cond_dim=32, heads=2,
                                      dim_head=4, init_kernel_size=7, groups=2), (2, 2, 3, 8, 8), 20)
    unet_case("plain_unet_2d", 2, (2, 1, 12, 16), 30)
    unet_case("plain_unet_3d", 3, (1, 1, 4, 8, 8), 40)


if __name__ == "__main__":
    main()
