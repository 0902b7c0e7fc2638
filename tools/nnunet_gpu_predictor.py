#!/usr/bin/env python3
"""nnU-Net's own nnUNetPredictor on the GPU, on the case and results folders
claim's GPU segmenter test uses, for CUDA back-end III's speed comparison.

tests/engine/gpu.rs (`cuda_segmenter_matches_the_cpu_or_skipped_no_cuda_device`)
writes, when CLAIM_GPU_CASE_DIR is set, the built-in phantom as
`phantom_image.f32` (raw little-endian float32, z·y·x) with
`phantom_image.json` (shape and spacing in (z, y, x) order), and claim's GPU
label map per configuration as `phantom_labels_<configuration>.u8`. This
script predicts the same image with nnUNetPredictor from the same results
folders (tests/fixtures/nnunet: 2d with folds 0 and 1, 3d_fullres with fold
0; mirroring on, step 0.5, Gaussian weighting, everything on the device, as
nnU-Net's defaults), once to warm up and then --repeats times, and prints
one JSON line per configuration:

    {"kind": "nnunet_bench", "configuration": ..., "nnunet_s": median seconds,
     "label_agreement_with_claim": fraction of equal voxels, "voxels": ...}

The time is predict_single_npy_array's: preprocessing, sliding windows,
resampling back and argmax, the work claim's `gpu_s` covers.

On the GPU machine nnunetv2 and its pure-Python dependencies come as wheels
(tools/gpu_build.sh puts them in .gpu/wheels; tools/gpu_check.sh installs
them). Modules that nnunetv2 imports at start-up but never calls on this
path (image readers and writers, the training-time augmentation library)
are given stand-ins when they are not installed.

    python3 tools/nnunet_gpu_predictor.py --case DIR [--fixtures tests/fixtures/nnunet]
        [--device cuda] [--repeats 3]
"""
import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import statistics
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))

# Imported by nnunetv2 modules at start-up, never called when predicting a
# numpy array: readers/writers (SimpleITK, nibabel, tifffile codecs),
# dataset storage (blosc2), connected components (acvl_utils' cc3d), the
# trainers' augmentations (batchgeneratorsv2) and plotting helpers.
STAND_IN_ROOTS = (
    "SimpleITK",
    "nibabel",
    "blosc2",
    "cc3d",
    "imagecodecs",
    "graphviz",
    "yacs",
    "batchgeneratorsv2",
    "pydicom",
    "dicom2nifti",
    "future",
    "unittest2",
)


def _inert_init(self, *args, **kwargs):
    pass


def _stand_in_attribute(owner, name):
    """A new inert class named `name`, kept on `owner`."""
    if name.startswith("__"):
        raise AttributeError(name)
    value = _StandInType(name, (), {"__init__": _inert_init})
    setattr(owner, name, value)
    return value


class _StandInType(type):
    """Inert classes whose attributes are inert classes again: enough for
    `from X import Y`, `X.sub.Y` in annotations, base classes and
    module-level constants."""

    __getattr__ = _stand_in_attribute


class _StandInModule(types.ModuleType):
    """A module whose every attribute is an inert class (`_StandInType`)."""

    __getattr__ = _stand_in_attribute


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves stand-ins for the missing packages in `roots` (and any of
    their submodules); consulted after every real finder."""

    def __init__(self, roots):
        self.roots = set(roots)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def install_stand_ins():
    missing = [r for r in STAND_IN_ROOTS if importlib.util.find_spec(r) is None]
    if missing:
        sys.meta_path.append(_StandInFinder(missing))
        print(f"stand-ins for the missing {', '.join(missing)}", file=sys.stderr)
    return missing


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", required=True, help="folder written by the Rust GPU test")
    ap.add_argument("--fixtures", default=os.path.join(ROOT, "tests", "fixtures", "nnunet"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    install_stand_ins()
    import numpy as np
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    meta = json.load(open(os.path.join(args.case, "phantom_image.json")))
    shape = tuple(meta["shape_zyx"])
    image = np.fromfile(os.path.join(args.case, "phantom_image.f32"), dtype="<f4").reshape(shape)
    properties = {"spacing": [float(s) for s in meta["spacing_zyx"]]}
    device = torch.device(args.device)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for configuration, folds in (("2d", (0, 1)), ("3d_fullres", (0,))):
        folder = os.path.join(args.fixtures, "Dataset990_ClaimTiny", f"nnUNetTrainer__nnUNetPlans__{configuration}")
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(folder, use_folds=folds,
                                                       checkpoint_name="checkpoint_final.pth")
        times = []
        for run in range(args.repeats + 1):
            synchronize()
            start = time.perf_counter()
            labels = predictor.predict_single_npy_array(image[None].copy(), properties, None, None, False)
            synchronize()
            if run > 0:  # the first run loads kernels and fills caches
                times.append(time.perf_counter() - start)
        labels = np.asarray(labels)
        row = {"kind": "nnunet_bench", "configuration": configuration, "device": str(device),
               "nnunet_s": statistics.median(times), "voxels": int(labels.size)}
        claim_path = os.path.join(args.case, f"phantom_labels_{configuration}.u8")
        if os.path.exists(claim_path):
            claim_labels = np.fromfile(claim_path, dtype=np.uint8).reshape(labels.shape)
            row["label_agreement_with_claim"] = float((claim_labels == labels).mean())
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
