"""Diffusion synthesis (DiffusionModel) and nnU-Net segmentation (Segmenter)."""

import ctypes
import os
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from . import _ffi, _progress
from ._ffi import Handle, check, lib
from ._image import as_image, input_volume, output_volume, same_shape, to_claim_dtype
from ._smile import label_scheme

__all__ = [
    "DiffusionInfo",
    "DiffusionModel",
    "Segmenter",
    "SegmenterInfo",
    "measure_histogram",
    "segment",
    "synthesize",
]

_PRECISIONS = {
    "auto": _ffi.CLAIM_PRECISION_AUTO,
    "fp32": _ffi.CLAIM_PRECISION_FP32,
    "fp16": _ffi.CLAIM_PRECISION_FP16,
}


def _load_options(device, precision):
    options = _ffi.default(_ffi.claim_load_options)
    name, _, index = str(device).lower().partition(":")
    if name == "cpu" and not index:
        options.device = _ffi.CLAIM_DEVICE_CPU
    elif name == "cuda":
        options.device = _ffi.CLAIM_DEVICE_CUDA
        try:
            options.device_index = int(index) if index else 0
        except ValueError:
            raise ValueError(f"device: {device!r} is not 'cpu', 'cuda' or 'cuda:N'") from None
    else:
        raise ValueError(f"device: {device!r} is not 'cpu', 'cuda' or 'cuda:N'")
    key = str(precision).lower()
    if key not in _PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(_PRECISIONS)}")
    options.precision = _PRECISIONS[key]
    return options


def _path(path):
    return os.fsencode(os.fspath(path))


def _scheme_or_null(lv, myo, scar, mvo_label, rv):
    """NULL (the library's EMIDEC default) when the labels are EMIDEC's."""
    if (lv, myo, scar, mvo_label, rv) == (1, 2, 3, 4, None):
        return None
    return ctypes.pointer(label_scheme(lv, myo, scar, mvo_label, rv))


def _tensor(array, name):
    array = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    if not 1 <= array.ndim <= _ffi.CLAIM_TENSOR_MAX_DIMS:
        raise ValueError(f"{name}: expected 1 to 8 dimensions, got shape {array.shape}")
    t = _ffi.sized(_ffi.claim_tensor)
    t.ndim = array.ndim
    t.shape[: array.ndim] = list(array.shape)
    t.data = array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    t.dtype = _ffi.CLAIM_TENSOR_F32
    return t, array


@dataclass(frozen=True)
class DiffusionInfo:
    """What a loaded denoiser is (claim_diffusion_info): image channels (CLAIM
    1; LeFusion-EMIDEC 2, scar then MVO), condition length (16 per
    histogram; 0 unconditional), base width, U-Net levels, the multiple H
    and W must be, default frames per item, histograms the condition takes."""

    channels: int
    cond_dim: int
    dim: int
    levels: int
    size_multiple: int
    frames: int
    histogram_count: int


class DiffusionModel(Handle):
    """A LeFusion/CLAIM denoiser (claim_diffusion_load).

    path: a .safetensors file, or "builtin" for the small CLAIM-layout model
    shipped inside the library (a file named builtin is "./builtin").
    device: "cpu", "cuda" or "cuda:N" (CUDA where this build or machine has
    none raises ClaimError DEVICE; there is no silent fallback). precision:
    "auto", "fp32" or "fp16" (GPU only).

    Raises ClaimError: IO (missing file), FORMAT (not safetensors), MODEL
    (a tensor missing or misshapen). Immutable once loaded: several threads
    may synthesize with one model at once.
    """

    _free = staticmethod(lambda h: lib.claim_diffusion_free(h))

    def __init__(self, path="builtin", device="cpu", precision="auto"):
        super().__init__()
        options = _load_options(device, precision)
        handle = _ffi.claim_diffusion_model_p()
        check(lib.claim_diffusion_load(_path(path), ctypes.byref(options), ctypes.byref(handle)))
        self._handle = handle
        self.path = os.fspath(path)
        self.device = str(device)
        out = _ffi.sized(_ffi.claim_diffusion_info)
        check(lib.claim_diffusion_info_get(self._handle, ctypes.byref(out)))
        self.info = DiffusionInfo(
            out.channels, out.cond_dim, out.dim, out.levels, out.size_multiple, out.frames, out.histogram_count
        )

    def __repr__(self):
        return f"DiffusionModel({self.path!r}, device={self.device!r}, info={self.info})"

    def synthesize(self, image, labels, **kwargs):
        """`synthesize(self, image, labels, **kwargs)`."""
        return synthesize(self, image, labels, **kwargs)

    def measure_histogram(self, image, labels, **kwargs):
        """`measure_histogram(self, image, labels, **kwargs)`."""
        return measure_histogram(self, image, labels, **kwargs)

    def predict_noise(self, x, timesteps, cond=None):
        """One network evaluation (claim_diffusion_predict_noise): the noise
        predicted in `x` ([B, C, F, H, W] float32) at `timesteps` (B ints);
        `cond` None (learned null condition) or [B, cond_dim]. Returns an
        array shaped like `x`."""
        tx, x = _tensor(x, "x")
        steps = np.ascontiguousarray(np.asarray(timesteps, dtype=np.int64).reshape(-1))
        if steps.size != x.shape[0]:
            raise ValueError(f"timesteps: expected {x.shape[0]} values (one per batch item), got {steps.size}")
        tc = None
        if cond is not None:
            tc, cond = _tensor(cond, "cond")
        to, out = _tensor(np.empty_like(x), "out")
        check(
            lib.claim_diffusion_predict_noise(
                self.handle,
                ctypes.byref(tx),
                steps.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
                ctypes.byref(tc) if tc is not None else None,
                ctypes.byref(to),
            )
        )
        return out


