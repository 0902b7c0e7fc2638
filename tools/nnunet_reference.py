#!/usr/bin/env python3
"""nnU-Net v2 reference fixtures for claim's segmenter (issue 5, golden tests).

Writes, under --out (default tests/fixtures/nnunet):

* Dataset990_ClaimTiny/nnUNetTrainer__nnUNetPlans__<cfg>/ — minimal nnU-Net
  results folders for the configurations 2d (folds 0 and 1), 2d_resampled
  (fold 0, the 2d weights of fold 0 with spacing 1.25 mm, so prediction
  resamples) and 3d_fullres (fold 0). Each holds plans.json (structure as
  nnunetv2 2.8's ExperimentPlanner writes it, tiny networks),
  dataset.json, dataset_fingerprint.json and
  fold_<k>/checkpoint_final.pth: torch.save of the dict nnU-Net's trainer
  saves (network_weights with deep supervision on, a real SGD state after one
  step, logging with numpy scalars, init_args, trainer_name,
  inference_allowed_mirroring_axes).
* logits_2d.safetensors, logits_3d.safetensors — a seeded `input` and the
  `logits` of fold 0's network built the way nnUNetPredictor builds it
  (deep supervision off, load_state_dict, eval).
* sliding_window.safetensors — nnU-Net's Gaussian importance maps for the
  2d and 3d patch sizes (F16, the dtype nnU-Net uses).
* phantom_pred_*.nii.gz and phantom_reference.json — label maps of the
  built-in phantom (`claim phantom`, default seed) predicted by nnunetv2's
  own nnUNetPredictor on CPU, with the exact settings, preprocessing facts,
  per-class counts and fp16 logit margins; with --verify also a check of
  each label map against an independent re-implementation of the recipe
  (see "notes" in the JSON for where nnU-Net differs from the spec).

Run from the repository root (needs the Rust CLI for the phantom; about
5 minutes, 20 more with --verify, on 2 cores):

    pip install dynamic_network_architectures nnunetv2 safetensors
    cargo build && python3 tools/nnunet_reference.py --verify [--claim-bin target/debug/claim]

Without --claim-bin it runs `cargo run --quiet -- phantom`. Everything is
seeded; re-running reproduces every file byte for byte, except that the
safetensors headers may list their metadata in another order.
"""
import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
DATASET = "Dataset990_ClaimTiny"
TRAINER = "nnUNetTrainer"
PLANS_NAME = "nnUNetPlans"
LABELS = {"background": 0, "cavity": 1, "myocardium": 2, "infarction": 3, "no_reflow": 4}
N_CLASSES = len(LABELS)
PATCH_2D = [64, 64]
PATCH_3D = [12, 48, 48]  # 12 > the phantom's 10 slices: nnU-Net pads (centred) along z
# Non-square logit inputs (divisible by the total strides: 2d 8x8, 3d 2x4x4) catch H/W mix-ups.
LOGITS_INPUT_2D = (2, 1, 32, 40)
LOGITS_INPUT_3D = (1, 1, 6, 16, 24)
PHANTOM_SPACING_ZYX = [9.0, 1.5625, 1.5625]
RESAMPLED_SPACING = [1.25, 1.25]
# The zero-border variant of the phantom: everything outside this box (z, y, x
# half-open ranges) is set to 0, so nnU-Net crops to it. Width 165 makes the
# sliding-window start 2 * 101 / 4 = 50.5, which numpy rounds half to even (50).
CROP_BOX_ZYX = [(0, 9), (20, 170), (13, 178)]


# --------------------------------------------------------------------------
# plans.json, dataset.json, dataset_fingerprint.json
# --------------------------------------------------------------------------

def resampling_entries():
    """The resampling keys of an nnUNetPlans configuration (planner defaults)."""
    return {
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                               "force_separate_z": None},
    }


def configuration(identifier, patch, median_size, spacing, arch, batch_dice):
    cfg = {
        "data_identifier": identifier,
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch,
        "median_image_size_in_voxels": median_size,
        "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
    }
    cfg.update(resampling_entries())
    cfg["architecture"] = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": arch,
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    cfg["batch_dice"] = batch_dice
    return cfg


