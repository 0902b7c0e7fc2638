"""The claim calls of the module on plain `claim.Image`s (no Slicer nodes).

Each function takes the `claim` module as its first argument so that the
caller decides where it comes from (Slicer's Python, a test environment).
`ModelCache` keeps the last loaded diffusion model and segmenter so that
running twice with the same settings does not load them again.
"""

import threading

import numpy as np

from . import geometry, labels as L

__all__ = [
    "ModelCache",
    "image_from_slicer_array",
    "slicer_array_from_image",
    "draw_scar",
    "synthesize",
    "segment",
]


def image_from_slicer_array(claim, array, ijk_to_ras):
    """A claim.Image from a Slicer-style volume: `array` indexed [k, j, i]
    (what slicer.util.arrayFromVolume returns; copied) and its 4x4
    IJK-to-RAS matrix."""
    spacing, origin, direction = geometry.lps_geometry_from_ijk_to_ras(ijk_to_ras)
    return claim.Image(np.array(array, copy=True), spacing, origin, direction)


def slicer_array_from_image(image):
    """(array indexed [k, j, i], 4x4 IJK-to-RAS matrix) of a claim.Image,
    ready for slicer.util.updateVolumeFromArray / SetIJKToRASMatrix."""
    return image.array, geometry.ijk_to_ras_from_lps_geometry(image.spacing, image.origin, image.direction)


def _lesion_check(labels):
    if not np.any((labels == L.SCAR) | (labels == L.MVO)):
        raise ValueError("the scar mask has no Scar or MVO voxels: draw one with SMILE first")


def draw_scar(claim, labels, options):
    """One SMILE mask on a label map in the module's scheme (claim.Image):
    returns (mask Image in the same scheme and geometry, claim.SmileInfo).
    Raises ValueError for bad options or a map without LV cavity and
    myocardium, claim.ClaimError for what the library rejects."""
    problems = options.problems()
    if problems:
        raise ValueError("; ".join(problems))
    problem = L.heart_problem(labels.array)
    if problem:
        raise ValueError(problem)
    return claim.smile_draw(
        labels,
        seed=int(options.seed),
        pattern=options.pattern,
        territory=options.territory,
        burden=None if options.burden is None else float(options.burden),
        transmurality=None if options.transmurality is None else float(options.transmurality),
        mvo=bool(options.mvo),
        rotation_deg=float(options.rotation_deg),
        **L.claim_kwargs(labels.array),
    )


class ModelCache:
    """The last diffusion model and segmenter loaded, keyed by their load
    settings; thread-safe. Models are immutable once loaded, so several jobs
    may share one. Dropping a model (another key, clear()) only drops the
    reference: a job still running keeps its own until it ends."""

    def __init__(self):
        self._lock = threading.Lock()
        self._diffusion = (None, None)
        self._segmenter = (None, None)

    def diffusion(self, claim, path, device):
        key = (str(path), str(device))
        with self._lock:
            if self._diffusion[0] == key:
                return self._diffusion[1]
        model = claim.DiffusionModel(str(path), device=str(device))
        with self._lock:
            self._diffusion = (key, model)
        return model

    def segmenter(self, claim, path, folds, configuration, device):
        key = (str(path), None if folds is None else tuple(folds), configuration or None, str(device))
        with self._lock:
            if self._segmenter[0] == key:
                return self._segmenter[1]
        model = claim.Segmenter(str(path), folds=folds, configuration=configuration or None, device=str(device))
        with self._lock:
            self._segmenter = (key, model)
        return model

    def clear(self):
        with self._lock:
            self._diffusion = (None, None)
            self._segmenter = (None, None)


def synthesize(claim, cache, image, labels, options, progress=None):
    """Scar intensities painted into `image` inside the Scar/MVO voxels of
    `labels` (same grid, module scheme) by the diffusion model of
    `options`; returns a claim.Image like `image`. Runs for long: call it on
    a worker thread with `progress` (claim's callable(done, total) -> cancel)."""
    problems = options.problems()
    if problems:
        raise ValueError("; ".join(problems))
    _lesion_check(labels.array)
    model = cache.diffusion(claim, options.model_path, options.device)
    return claim.synthesize(
        model,
        image,
        labels,
        seed=int(options.seed),
        t_start=int(options.t_start),
        jump_length=int(options.jump_length),
        jump_n_sample=int(options.jump_n_sample),
        guidance_scale=float(options.guidance_scale),
        batch_size=int(options.batch_size),
        crop_size=int(options.crop_size),
        progress=progress,
        **L.claim_kwargs(labels.array),
    )


def segment(claim, cache, image, options, progress=None):
    """LV cavity, myocardium, scar, MVO (and RV, when the model has one)
    predicted in `image` by the nnU-Net model of `options`; returns a uint8
    claim.Image in the module's scheme. Call it on a worker thread."""
    problems = options.problems()
    if problems:
        raise ValueError("; ".join(problems))
    segmenter = cache.segmenter(claim, options.model_path, options.folds_list(), options.configuration, options.device)
    return claim.segment(
        segmenter,
        image,
        mirroring=bool(options.mirroring),
        step_size=float(options.step_size),
        postprocess=bool(options.postprocess),
        progress=progress,
        lv=L.LV,
        myo=L.MYO,
        scar=L.SCAR,
        mvo_label=L.MVO,
        rv=L.RV,
    )