def _synthesis_params(
    seed,
    t_start,
    jump_length,
    jump_n_sample,
    guidance_scale,
    histogram,
    perturb_histogram,
    batch_size,
    crop_size,
    frames,
    keep_network_output,
    scheme,
    channel_labels,
):
    p = _ffi.default(_ffi.claim_synthesis_params)
    p.seed = int(seed)
    p.t_start = int(t_start)
    p.jump_length = int(jump_length)
    p.jump_n_sample = int(jump_n_sample)
    p.guidance_scale = float(guidance_scale)
    if histogram is None or (isinstance(histogram, str) and histogram.lower() == "preset"):
        p.histogram_source = _ffi.CLAIM_HISTOGRAM_PRESET
    elif isinstance(histogram, str) and histogram.lower() == "null":
        p.histogram_source = _ffi.CLAIM_HISTOGRAM_NULL
    elif isinstance(histogram, str):
        raise ValueError(f"histogram: {histogram!r} is not 'preset', 'null', None or a sequence of values")
    else:
        values = np.asarray(histogram, dtype=np.float32).reshape(-1)
        if not 1 <= values.size <= _ffi.CLAIM_HISTOGRAM_MAX:
            raise ValueError(f"histogram: expected 1 to {_ffi.CLAIM_HISTOGRAM_MAX} values, got {values.size}")
        p.histogram_source = _ffi.CLAIM_HISTOGRAM_VALUES
        p.histogram_length = values.size
        p.histogram[: values.size] = values.tolist()
    p.perturb_histogram = 1 if perturb_histogram else 0
    p.keep_network_output = 1 if keep_network_output else 0
    p.batch_size = int(batch_size)
    p.crop_size = int(crop_size)
    p.frames = int(frames)
    p.labels = scheme
    if channel_labels is not None:
        values = [int(v) for v in channel_labels]
        if not 1 <= len(values) <= _ffi.CLAIM_MAX_CHANNELS:
            raise ValueError(f"channel_labels: expected 1 to {_ffi.CLAIM_MAX_CHANNELS} labels, got {len(values)}")
        p.channel_count = len(values)
        p.channel_labels[: len(values)] = values
    return p


