#!/usr/bin/env python3
"""Golden fixtures for claim's nnU-Net-compatible resampling.

Runs the real upstream functions on small seeded random arrays and writes
tests/fixtures/resample/*.safetensors, which tests/resample_golden.rs checks
against src/imgproc/resample.rs:

* nnunet.safetensors: nnunetv2's resample_data_or_seg_to_shape (images,
  logits and label maps; 3-D resizes and separate-axis cases along each
  axis; orders 0/1/3 in-plane and 0/1/3 across; forced and suppressed
  separation; unchanged shapes), plus compute_new_shape cases in the
  metadata;
* skimage.safetensors: scikit-image's resize(mode="edge",
  anti_aliasing=False) in 1-, 2- and 3-D at orders 0/1/3;
* segmentation.safetensors: batchgenerators' resize_segmentation as
  installed (>= 0.25.4: argmax with nearest-neighbour tie break);
* legacy_threshold.safetensors (only with --legacy-batchgenerators): the
  same label cases through batchgenerators <= 0.25.3's resize_segmentation
  (threshold 0.5 per label), also patched into nnunetv2's function. Get that
  file with `pip download batchgenerators==0.25.3 --no-deps` and unzip the
  wheel; pass the path of batchgenerators/augmentations/utils.py.

Every fixture file holds `<case>/input` and `<case>/output` (float32, the
arrays' natural shapes) and, in the metadata, `cases`: a JSON list of
per-case parameters, and `versions`: the package versions used.

Requirements: numpy, scipy, scikit-image, safetensors, nnunetv2 (which pulls
in batchgenerators), all from PyPI. Regenerating overwrites the files; the
values depend only on numpy's seeded generator and the upstream code.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import os

import numpy as np
from safetensors.numpy import save_file

from batchgenerators.augmentations.utils import resize_segmentation
from nnunetv2.preprocessing.resampling import default_resampling
from skimage.transform import resize

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "resample")


def versions():
    names = ["nnunetv2", "batchgenerators", "scipy", "scikit-image", "numpy"]
    return {n: importlib.metadata.version(n) for n in names}


def image(rng, shape):
    """Smooth-ish random intensities (sum of a noise field and a ramp)."""
    x = rng.standard_normal(shape)
    for axis in range(len(shape)):
        ramp = np.linspace(-1.0, 2.0, shape[axis]).reshape(
            [-1 if a == axis else 1 for a in range(len(shape))])
        x = x + ramp
    return (x * 3.0 + 5.0).astype(np.float32)


def labels(rng, shape, n_labels, blobby):
    """Label maps: white noise (many ties) or blobs (realistic borders)."""
    if not blobby:
        return rng.integers(0, n_labels, size=shape).astype(np.float32)
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    out = np.zeros(shape, dtype=np.float32)
    for label in range(1, n_labels):
        centre = rng.uniform(0.2, 0.8, size=len(shape))
        radius = rng.uniform(0.2, 0.45)
        d2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
        out[d2 < radius ** 2] = label
    return out


# name, channels, shape, spacing, new spacing (or explicit new shape), kwargs
NNUNET_CASES = [
    # 3-D resizes (no separate axis)
    ("iso_up_cubic", 1, (6, 9, 8), (1.2, 1.0, 1.1), (0.8, 0.7, 0.9), dict(order=3)),
    ("iso_down_cubic_2ch", 2, (9, 8, 10), (1.0, 1.0, 1.0), (1.6, 1.3, 1.45), dict(order=3)),
    ("iso_mixed_linear", 1, (7, 12, 9), (1.0, 0.8, 1.2), (1.3, 0.5, 1.2), dict(order=1)),
    ("iso_nearest", 1, (6, 7, 8), (1.0, 1.0, 1.0), (0.55, 1.5, 0.8), dict(order=0)),
    # anisotropic: axis 0 separate (thick short-axis slices)
    ("aniso_z_cubic_order_z0", 1, (5, 12, 10), (9.0, 1.5, 1.5), (6.5, 1.25, 1.1), dict(order=3, order_z=0)),
    ("aniso_z_cubic_order_z1", 1, (5, 12, 10), (9.0, 1.5, 1.5), (6.5, 1.25, 1.1), dict(order=3, order_z=1)),
    ("aniso_z_cubic_order_z3", 1, (5, 12, 10), (9.0, 1.5, 1.5), (5.0, 1.8, 1.4), dict(order=3, order_z=3)),
    ("aniso_z_down", 1, (9, 11, 13), (8.0, 1.0, 1.0), (10.0, 1.6, 1.3), dict(order=3, order_z=0)),
    # in-plane only (a 2d configuration): the separate axis keeps its size
    ("aniso_z_inplane_only", 1, (4, 13, 11), (10.0, 1.25, 1.25), (10.0, 1.6, 0.9), dict(order=3, order_z=0)),
    # other separate axes
    ("aniso_axis2", 1, (10, 9, 4), (1.0, 1.1, 5.0), (0.8, 1.3, 3.0), dict(order=3, order_z=0)),
    ("aniso_axis1_linear_z", 1, (9, 4, 10), (1.0, 6.0, 1.2), (0.7, 4.0, 1.5), dict(order=3, order_z=1)),
    # the new spacing is the anisotropic one
    ("aniso_from_new_spacing", 1, (8, 10, 9), (1.0, 1.0, 1.0), (3.5, 0.9, 1.1), dict(order=3, order_z=0)),
    # forced separation / forced 3-D
    ("forced_separate", 1, (7, 9, 8), (1.5, 1.0, 1.0), (1.1, 0.7, 1.3), dict(order=3, order_z=0, force_separate_z=True)),
    ("forced_3d", 1, (4, 10, 9), (9.0, 1.5, 1.5), (6.0, 1.2, 1.4), dict(order=3, order_z=0, force_separate_z=False)),
    # logits back to the original grid (resampling_fn_probabilities)
    ("logits_back_aniso", 3, (6, 10, 9), (6.5, 1.1, 1.2), None, dict(order=1, order_z=0, new_shape=(4, 12, 10), new_spacing=(9.0, 0.9, 1.1))),
    ("logits_back_iso", 2, (7, 8, 6), (0.9, 1.1, 1.0), None, dict(order=1, order_z=0, new_shape=(8, 7, 9), new_spacing=(0.75, 1.25, 0.85))),
    # unchanged shape: returned as is
    ("unchanged", 2, (3, 5, 4), (9.0, 1.0, 1.0), None, dict(order=3, new_shape=(3, 5, 4), new_spacing=(9.0, 1.0, 1.0))),
]

# label maps through nnU-Net's function (is_seg=True)
NNUNET_SEG_CASES = [
    ("seg_aniso_default", 1, (5, 12, 10), (9.0, 1.5, 1.5), (6.5, 1.1, 1.3), dict(order=1, order_z=0), 5, True),
    ("seg_aniso_noise", 1, (4, 8, 9), (8.0, 1.0, 1.0), (5.0, 0.5, 0.75), dict(order=1, order_z=0), 4, False),
    ("seg_aniso_order_z1", 1, (5, 10, 9), (9.0, 1.5, 1.5), (4.0, 1.2, 1.1), dict(order=1, order_z=1), 4, True),
    ("seg_aniso_order_z3", 1, (5, 10, 9), (9.0, 1.5, 1.5), (4.0, 1.2, 1.1), dict(order=1, order_z=3), 4, True),
    ("seg_iso_linear", 1, (7, 9, 8), (1.0, 1.0, 1.0), (0.5, 1.5, 0.75), dict(order=1), 4, True),
    ("seg_iso_noise_down", 1, (9, 8, 10), (1.0, 1.0, 1.0), (1.5, 2.0, 1.25), dict(order=1), 3, False),
    ("seg_iso_cubic", 1, (6, 8, 7), (1.0, 1.0, 1.0), (0.7, 1.3, 0.6), dict(order=3), 4, True),
    ("seg_nearest", 1, (6, 8, 7), (1.0, 1.0, 1.0), (0.7, 1.3, 0.6), dict(order=0), 4, False),
    ("seg_two_channels", 2, (4, 9, 8), (7.0, 1.0, 1.0), (5.0, 0.8, 0.6), dict(order=1, order_z=0), 3, True),
]

# name, shape, new shape, order
SKIMAGE_CASES = [
    ("line_cubic", (17,), (40,), 3),
    ("line_linear_down", (31,), (12,), 1),
    ("plane_up_cubic", (9, 12), (20, 17), 3),
    ("plane_down_cubic", (23, 19), (10, 14), 3),
    ("plane_mixed_linear", (11, 16), (25, 7), 1),
    ("plane_nearest", (9, 12), (20, 7), 0),
    ("plane_one_axis_kept", (10, 13), (10, 21), 3),
    ("plane_single_row", (1, 12), (3, 20), 3),
    ("volume_cubic", (6, 8, 7), (9, 5, 12), 3),
    ("volume_linear", (7, 6, 9), (4, 11, 9), 1),
]

# name, shape, new shape, order, labels, blobby
SEGMENTATION_CASES = [
    ("plane_linear_even_factor", (8, 10), (16, 20), 1, 4, False),
    ("plane_linear_noise_down", (12, 15), (7, 9), 1, 5, False),
    ("plane_linear_blobs", (14, 13), (23, 9), 1, 4, True),
    ("plane_cubic_noise", (9, 10), (17, 14), 3, 4, False),
    ("plane_four_way", (2, 2), (1, 1), 1, 4, False),
    ("volume_linear_noise", (5, 6, 7), (8, 4, 11), 1, 3, False),
    ("volume_cubic_blobs", (6, 7, 6), (9, 10, 5), 3, 4, True),
    ("single_label", (4, 5), (7, 3), 1, 1, False),
]


def nnunet_cases(rng, resample_fn):
    tensors, meta = {}, []
    for name, channels, shape, spacing, new_spacing, kw in NNUNET_CASES:
        kw = dict(kw)
        new_shape = kw.pop("new_shape", None)
        if new_spacing is None:
            new_spacing = kw.pop("new_spacing")
        if new_shape is None:
            new_shape = tuple(int(v) for v in default_resampling.compute_new_shape(shape, spacing, new_spacing))
        data = np.stack([image(rng, shape) for _ in range(channels)])
        kw.setdefault("order_z", 0)
        kw.setdefault("force_separate_z", None)
        out = resample_fn(data, new_shape, spacing, new_spacing, is_seg=False, **kw)
        tensors[f"{name}/input"] = data
        tensors[f"{name}/output"] = np.ascontiguousarray(out, dtype=np.float32)
        meta.append(dict(name=name, channels=channels, shape=list(shape), new_shape=list(new_shape),
                         spacing=list(spacing), new_spacing=list(new_spacing), is_seg=False, **kw))
    return tensors, meta


def nnunet_seg_cases(rng, resample_fn):
    tensors, meta = {}, []
    for name, channels, shape, spacing, new_spacing, kw, n_labels, blobby in NNUNET_SEG_CASES:
        kw = dict(kw)
        kw.setdefault("order_z", 0)
        kw.setdefault("force_separate_z", None)
        new_shape = tuple(int(v) for v in default_resampling.compute_new_shape(shape, spacing, new_spacing))
        data = np.stack([labels(rng, shape, n_labels, blobby) for _ in range(channels)])
        out = resample_fn(data, new_shape, spacing, new_spacing, is_seg=True, **kw)
        tensors[f"{name}/input"] = data
        tensors[f"{name}/output"] = np.ascontiguousarray(out, dtype=np.float32)
        meta.append(dict(name=name, channels=channels, shape=list(shape), new_shape=list(new_shape),
                         spacing=list(spacing), new_spacing=list(new_spacing), is_seg=True, **kw))
    return tensors, meta


def skimage_cases(rng):
    tensors, meta = {}, []
    for name, shape, new_shape, order in SKIMAGE_CASES:
        data = image(rng, shape)
        # nnU-Net resizes float64 (it casts first); the result goes back to float32
        out = resize(data.astype(np.float64), new_shape, order, mode="edge", anti_aliasing=False)
        tensors[f"{name}/input"] = data
        tensors[f"{name}/output"] = out.astype(np.float32)
        meta.append(dict(name=name, shape=list(shape), new_shape=list(new_shape), order=order))
    return tensors, meta


def segmentation_cases(rng, resize_seg):
    tensors, meta = {}, []
    for name, shape, new_shape, order, n_labels, blobby in SEGMENTATION_CASES:
        if name == "plane_four_way":
            data = np.array([[1, 2], [3, 4]], dtype=np.float32)
        else:
            data = labels(rng, shape, n_labels, blobby)
        out = resize_seg(data.astype(np.float64), new_shape, order)
        tensors[f"{name}/input"] = data
        tensors[f"{name}/output"] = np.asarray(out, dtype=np.float32)
        meta.append(dict(name=name, shape=list(shape), new_shape=list(new_shape), order=order))
    return tensors, meta


NEW_SHAPE_CASES = [
    ((5, 7, 10), (1.0, 1.0, 9.0), (2.0, 2.0, 6.5)),
    ((10, 192, 192), (9.0, 1.5625, 1.5625), (9.0, 1.25, 1.25)),
    ((12, 256, 224), (10.0, 1.367, 1.367), (10.0, 1.5, 1.5)),
    ((3, 5, 9), (1.5, 0.3, 0.7), (1.0, 0.2, 1.4)),
]


def save(path, tensors, cases, extra=None):
    metadata = {"cases": json.dumps(cases), "versions": json.dumps(versions())}
    metadata.update(extra or {})
    save_file(tensors, path, metadata=metadata)
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes, {len(cases)} cases)")


def load_legacy_resize_segmentation(path):
    spec = importlib.util.spec_from_file_location("legacy_batchgenerators_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.resize_segmentation


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=FIXTURES, help="fixture folder")
    parser.add_argument("--legacy-batchgenerators", metavar="UTILS_PY",
                        help="batchgenerators/augmentations/utils.py of batchgenerators <= 0.25.3")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    resample_fn = default_resampling.resample_data_or_seg_to_shape

    rng = np.random.default_rng(20250605)
    tensors, cases = nnunet_cases(rng, resample_fn)
    seg_tensors, seg_cases = nnunet_seg_cases(rng, resample_fn)
    tensors.update(seg_tensors)
    new_shapes = [dict(shape=list(s), spacing=list(a), new_spacing=list(b),
                       new_shape=[int(v) for v in default_resampling.compute_new_shape(s, a, b)])
                  for s, a, b in NEW_SHAPE_CASES]
    save(os.path.join(args.out, "nnunet.safetensors"), tensors, cases + seg_cases,
         {"new_shape_cases": json.dumps(new_shapes)})

    rng = np.random.default_rng(20250606)
    save(os.path.join(args.out, "skimage.safetensors"), *skimage_cases(rng))

    rng = np.random.default_rng(20250607)
    save(os.path.join(args.out, "segmentation.safetensors"), *segmentation_cases(rng, resize_segmentation))

    if args.legacy_batchgenerators:
        legacy = load_legacy_resize_segmentation(args.legacy_batchgenerators)
        rng = np.random.default_rng(20250607)
        tensors, cases = segmentation_cases(rng, legacy)
        # nnU-Net's function looks resize_segmentation up in its own module
        default_resampling.resize_segmentation = legacy
        rng = np.random.default_rng(20250608)
        seg_tensors, seg_cases = nnunet_seg_cases(rng, resample_fn)
        default_resampling.resize_segmentation = resize_segmentation
        tensors.update({f"nnunet_{k}": v for k, v in seg_tensors.items()})
        for case in seg_cases:
            case["name"] = "nnunet_" + case["name"]
        save(os.path.join(args.out, "legacy_threshold.safetensors"), tensors, cases + seg_cases)


if __name__ == "__main__":
    main()