def arch_kwargs(dim, features, kernels, strides, n_conv, n_conv_dec, conv_bias):
    return {
        "n_stages": len(features),
        "features_per_stage": features,
        "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
        "kernel_sizes": kernels,
        "strides": strides,
        "n_conv_per_stage": n_conv,
        "n_conv_per_stage_decoder": n_conv_dec,
        "conv_bias": conv_bias,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def make_plans(fg_props):
    """An nnUNetPlans.json with the planner's structure and tiny networks."""
    arch_2d = arch_kwargs(2, [4, 8, 16, 16], [[3, 3]] * 4, [[1, 1], [2, 2], [2, 2], [2, 2]],
                          [2, 2, 2, 2], [1, 1, 1], True)
    arch_3d = arch_kwargs(3, [4, 8, 16], [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                          [[1, 1, 1], [1, 2, 2], [2, 2, 2]], [2, 2, 2], [2, 1], False)
    cfg_2d = configuration("nnUNetPlans_2d", PATCH_2D, [192.0, 192.0], PHANTOM_SPACING_ZYX[1:], arch_2d, True)
    cfg_2d_rs = copy.deepcopy(cfg_2d)
    cfg_2d_rs["data_identifier"] = "nnUNetPlans_2d_resampled"
    cfg_2d_rs["median_image_size_in_voxels"] = [240.0, 240.0]
    cfg_2d_rs["spacing"] = RESAMPLED_SPACING
    cfg_3d = configuration("nnUNetPlans_3d_fullres", PATCH_3D, [10.0, 192.0, 192.0], PHANTOM_SPACING_ZYX,
                           arch_3d, False)
    return {
        "dataset_name": DATASET,
        "plans_name": PLANS_NAME,
        "original_median_spacing_after_transp": PHANTOM_SPACING_ZYX,
        "original_median_shape_after_transp": [10, 192, 192],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"2d": cfg_2d, "2d_resampled": cfg_2d_rs, "3d_fullres": cfg_3d},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": fg_props},
    }


def make_dataset_json():
    return {"channel_names": {"0": "LGE"}, "labels": LABELS, "numTraining": 1, "file_ending": ".nii.gz"}


def foreground_properties(image, labels):
    """Intensity statistics over the labelled voxels, as the fingerprint stores them."""
    fg = image[labels > 0].astype(np.float64)
    return {
        "max": float(fg.max()),
        "mean": float(fg.mean()),
        "median": float(np.median(fg)),
        "min": float(fg.min()),
        "percentile_00_5": float(np.percentile(fg, 0.5)),
        "percentile_99_5": float(np.percentile(fg, 99.5)),
        "std": float(fg.std()),
    }


def make_fingerprint(fg_props, shape):
    return {
        "foreground_intensity_properties_per_channel": {"0": fg_props},
        "median_relative_size_after_cropping": 1.0,
        "shapes_after_crop": [list(shape)],
        "spacings": [PHANTOM_SPACING_ZYX],
    }


def write_json(path, obj, indent=4):
    """Indented JSON, except that lists of plain numbers stay on one line."""
    placeholders = {}

    def compact(o):
        if isinstance(o, dict):
            return {k: compact(v) for k, v in o.items()}
        if isinstance(o, list):
            if len(o) > 8 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in o):
                key = f"@@list{len(placeholders)}@@"
                placeholders[key] = json.dumps(o, separators=(",", ":"))
                return key
            return [compact(v) for v in o]
        return o

    text = json.dumps(compact(obj), indent=indent)
    for key, value in placeholders.items():
        text = text.replace(f'"{key}"', value)
    with open(path, "w") as f:
        f.write(text + "\n")


# --------------------------------------------------------------------------
# networks and checkpoints
# --------------------------------------------------------------------------