def synthesize(
    model,
    image,
    labels,
    seed=0,
    t_start=300,
    jump_length=5,
    jump_n_sample=5,
    guidance_scale=1.0,
    histogram=None,
    batch_size=0,
    crop_size=72,
    frames=0,
    keep_network_output=False,
    progress=None,
    perturb_histogram=True,
    channel_labels=None,
    lv=1,
    myo=2,
    scar=3,
    mvo_label=4,
    rv=None,
    dtype=None,
):
    """Paints scar intensities into a copy of `image` inside the scar and MVO
    labels of `labels` with RePaint (claim_diffusion_synthesize).

    image, labels: same shape (z, y, x); labels in the scheme lv/myo/scar/
    mvo_label/rv and holding scar or MVO. t_start (1–300), jump_length,
    jump_n_sample: the RePaint schedule (300/5/5 = 1480 network evaluations
    per batch; 300/1/1 plain DDPM). guidance_scale: classifier-free guidance
    (1 = off). histogram: None or "preset" (the layout's built-in centres),
    "null" (unconditional), or the whole condition as values (16 per
    channel, e.g. from `measure_histogram`); perturb_histogram: ±10 % per bin
    as upstream. batch_size: items per network batch (0: automatic, 4 on the
    CPU and from free memory on a GPU; the image does not depend on it). crop_size: in-plane
    window side around the LV (a multiple of `model.info.size_multiple`).
    frames: slices per item (0: the model's). keep_network_output: paste the
    network's whole window instead of only the lesion voxels.
    channel_labels: the label each model channel paints. dtype: None (the
    image's, rounded and clamped for integers) or numpy.float32.
    progress: None or callable(done, total) over network evaluations,
    returning True to cancel (ClaimError CANCELLED); an exception it raises
    (KeyboardInterrupt included) cancels the call and is re-raised.

    The same seed, inputs and parameters give the same image on every run.
    Returns an Image with the geometry of `image`.
    """
    if not isinstance(model, DiffusionModel):
        raise TypeError(f"model: expected a claim.DiffusionModel, got {type(model).__name__}")
    img = as_image(image, "image")
    lab = as_image(labels, "labels")
    same_shape(img, lab, "image", "labels")
    vimg = input_volume(img, "image")
    vlab = input_volume(lab, "labels")
    out_dtype = vimg.array.dtype if dtype is None else to_claim_dtype(np.zeros(0, dtype=dtype), "dtype").dtype
    scheme = _scheme_or_null(lv, myo, scar, mvo_label, rv)
    params = _synthesis_params(
        seed,
        t_start,
        jump_length,
        jump_n_sample,
        guidance_scale,
        histogram,
        perturb_histogram,
        batch_size,
        crop_size,
        frames,
        keep_network_output,
        scheme,
        channel_labels,
    )
    out = output_volume(vimg.geometry, out_dtype, vimg.array.shape)
    handle = model.handle
    _progress.run(
        lambda cb: lib.claim_diffusion_synthesize(
            handle, vimg.ref, vlab.ref, ctypes.byref(params), cb, None, out.ref
        ),
        progress,
    )
    return out.to_image()


def measure_histogram(model, image, labels, crop_size=72, frames=0, channel_labels=None, lv=1, myo=2, scar=3, mvo_label=4, rv=None):
    """The model's whole histogram condition measured from a reference case
    (claim_histogram_measure_channels): per channel, the normalised 16-bin
    histogram of the voxels carrying that channel's label, scaled as
    `synthesize` scales them; float32 array of 16 × channels values, for
    `synthesize(..., histogram=...)`."""
    img = as_image(image, "image")
    lab = as_image(labels, "labels")
    same_shape(img, lab, "image", "labels")
    vimg = input_volume(img, "image")
    vlab = input_volume(lab, "labels")
    scheme = _scheme_or_null(lv, myo, scar, mvo_label, rv)
    params = _synthesis_params(0, 300, 5, 5, 1.0, None, True, 4, crop_size, frames, False, scheme, channel_labels)
    out = np.zeros(_ffi.CLAIM_HISTOGRAM_MAX, dtype=np.float32)
    length = ctypes.c_uint32(0)
    check(
        lib.claim_histogram_measure_channels(
            model.handle,
            vimg.ref,
            vlab.ref,
            ctypes.byref(params),
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            out.size,
            ctypes.byref(length),
        )
    )
    return out[: length.value].copy()


@dataclass(frozen=True)
class SegmenterInfo:
    """What a loaded nnU-Net model is (claim_segmenter_info). Axes of
    patch_size, spacing and mirroring_axes are the network's (after the
    plans' transpose_forward), slowest first, like nnU-Net's plans."""

    spatial_dims: int
    input_channels: int
    num_classes: int
    patch_size: Tuple[int, ...]
    spacing: Tuple[float, ...]
    folds: Tuple[int, ...]
    parameters: int
    mirroring_axes: Tuple[int, ...]
    configuration: str
    trainer: str


