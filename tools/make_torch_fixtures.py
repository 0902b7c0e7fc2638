#!/usr/bin/env python3
"""Small `torch.save` checkpoints for the Rust PyTorch reader (src/io/torch).

    python tools/make_torch_fixtures.py            # writes tests/fixtures/torch/

Writes, with the real `torch.save` (zip format, pickle protocol 2):

* `state_dict.pt`: an OrderedDict covering what the reader must rebuild:
  f32, f16, bf16 and f64 tensors, BatchNorm's int64 `num_batches_tracked`,
  a uint16 tensor (torch pickles it with `_rebuild_tensor_v3` and an
  untyped storage), an `nn.Parameter` (`_rebuild_parameter`), a transposed
  (non-contiguous) tensor, a view with a storage offset, two views of one
  storage, one tensor stored under two keys, a 0-d and an empty tensor.
* `state_dict_deflate.pt`: the same archive re-zipped with deflate
  (torch writes stored entries; the reader accepts both).
* `lefusion.pt`: a LeFusion/CLAIM-style training checkpoint
  `{'model': sd, 'ema': sd2, 'step': 10}` whose state dicts carry the
  `denoise_fn.` prefix and a schedule buffer (`betas`).
* `nnunet_checkpoint.pth`: an nnU-Net-style checkpoint: `network_weights`,
  a real SGD `optimizer_state`, `init_args` holding a plans dict and
  `torch.device('cpu')`, `trainer_name`, `inference_allowed_mirroring_axes`
  (a tuple), `current_epoch`, `logging` and `_best_ema` (numpy scalars, as
  nnU-Net's logger produces), `grad_scaler_state` None.

Each `X.pt`/`X.pth` has a sidecar `X.expected.json` with what the Rust
tests compare: per tensor dtype, shape, stride, storage offset and values
(logical row-major order, as Python floats/ints), the groups of keys whose
tensors share a storage, and the plain (JSON-able) parts of the checkpoint.
Values are small integers over powers of two, exact in every float type.

Requirements: torch, numpy (PyPI). Output is deterministic except for the
random serialization id torch writes into each archive.
"""
import collections
import json
import os
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "torch")


def exact_values(n, scale=8.0, start=-3):
    """n values k/scale, exact in f16, bf16, f32 and f64."""
    return torch.arange(start, start + n, dtype=torch.float64) / scale


def describe(t):
    """The facts about one tensor that the Rust test checks."""
    values = t.detach().to(torch.float64) if t.is_floating_point() else t.detach().to(torch.int64)
    return {
        "dtype": str(t.dtype).replace("torch.", ""),
        "shape": list(t.shape),
        "stride": list(t.stride()),
        "storage_offset": t.storage_offset(),
        "values": values.reshape(-1).tolist(),
    }


def sharing_groups(sd):
    """Keys grouped by the storage their tensors use (groups of two or more)."""
    by_ptr = collections.defaultdict(list)
    for k, v in sd.items():
        by_ptr[v.untyped_storage().data_ptr()].append(k)
    return sorted(keys for keys in by_ptr.values() if len(keys) > 1)