def build_network(plans, dataset_json, config_name, deep_supervision):
    """The network exactly as nnU-Net's trainer (and predictor) builds it."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration(config_name)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    return nnUNetTrainer.build_network_architecture(pm, cm, 1, n_out, enable_deep_supervision=deep_supervision)


def perturb_(net, gen):
    """Non-trivial norm affine parameters and biases, so every parameter matters."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(0.6 + 0.8 * torch.rand(p.shape, generator=gen))
            elif name.endswith("norm.bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def balance_head_(net, norm_zyx, two_d):
    """Shift the full-resolution head's biases by the per-class median logit on
    the (normalised) phantom, so every class wins somewhere and the label maps
    have many boundaries (a random head tends to let one class win everywhere)."""
    net.eval()
    x = torch.from_numpy(norm_zyx[:, None] if two_d else norm_zyx[None, None])
    with torch.no_grad():
        out = net(x)
        full = out[0] if isinstance(out, (list, tuple)) else out
        medians = full.transpose(0, 1).reshape(full.shape[1], -1).median(dim=1).values
        net.decoder.seg_layers[-1].bias -= medians


def one_sgd_step(net, patch, gen):
    """One training step as nnU-Net configures it (SGD, momentum 0.99, Nesterov)."""
    opt = torch.optim.SGD(net.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    net.train()
    x = torch.randn((2, 1, *patch), generator=gen)
    outputs = net(x)
    loss = 0.0
    for i, out in enumerate(outputs):
        target = torch.randint(0, N_CLASSES, (out.shape[0], *out.shape[2:]), generator=gen)
        loss = loss + 0.5 ** i * torch.nn.functional.cross_entropy(out, target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    net.eval()
    return opt.state_dict()


def logging_dict(rng, epochs=3):
    """The trainer's logger content; numpy scalars where nnU-Net logs numpy values."""
    fg_dice = [np.float64(0.2 + 0.1 * i + 0.01 * rng.random()) for i in range(epochs)]
    return {
        "mean_fg_dice": fg_dice,
        "ema_fg_dice": [np.float64(0.9 * 0.0 + 0.1 * d) for d in fg_dice],
        "dice_per_class_or_region": [[np.float64(rng.random()) for _ in range(N_CLASSES - 1)]
                                     for _ in range(epochs)],
        "train_losses": [np.float32(-0.1 * i - rng.random()) for i in range(epochs)],
        "val_losses": [np.float32(-0.1 * i - rng.random()) for i in range(epochs)],
        "lrs": [0.01 * (1 - i / 1000) ** 0.9 for i in range(epochs)],
        "epoch_start_timestamps": [1.7e9 + 100.0 * i for i in range(epochs)],
        "epoch_end_timestamps": [1.7e9 + 100.0 * i + 95.5 for i in range(epochs)],
    }


def checkpoint_dict(net, opt_state, plans, dataset_json, config_name, fold, device, grad_scaler, mirror_axes, seed):
    rng = np.random.default_rng(seed)
    logging = logging_dict(rng)
    return {
        "network_weights": net.state_dict(),
        "optimizer_state": opt_state,
        "grad_scaler_state": grad_scaler,
        "logging": logging,
        "_best_ema": logging["ema_fg_dice"][-1],
        "current_epoch": len(logging["lrs"]),
        "init_args": {"plans": plans, "configuration": config_name, "fold": fold,
                      "dataset_json": dataset_json, "device": torch.device(device)},
        "trainer_name": TRAINER,
        "inference_allowed_mirroring_axes": mirror_axes,
    }


def model_dir(out, config_name):
    return os.path.join(out, DATASET, f"{TRAINER}__{PLANS_NAME}__{config_name}")


def write_model_folder(out, config_name, plans, dataset_json, fingerprint, checkpoints):
    d = model_dir(out, config_name)
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, "plans.json"), plans)
    write_json(os.path.join(d, "dataset.json"), dataset_json)
    write_json(os.path.join(d, "dataset_fingerprint.json"), fingerprint)
    for fold, ckpt in checkpoints.items():
        fd = os.path.join(d, f"fold_{fold}")
        os.makedirs(fd, exist_ok=True)
        torch.save(ckpt, os.path.join(fd, "checkpoint_final.pth"))
    return d


def trained_network(plans, dataset_json, config_name, patch, seed, norm_zyx):
    torch.manual_seed(seed)
    net = build_network(plans, dataset_json, config_name, deep_supervision=True)
    gen = torch.Generator().manual_seed(seed + 1)
    perturb_(net, gen)
    balance_head_(net, norm_zyx, len(patch) == 2)
    opt_state = one_sgd_step(net, patch, gen)
    return net, opt_state


def inference_network(plans, dataset_json, config_name, trained):
    """The predictor's network: deep supervision off, the trained weights, eval mode."""
    net = build_network(plans, dataset_json, config_name, deep_supervision=False)
    net.load_state_dict(trained.state_dict())
    return net.eval()


def logits_fixture(path, plans, dataset_json, config_name, weights, input_shape, seed):
    """Seeded input and the inference network's logits (predictor-style build)."""
    from safetensors.torch import save_file

    net = build_network(plans, dataset_json, config_name, deep_supervision=False)
    net.load_state_dict(weights)
    net.eval()
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = net(x)
    save_file({"input": x.contiguous(), "logits": y.contiguous().float()}, path,
              metadata={"configuration": config_name, "checkpoint": f"{config_name}/fold_0/checkpoint_final.pth",
                        "note": "fold 0 network, deep_supervision=False, eval(), float32"})
    return list(y.shape)


# --------------------------------------------------------------------------
# an independent re-implementation of the prediction recipe (the spec the Rust
# side follows), used to check that the recipe reproduces nnU-Net exactly
# --------------------------------------------------------------------------

def gaussian_map(patch):
    """Importance map: a centred delta blurred with sigma = patch/8 (truncate 4),
    scaled to a maximum of 10, stored as float16; zeros become the smallest value."""
    g = np.ones((), dtype=np.float64)
    for n in patch:
        sigma = n / 8.0
        radius = int(4.0 * sigma + 0.5)
        offsets = np.arange(n) - n // 2
        w = np.exp(-0.5 * (offsets / sigma) ** 2)
        w[np.abs(offsets) > radius] = 0.0
        g = np.multiply.outer(g, w)
    g = g / (g.max() / 10.0)
    g16 = g.astype(np.float16)
    if np.any(g16 == 0):
        g16[g16 == 0] = g16[g16 > 0].min()
    return g16


def window_starts(size, patch, step):
    n = int(np.ceil((size - patch) / (patch * step))) + 1
    if n == 1:
        return [0]
    stride = (size - patch) / (n - 1)
    return [int(np.round(stride * i)) for i in range(n)]  # np.round: half to even


def centred_pad(x, patch):
    """Zero-pad the trailing spatial axes up to the patch size, centred (extra voxel after)."""
    spatial = x.shape[-len(patch):]
    pads = []
    for s, p in zip(spatial, patch):
        d = max(p - s, 0)
        pads.append((d // 2, d - d // 2))
    full = [(0, 0)] * (x.ndim - len(patch)) + pads
    return np.pad(x, full), pads


def mirrored_logits(net, x, mirror_axes):
    """Network logits averaged over all flip combinations (f32, nnU-Net's order)."""
    import itertools

    with torch.no_grad():
        pred = net(x)
        if mirror_axes:
            axes = [a + 2 for a in mirror_axes]
            combos = [c for k in range(1, len(axes) + 1) for c in itertools.combinations(axes, k)]
            for c in combos:
                pred += torch.flip(net(torch.flip(x, c)), c)
            pred /= len(combos) + 1
    return pred[0].numpy()


def sliding_window(net, data, patch, mirror_axes, half, jitter=0.0):
    """Gaussian-weighted sliding window over data (c, z, y, x); 2-D patches run per slice."""
    acc_t = np.float16 if half else np.float32
    padded, pads = centred_pad(data, patch)
    spatial = padded.shape[1:]
    two_d = len(patch) == 2
    win_axes = spatial[1:] if two_d else spatial
    starts = [window_starts(s, p, 0.5) for s, p in zip(win_axes, patch)]
    gauss = gaussian_map(patch)
    gauss32 = gauss.astype(np.float32)
    logits = np.zeros((N_CLASSES, *spatial), dtype=acc_t)
    weights = np.zeros(spatial, dtype=acc_t)
    slices = range(spatial[0]) if two_d else [None]
    jitter_rng = np.random.default_rng(7)
    n_windows = 0
    for z in slices:
        for combo in np.array(np.meshgrid(*starts, indexing="ij")).reshape(len(patch), -1).T:
            box = tuple(slice(int(s), int(s) + p) for s, p in zip(combo, patch))
            if two_d:
                region = (z,) + box
            else:
                region = box
            x = torch.from_numpy(np.ascontiguousarray(padded[(slice(None),) + region][None]))
            pred = mirrored_logits(net, x, mirror_axes)
            if jitter:
                # models an implementation whose network output differs at float32 rounding level
                pred = pred * (1.0 + jitter * jitter_rng.standard_normal(pred.shape)).astype(np.float32)
            pred = pred * gauss32
            view = logits[(slice(None),) + region]
            logits[(slice(None),) + region] = (view.astype(np.float32) + pred).astype(acc_t)
            weights[region] = (weights[region].astype(np.float32) + gauss32).astype(acc_t)
            n_windows += 1
    out = (logits.astype(np.float32) / weights.astype(np.float32)).astype(acc_t)
    offsets = [0] * (len(spatial) - len(patch)) + [below for below, _ in pads]
    unpad = tuple(slice(o, o + n) for o, n in zip(offsets, data.shape[1:]))
    return out[(slice(None),) + unpad], starts, n_windows


def resize_slices(vol, new_yx, order):
    """Per-slice resize as nnU-Net does it for anisotropic data (skimage
    resize = scipy zoom, grid mode, edge extension, output clipped to the slice's range)."""
    from scipy import ndimage

    out = np.zeros((vol.shape[0], *new_yx), dtype=np.float64)
    for z in range(vol.shape[0]):
        s = vol[z].astype(np.float64)
        zoom = [n / o for n, o in zip(new_yx, s.shape)]
        r = ndimage.zoom(s, zoom, order=order, mode="nearest", grid_mode=True)
        out[z] = np.clip(r, s.min(), s.max())
    return out


def emulate_prediction(image_zyx, nets, plans, config_name, mirror_axes, half=True, jitter=0.0):
    """The recipe of shared/reference/segmentation.md (+ the facts in the notes)."""
    cfg = plans["configurations"][config_name]
    patch = cfg["patch_size"]
    nz = np.nonzero(image_zyx != 0)
    box = [(int(a.min()), int(a.max()) + 1) for a in nz]
    crop = image_zyx[tuple(slice(a, b) for a, b in box)].astype(np.float32)
    mean, std = crop.mean(), crop.std()
    norm = (crop - mean) / max(std, 1e-8)
    spacing = cfg["spacing"]
    if len(spacing) == 2:
        target = [PHANTOM_SPACING_ZYX[0]] + list(spacing)
    else:
        target = list(spacing)
    new_shape = [int(round(o / t * s)) for o, t, s in zip(PHANTOM_SPACING_ZYX, target, crop.shape)]
    if new_shape != list(crop.shape):
        assert new_shape[0] == crop.shape[0], "only in-plane resampling is emulated"
        norm = resize_slices(norm, new_shape[1:], 3).astype(np.float32)
    total = None
    for net in nets:
        logits, starts, n_windows = sliding_window(net, norm[None], patch, mirror_axes, half, jitter)
        if total is None:
            total = logits
        else:
            total = (total.astype(np.float32) + logits.astype(np.float32)).astype(total.dtype)
    if len(nets) > 1:
        total = (total.astype(np.float32) / len(nets)).astype(total.dtype)
    if list(total.shape[1:]) != list(crop.shape):
        back = np.stack([resize_slices(total[c].astype(np.float64), crop.shape[1:], 1)
                         for c in range(total.shape[0])])
        total = back.astype(total.dtype)
    seg_crop = np.argmax(total, axis=0).astype(np.uint8)
    seg = np.zeros(image_zyx.shape, dtype=np.uint8)
    seg[tuple(slice(a, b) for a, b in box)] = seg_crop
    info = {"bbox_zyx": box, "crop_shape": list(crop.shape), "network_input_shape": list(norm.shape),
            "zscore_mean": float(mean), "zscore_std": float(std),
            "window_starts_per_axis": starts, "windows_per_fold": n_windows}
    return seg, total, info


# --------------------------------------------------------------------------
# nnU-Net's own predictor
# --------------------------------------------------------------------------

def nnunet_predict(model_folder, folds, use_mirroring, image_path, out_path, cross_check):
    """nnUNetPredictor on CPU through its SimpleITK reader/writer.

    Runs the steps predict_single_npy_array runs (the preprocessor's
    run_case_npy, predict_logits_from_preprocessed_data, export_prediction_from_logits)
    one by one so the fp16 logits are at hand; with cross_check, also runs
    predict_single_npy_array itself and asserts the same label map."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, use_folds=tuple(folds),
                                                   checkpoint_name="checkpoint_final.pth")
    rw = SimpleITKIO()
    data, props = rw.read_images([image_path])
    pre = predictor.configuration_manager.preprocessor_class(verbose=False)
    pdata, _, pprops = pre.run_case_npy(data, None, copy.deepcopy(props), predictor.plans_manager,
                                        predictor.configuration_manager, predictor.dataset_json)
    logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(pdata))
    assert out_path.endswith(".nii.gz")
    export_prediction_from_logits(logits, pprops, predictor.configuration_manager, predictor.plans_manager,
                                  predictor.dataset_json, out_path[:-len(".nii.gz")], False)
    import SimpleITK as sitk
    seg = sitk.GetArrayFromImage(sitk.ReadImage(out_path))
    if cross_check:
        seg_single = predictor.predict_single_npy_array(data, copy.deepcopy(props), None, None, False)
        assert np.array_equal(seg, seg_single), "step-by-step prediction differs from predict_single_npy_array"
    return seg, logits.numpy(), pprops, predictor.allowed_mirroring_axes


def margin_stats(logits16):
    """How far the winning class is ahead, on nnU-Net's own fp16 logits."""
    srt = np.sort(logits16.astype(np.float32), axis=0)
    gap = srt[-1] - srt[-2]
    return {"min_top1_top2_gap": abs(float(gap.min())), "voxels_with_tie": int((gap == 0).sum()),
            "voxels_gap_below_1e-2": int((gap < 1e-2).sum()), "logit_dtype": str(logits16.dtype)}


def fragile_voxels(final16, box, shape):
    """Voxels whose two best classes are equal or adjacent float16 numbers in the
    final logits: the only places an implementation that matches nnU-Net up to
    float32 rounding may pick another class. Flat indices into the (z, y, x) volume."""
    srt = np.sort(final16, axis=0)
    top, second = srt[-1], srt[-2]
    ulp = np.spacing(np.abs(top)).astype(np.float32)
    mask = (top.astype(np.float32) - second.astype(np.float32)) <= ulp
    full = np.zeros(shape, dtype=bool)
    full[tuple(slice(a, b) for a, b in box)] = mask
    idx = np.flatnonzero(full)
    return {"definition": "top-1 minus top-2 of the final f16 logits <= one f16 ulp of the top value",
            "count": int(idx.size), "flat_indices_zyx": [int(i) for i in idx]}


def class_counts(seg):
    return {str(k): int((seg == k).sum()) for k in range(N_CLASSES)}


def sha256(arr):
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


# --------------------------------------------------------------------------

def make_phantom(claim_bin, out_dir):
    if claim_bin:
        cmd = [claim_bin, "phantom", "-o", out_dir]
    else:
        cmd = ["cargo", "run", "--quiet", "--", "phantom", "-o", out_dir]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(out_dir, "image.nii.gz"), os.path.join(out_dir, "labels.nii.gz")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "nnunet"),
                    help="fixture folder (default tests/fixtures/nnunet)")
    ap.add_argument("--claim-bin", help="path of the claim CLI (default: cargo run --quiet --)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: tiny convolutions only lose from more threads)")
    ap.add_argument("--verify", action="store_true",
                    help="also check each label map against an independent re-implementation of the recipe "
                         "(f16 and f32 accumulation, and f16 with 1e-6 output jitter); slow")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    import SimpleITK as sitk
    from safetensors.torch import save_file

    tmp = tempfile.mkdtemp(prefix="nnunet_ref_")
    image_path, labels_path = make_phantom(args.claim_bin, os.path.join(tmp, "phantom"))
    itk_image = sitk.ReadImage(image_path)
    image = sitk.GetArrayFromImage(itk_image)  # (z, y, x) float32
    labels = sitk.GetArrayFromImage(sitk.ReadImage(labels_path))
    assert list(itk_image.GetSpacing())[::-1] == PHANTOM_SPACING_ZYX, itk_image.GetSpacing()

    fg = foreground_properties(image, labels)
    plans = make_plans(fg)
    dataset_json = make_dataset_json()
    fingerprint = make_fingerprint(fg, image.shape)

    # --- weights and results folders
    norm = ((image - image.mean()) / image.std()).astype(np.float32)
    net2d_f0, opt2d_f0 = trained_network(plans, dataset_json, "2d", PATCH_2D, 1000, norm)
    net2d_f1, opt2d_f1 = trained_network(plans, dataset_json, "2d", PATCH_2D, 2000, norm)
    net3d_f0, opt3d_f0 = trained_network(plans, dataset_json, "3d_fullres", PATCH_3D, 3000, norm)
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 17}
    folders = {
        "2d": write_model_folder(out, "2d", plans, dataset_json, fingerprint, {
            0: checkpoint_dict(net2d_f0, opt2d_f0, plans, dataset_json, "2d", 0, "cuda", scaler, (0, 1), 10),
            1: checkpoint_dict(net2d_f1, opt2d_f1, plans, dataset_json, "2d", 1, "cpu", None, (0, 1), 11),
        }),
        "2d_resampled": write_model_folder(out, "2d_resampled", plans, dataset_json, fingerprint, {
            0: checkpoint_dict(net2d_f0, opt2d_f0, plans, dataset_json, "2d_resampled", 0, "cpu", None,
                               (0, 1), 12),
        }),
        "3d_fullres": write_model_folder(out, "3d_fullres", plans, dataset_json, fingerprint, {
            0: checkpoint_dict(net3d_f0, opt3d_f0, plans, dataset_json, "3d_fullres", 0, "cuda", scaler,
                               (0, 1, 2), 13),
        }),
    }

    # --- logits
    shape_2d = logits_fixture(os.path.join(out, "logits_2d.safetensors"), plans, dataset_json, "2d",
                              net2d_f0.state_dict(), LOGITS_INPUT_2D, 42)
    shape_3d = logits_fixture(os.path.join(out, "logits_3d.safetensors"), plans, dataset_json, "3d_fullres",
                              net3d_f0.state_dict(), LOGITS_INPUT_3D, 43)

    # --- Gaussian importance maps as nnU-Net computes them
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    g2 = compute_gaussian(tuple(PATCH_2D), sigma_scale=1. / 8, value_scaling_factor=10, device=torch.device("cpu"))
    g3 = compute_gaussian(tuple(PATCH_3D), sigma_scale=1. / 8, value_scaling_factor=10, device=torch.device("cpu"))
    assert np.array_equal(g2.numpy(), gaussian_map(PATCH_2D)), "Gaussian recipe differs from nnU-Net (2d)"
    assert np.array_equal(g3.numpy(), gaussian_map(PATCH_3D)), "Gaussian recipe differs from nnU-Net (3d)"
    save_file({"gaussian_2d": g2.contiguous(), "gaussian_3d": g3.contiguous()},
              os.path.join(out, "sliding_window.safetensors"),
              metadata={"note": "nnU-Net compute_gaussian(patch, sigma_scale=1/8, value_scaling_factor=10), "
                                "float16 as nnU-Net uses it", "patch_2d": json.dumps(PATCH_2D),
                        "patch_3d": json.dumps(PATCH_3D)})

    # --- the zero-border phantom variant (exercises cropping)
    cropped_image = np.zeros_like(image)
    region = tuple(slice(a, b) for a, b in CROP_BOX_ZYX)
    cropped_image[region] = image[region]
    cropped_path = os.path.join(tmp, "phantom_zero_border.nii.gz")
    itk_c = sitk.GetImageFromArray(cropped_image)
    itk_c.CopyInformation(itk_image)
    sitk.WriteImage(itk_c, cropped_path, True)

    # --- phantom predictions by nnU-Net
    nets = {"2d": [inference_network(plans, dataset_json, "2d", n) for n in (net2d_f0, net2d_f1)],
            "3d_fullres": [inference_network(plans, dataset_json, "3d_fullres", net3d_f0)]}
    nets["2d_resampled"] = nets["2d"][:1]
    runs = [
        ("phantom_pred_2d_fold0.nii.gz", "2d", [0], True, image_path, image),
        ("phantom_pred_2d_folds01.nii.gz", "2d", [0, 1], True, image_path, image),
        ("phantom_pred_2d_fold0_nomirror.nii.gz", "2d", [0], False, image_path, image),
        ("phantom_pred_2d_resampled_fold0.nii.gz", "2d_resampled", [0], True, image_path, image),
        ("phantom_pred_3d_fold0.nii.gz", "3d_fullres", [0], True, image_path, image),
        ("phantom_pred_2d_fold0_zero_border.nii.gz", "2d", [0], True, cropped_path, cropped_image),
    ]
    results = []
    for fname, cfg, folds, mirror, in_path, in_array in runs:
        print(f"nnU-Net: {fname} ({cfg}, folds {folds}, mirroring {mirror})", flush=True)
        dst = os.path.join(out, fname)
        seg, logits16, props, axes = nnunet_predict(folders[cfg], folds, mirror, in_path, dst,
                                                    cross_check=not results)
        entry = {
            "file": fname,
            "input": "phantom (default seed)" if in_array is image else
                     "phantom with everything outside crop_box_zyx set to 0",
            "configuration": cfg,
            "folds": folds,
            "use_mirroring": mirror,
            "mirror_axes": list(axes) if (mirror and axes is not None) else None,
            "tile_step_size": 0.5,
            "use_gaussian": True,
            "patch_size": plans["configurations"][cfg]["patch_size"],
            "spacing": plans["configurations"][cfg]["spacing"],
            "bbox_used_for_cropping": [list(map(int, b)) for b in props["bbox_used_for_cropping"]],
            "shape_after_cropping": list(map(int, props["shape_after_cropping_and_before_resampling"])),
            "network_input_shape": list(logits16.shape[1:]),
            "class_counts": class_counts(seg),
            "labels_sha256": sha256(seg.astype(np.uint8)),
            "nnunet_logit_margins": margin_stats(logits16),
        }
        if args.verify:
            sel = [nets[cfg][f] for f in folds]
            mirror_axes = tuple(axes) if mirror else None
            em16, final16, info = emulate_prediction(in_array, sel, plans, cfg, mirror_axes, half=True)
            em32, _, _ = emulate_prediction(in_array, sel, plans, cfg, mirror_axes, half=False)
            emj, _, _ = emulate_prediction(in_array, sel, plans, cfg, mirror_axes, half=True, jitter=1e-6)
            entry["recipe"] = info
            entry["fragile_voxels"] = fragile_voxels(final16, info["bbox_zyx"], in_array.shape)
            entry["recipe_f16_accumulation_equals_nnunet"] = bool(np.array_equal(em16, seg))
            entry["recipe_f16_accumulation_voxels_differing"] = int((em16 != seg).sum())
            entry["recipe_f32_accumulation_voxels_differing"] = int((em32 != seg).sum())
            entry["recipe_f16_with_1e-6_output_jitter_voxels_differing"] = int((emj != seg).sum())
            print(f"  classes {entry['class_counts']}; recipe (f16) differs in "
                  f"{entry['recipe_f16_accumulation_voxels_differing']} voxels, "
                  f"f32 accumulation in {entry['recipe_f32_accumulation_voxels_differing']}, f16 with 1e-6 "
                  f"jitter in {entry['recipe_f16_with_1e-6_output_jitter_voxels_differing']}", flush=True)
        results.append(entry)

    from importlib.metadata import version

    reference = {
        "generator": "tools/nnunet_reference.py",
        "versions": {"nnunetv2": version("nnunetv2"),
                     "dynamic_network_architectures": version("dynamic_network_architectures"),
                     "torch": torch.__version__, "numpy": np.__version__,
                     "scipy": version("scipy"), "scikit-image": version("scikit-image"),
                     "SimpleITK": version("SimpleITK")},
        "phantom": {"command": "claim phantom -o DIR (default seed 0)", "shape_zyx": list(image.shape),
                    "spacing_zyx": PHANTOM_SPACING_ZYX, "image_sha256_f32_zyx": sha256(image),
                    "image_sum_f64": float(image.astype(np.float64).sum())},
        "crop_box_zyx": [list(b) for b in CROP_BOX_ZYX],
        "predictor": {"class": "nnunetv2.inference.predict_from_raw_data.nnUNetPredictor",
                      "device": "cpu", "perform_everything_on_device": False,
                      "checkpoint_name": "checkpoint_final.pth",
                      "call": "SimpleITKIO.read_images; the preprocessor's run_case_npy; "
                              "predict_logits_from_preprocessed_data; export_prediction_from_logits (SimpleITKIO "
                              "write_seg: uint8, the input's geometry) - the steps of predict_single_npy_array, "
                              "which the first run also calls and matches exactly",
                      "torch_threads": torch.get_num_threads()},
        "logits_fixtures": {"logits_2d.safetensors": {"configuration": "2d", "input": list(LOGITS_INPUT_2D),
                                                      "logits": shape_2d},
                            "logits_3d.safetensors": {"configuration": "3d_fullres", "input": list(LOGITS_INPUT_3D),
                                                      "logits": shape_3d}},
        "runs": results,
        "notes": NOTES,
    }
    write_json(os.path.join(out, "phantom_reference.json"), reference, indent=2)
    print(f"wrote {out}")