class Segmenter(Handle):
    """A trained nnU-Net v2 model (claim_segmenter_load), run without Python
    or PyTorch.

    path: an nnU-Net results folder, one checkpoint_final.pth, a safetensors
    bundle from `claim import`, or "builtin" (the small 2-D model shipped
    inside the library). folds: None (every numbered fold present; an
    ensemble) or a sequence of fold numbers, "all" for fold_all.
    configuration: None (the trained one) or a plans configuration name.
    device, precision: as DiffusionModel.

    Raises ClaimError: IO (missing files), FORMAT, MODEL, UNSUPPORTED,
    INVALID_ARGUMENT (a fold that is not there; the message lists those that
    are). Several threads may segment with one segmenter at once.
    """

    _free = staticmethod(lambda h: lib.claim_segmenter_free(h))

    def __init__(self, path="builtin", folds=None, configuration=None, device="cpu", precision="auto"):
        super().__init__()
        load = _load_options(device, precision)
        options = _ffi.default(_ffi.claim_segmenter_options)
        if folds is not None:
            if isinstance(folds, (str, int)):
                folds = [folds]
            values = [_ffi.CLAIM_FOLD_ALL if str(f).lower() == "all" else int(f) for f in folds]
            if len(values) > _ffi.CLAIM_SEGMENTER_MAX_FOLDS:
                raise ValueError(f"folds: at most {_ffi.CLAIM_SEGMENTER_MAX_FOLDS}, got {len(values)}")
            options.fold_count = len(values)
            options.folds[: len(values)] = values
        if configuration:
            name = str(configuration).encode("utf-8")
            if len(name) >= _ffi.CLAIM_SEGMENTER_NAME_MAX:
                raise ValueError(f"configuration: {configuration!r} is longer than 63 bytes")
            options.configuration = name
        handle = _ffi.claim_segmenter_p()
        check(lib.claim_segmenter_load(_path(path), ctypes.byref(load), ctypes.byref(options), ctypes.byref(handle)))
        self._handle = handle
        self.path = os.fspath(path)
        self.device = str(device)
        out = _ffi.sized(_ffi.claim_segmenter_info)
        check(lib.claim_segmenter_info_get(self._handle, ctypes.byref(out)))
        n = out.spatial_dims
        self.info = SegmenterInfo(
            spatial_dims=n,
            input_channels=out.input_channels,
            num_classes=out.num_classes,
            patch_size=tuple(out.patch_size[:n]),
            spacing=tuple(out.spacing[:n]),
            folds=tuple(out.folds[: out.fold_count]),
            parameters=out.parameters,
            mirroring_axes=tuple(out.mirroring_axes[: out.mirroring_axis_count]),
            configuration=out.configuration.decode("utf-8", "replace"),
            trainer=out.trainer.decode("utf-8", "replace"),
        )

    def __repr__(self):
        return f"Segmenter({self.path!r}, device={self.device!r}, info={self.info})"

    def segment(self, image, **kwargs):
        """`segment(self, image, **kwargs)`."""
        return segment(self, image, **kwargs)

    def predict_logits(self, x):
        """Raw logits of the first fold's network (claim_segmenter_predict_logits):
        `x` [B, C, H, W] (2-D) or [B, C, D, H, W] float32, each spatial size a
        multiple of the network's strides; returns [B, num_classes, ...]."""
        tx, x = _tensor(x, "x")
        out = np.empty((x.shape[0], self.info.num_classes) + x.shape[2:], dtype=np.float32)
        to, out = _tensor(out, "out")
        check(lib.claim_segmenter_predict_logits(self.handle, ctypes.byref(tx), ctypes.byref(to)))
        return out


def segment(
    segmenter,
    image,
    mirroring=True,
    step_size=0.5,
    postprocess=True,
    progress=None,
    lv=1,
    myo=2,
    scar=3,
    mvo_label=4,
    rv=None,
):
    """Segments LV cavity, myocardium, scar and MVO in `image` as nnU-Net's
    predictor does (claim_segmenter_segment).

    mirroring: test-time mirroring (2^axes slower). step_size: sliding
    window step in (0, 1] of the patch. postprocess: scar/MVO only where
    they touch predicted myocardium, MVO only inside scar. lv...rv: the
    values written for each tissue (defaults EMIDEC; classes with other
    names keep their value). progress: as in `synthesize` (units are network
    evaluations). Returns a uint8 Image with the geometry of `image`.
    """
    if not isinstance(segmenter, Segmenter):
        raise TypeError(f"segmenter: expected a claim.Segmenter, got {type(segmenter).__name__}")
    vimg = input_volume(image, "image")
    params = _ffi.default(_ffi.claim_segmentation_params)
    params.mirroring = 1 if mirroring else 0
    params.step_size = float(step_size)
    params.postprocess = 1 if postprocess else 0
    params.labels = _scheme_or_null(lv, myo, scar, mvo_label, rv)
    out = output_volume(vimg.geometry, np.uint8, vimg.array.shape)
    handle = segmenter.handle
    _progress.run(
        lambda cb: lib.claim_segmenter_segment(handle, vimg.ref, ctypes.byref(params), cb, None, out.ref),
        progress,
    )
    return out.to_image()