def plain_state_dict():
    sd = collections.OrderedDict()
    sd["conv.weight"] = exact_values(2 * 3 * 2).to(torch.float32).reshape(2, 3, 2)
    sd["conv.bias"] = torch.tensor([0.5, -1.25], dtype=torch.float32)
    sd["half"] = exact_values(5).to(torch.float16)
    sd["bfloat"] = exact_values(4, scale=4.0).to(torch.bfloat16).reshape(2, 2)
    sd["double"] = exact_values(3, scale=2.0, start=1)
    sd["bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    sd["ushort"] = torch.tensor([1, 65535, 300], dtype=torch.uint16)
    sd["param"] = torch.nn.Parameter(torch.tensor([1.5, 2.5, -0.75]))
    base = exact_values(12).to(torch.float32).reshape(3, 4)
    sd["transposed"] = base.t()  # non-contiguous: stride (1, 4)
    long_storage = exact_values(10, scale=16.0).to(torch.float32)
    sd["offset_view"] = long_storage[4:10].reshape(2, 3)  # storage offset 4
    shared = exact_values(8, scale=4.0).to(torch.float32)
    sd["shared.first"] = shared[:4]
    sd["shared.second"] = shared[4:].reshape(2, 2)
    sd["encoder.weight"] = exact_values(3, scale=2.0).to(torch.float32)
    sd["decoder.encoder.weight"] = sd["encoder.weight"]  # one tensor, two keys
    sd["scalar"] = torch.tensor(2.25, dtype=torch.float32)
    sd["empty"] = torch.zeros(0, 3, dtype=torch.float32)
    return sd


def diffusion_state_dict(offset):
    """A tiny diffusion-wrapper state dict (keys as LeFusion saves them)."""
    sd = collections.OrderedDict()
    sd["betas"] = torch.linspace(1e-4, 2e-2, 4, dtype=torch.float32)
    sd["denoise_fn.init_conv.weight"] = (exact_values(2 * 1 * 3) + offset).to(torch.float32).reshape(2, 1, 3)
    sd["denoise_fn.init_conv.bias"] = torch.tensor([offset, -offset], dtype=torch.float32)
    sd["denoise_fn.final_conv.weight"] = (exact_values(4, scale=2.0) - offset).to(torch.float16).reshape(1, 2, 2)
    return sd


class TinyNet(torch.nn.Module):
    """A conv -> InstanceNorm -> conv net standing in for nnU-Net's PlainConvUNet."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.norm = torch.nn.InstanceNorm2d(2, affine=True)
        self.bn = torch.nn.BatchNorm2d(2)
        self.head = torch.nn.Conv2d(2, 3, 1)

    def forward(self, x):
        return self.head(self.bn(self.norm(self.conv(x))))


def nnunet_checkpoint():
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(exact_values(p.numel(), scale=8.0, start=-i).reshape(p.shape))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    loss = net(torch.ones(1, 1, 4, 4)).square().mean()
    loss.backward()
    opt.step()
    plans = {
        "dataset_name": "Dataset042_Toy",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [10.0, 1.25, 1.25],
        "transpose_forward": [0, 1, 2],
        "configurations": {
            "2d": {
                "patch_size": [16, 16],
                "spacing": [1.25, 1.25],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {"n_stages": 2, "features_per_stage": [2, 4], "conv_bias": True,
                                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}},
                },
            }
        },
    }
    dataset_json = {"channel_names": {"0": "LGE"}, "labels": {"background": 0, "myocardium": 1}, "numTraining": 3}
    return {
        "network_weights": net.state_dict(),
        "optimizer_state": opt.state_dict(),
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.25), np.float64(0.5)], "ema_fg_dice": [np.float64(0.375)],
                    "lrs": [0.01, 0.0099]},
        "_best_ema": np.float64(0.375),
        "current_epoch": 2,
        "init_args": {"plans": plans, "configuration": "2d", "fold": 0, "dataset_json": dataset_json,
                      "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1),
    }


def save(obj, name, expected):
    path = os.path.join(OUT, name)
    torch.save(obj, path)
    stem = name.rsplit(".", 1)[0]
    with open(os.path.join(OUT, stem + ".expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    return path


def rezip_deflated(src, dst):
    """The same archive with every entry deflated (names and order kept)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


def main():
    os.makedirs(OUT, exist_ok=True)

    sd = plain_state_dict()
    src = save(sd, "state_dict.pt", {
        "tensors": {k: describe(v) for k, v in sd.items()},
        "order": list(sd.keys()),
        "sharing": sharing_groups(sd),
    })
    rezip_deflated(src, os.path.join(OUT, "state_dict_deflate.pt"))

    model, ema = diffusion_state_dict(0.5), diffusion_state_dict(-0.25)
    save({"model": model, "ema": ema, "step": 10}, "lefusion.pt", {
        "model": {k: describe(v) for k, v in model.items()},
        "ema": {k: describe(v) for k, v in ema.items()},
        "step": 10,
    })

    ckpt = nnunet_checkpoint()
    opt = ckpt["optimizer_state"]
    save(ckpt, "nnunet_checkpoint.pth", {
        "network_weights": {k: describe(v) for k, v in ckpt["network_weights"].items()},
        "momentum_buffers": {str(i): describe(s["momentum_buffer"]) for i, s in opt["state"].items()},
        "param_groups": opt["param_groups"],
        "init_args": {k: v for k, v in ckpt["init_args"].items() if k != "device"},
        "trainer_name": ckpt["trainer_name"],
        "inference_allowed_mirroring_axes": list(ckpt["inference_allowed_mirroring_axes"]),
        "current_epoch": ckpt["current_epoch"],
        "best_ema": float(ckpt["_best_ema"]),
        "mean_fg_dice": [float(x) for x in ckpt["logging"]["mean_fg_dice"]],
    })

    total = 0
    for name in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, name))
        total += size
        print(f"{name}: {size} bytes")
    print(f"total: {total} bytes")


if __name__ == "__main__":
    main()