NOTES = [
    "Sliding-window accumulation is float16 (nnU-Net allocates predicted_logits and n_predictions as "
    "torch.half even on CPU): per window, the f32 logits (mirror-averaged) are multiplied by the f16 "
    "Gaussian (as f32), added to the f16 accumulator in f32 and rounded to f16; the weight map likewise; "
    "the final division is f16/f16 rounded to f16. Windows are visited slice by slice (2d), then by "
    "start along the first, then the second patch axis; that order matters for the f16 rounding.",
    "The Gaussian importance map is scaled to a maximum of 10 (value_scaling_factor=10), not 1, and "
    "stored as float16. Centre index is patch//2 on each axis (asymmetric for even sizes); sigma = "
    "patch/8; scipy gaussian_filter truncates at int(4*sigma+0.5); zeros become the smallest non-zero "
    "value (none occur for these patch sizes). sliding_window.safetensors holds the exact maps.",
    "Mirroring: logits of the unflipped input plus, in itertools.combinations order over the allowed "
    "axes (2d: (0,), (1,), (0,1); 3d: (0,), (1,), (2,), (0,1), (0,2), (1,2), (0,1,2)), each flipped "
    "back; the f32 sum is divided by the number of passes.",
    "Ensembles average LOGITS, not softmax: each fold's f16 sliding-window result is summed in f16 "
    "and divided by the number of folds in f16; argmax follows (the issue text says softmax).",
    "Window starts use numpy's round (half to even): a crop 165 wide with patch 64 gives starts "
    "0, 25, 50, 76, 101 (2*25.25=50.5 -> 50).",
    "If the image is smaller than the patch along an axis it is zero-padded (after normalisation) "
    "centred: below = d//2, above = d - d//2 (the 3d run pads 10 slices to 12: 1 + 1).",
    "Cropping: bounding box of the non-zero voxels (after binary hole filling, which cannot change "
    "the box); the default phantom has no zero voxel, so its crop is the whole volume.",
    "ZScore: mean and std in float32 (numpy) over the whole cropped 3-D case, (x - mean) / max(std, 1e-8), "
    "applied before resampling.",
    "Resampling (2d_resampled, and any 2d configuration whose in-plane spacing differs): the spacing "
    "is anisotropic (9/1.5625 > 3), so each z slice is resized in 2-D by skimage.transform.resize = "
    "scipy.ndimage.zoom(order, mode='nearest', grid_mode=True, prefilter=True; the cubic prefilter runs "
    "on the slice padded by 12 edge samples), in float64, output clipped to that slice's min/max, new "
    "size round(old * old_spacing / new_spacing). Data: order 3 after normalisation, stored float32. "
    "Logits back to the cropped shape: order 1, per channel and slice, from the f16 logits, stored "
    "back as float16 before argmax.",
    "Argmax over the f16 logits takes the first maximum on ties.",
    "Exact label-map equality needs the f16 accumulation above; runs[].recipe_f32_accumulation_voxels_"
    "differing says how many voxels f32 accumulation changes. With it, network outputs that differ from "
    "PyTorch's at float32 rounding level (runs[].recipe_f16_with_1e-6_output_jitter_voxels_differing) "
    "still change 0-1 voxels, and only among runs[].fragile_voxels (top two classes equal or adjacent "
    "in f16), so a test can demand equality outside those and allow a handful inside.",
    "Checkpoints: network_weights is the deep-supervision network's state_dict (seg_layers for every "
    "decoder stage; keys are the same with deep supervision off) including the all_modules.* and "
    "decoder.encoder.* aliases (shared storages). logging holds numpy float64/float32 scalars and "
    "_best_ema is a numpy float64, as nnU-Net's trainer logs them; init_args.device is torch.device "
    "('cuda' for 2d fold 0 and 3d fold 0, 'cpu' otherwise); grad_scaler_state is a dict for the "
    "'cuda' checkpoints and None for the others.",
]


if __name__ == "__main__":
    sys.exit(main())
