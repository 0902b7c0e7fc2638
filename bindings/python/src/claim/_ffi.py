"""ctypes mirror of include/claim.h: constants, structs, prototypes, loading.

Everything here is a one-to-one transcription of the C header (ABI 2.1); the
Pythonic layer lives in the other modules. `tests/test_layout.py` compiles a
C program against the header and checks every struct's size and every
field's offset against these definitions, so a drift fails the tests.

The library is loaded by path with `ctypes.CDLL`, which releases the GIL
around every foreign call: a long synthesis or segmentation does not block
the interpreter's other threads.
"""

import ctypes
import os
import sys
from ctypes import (
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_double,
    c_float,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)

from ._errors import ClaimError

# The header this mirror transcribes (tests/test_layout.py fails when
# include/claim.h moves on, so that new fields and functions get mirrored).
CLAIM_ABI_VERSION_MAJOR = 2
CLAIM_ABI_VERSION_MINOR = 2
# What a library must have for this package to load it: the same major and
# at least this minor (ABI 2.1 appended claim_diffusion_info.frames and
# histogram_count, and claim_synthesis_params' channel map, used here).
# Functions appended later are bound when present (OPTIONAL_PROTOTYPES).
ABI_MAJOR = CLAIM_ABI_VERSION_MAJOR
ABI_MINOR = 1

# --- constants (numbers never change; see claim.h) -------------------------

CLAIM_BUILD_ARCHS_MAX = 128
CLAIM_BUILD_STATUS_MAX = 512
CLAIM_MAX_VOXELS_DEFAULT = 1 << 28
CLAIM_AHA_SEGMENT_COUNT = 17
CLAIM_AHA_STATS_ENTRIES = 18
CLAIM_TENSOR_MAX_DIMS = 8
CLAIM_HISTOGRAM_BINS = 16
CLAIM_HISTOGRAM_MAX = 32
CLAIM_MAX_CHANNELS = 8
CLAIM_SEGMENTER_MAX_FOLDS = 16
CLAIM_FOLD_ALL = -1
CLAIM_SEGMENTER_NAME_MAX = 64

CLAIM_OK = 0
CLAIM_ERR_INVALID_ARGUMENT = 1
CLAIM_ERR_IO = 2
CLAIM_ERR_FORMAT = 3
CLAIM_ERR_MODEL = 4
CLAIM_ERR_DEVICE = 5
CLAIM_ERR_OUT_OF_MEMORY = 6
CLAIM_ERR_CANCELLED = 7
CLAIM_ERR_UNSUPPORTED = 8
CLAIM_ERR_INTERNAL = 9

CLAIM_VOXEL_U8 = 0
CLAIM_VOXEL_I16 = 1
CLAIM_VOXEL_U16 = 2
CLAIM_VOXEL_I32 = 3
CLAIM_VOXEL_F32 = 4

CLAIM_PATTERN_ISCHEMIC = 0
CLAIM_PATTERN_MIDWALL = 1
CLAIM_PATTERN_EPICARDIAL = 2
CLAIM_PATTERN_INSERTION = 3
CLAIM_PATTERN_CLAIM = 4

CLAIM_TERRITORY_ANY = 0
CLAIM_TERRITORY_LAD = 1
CLAIM_TERRITORY_RCA = 2
CLAIM_TERRITORY_LCX = 3

CLAIM_DEVICE_CPU = 0
CLAIM_DEVICE_CUDA = 1

CLAIM_PRECISION_FP32 = 0
CLAIM_PRECISION_FP16 = 1
CLAIM_PRECISION_AUTO = 2

CLAIM_TENSOR_F32 = 0

CLAIM_HISTOGRAM_PRESET = 0
CLAIM_HISTOGRAM_VALUES = 1
CLAIM_HISTOGRAM_NULL = 2

# --- structs ----------------------------------------------------------------


class claim_build_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("cuda_feature", c_int32),
        ("cuda_available", c_int32),
        ("cuda_driver_version", c_int32),
        ("cuda_device_count", c_uint32),
        ("kernel_archs", c_char * CLAIM_BUILD_ARCHS_MAX),
        ("cuda_status", c_char * CLAIM_BUILD_STATUS_MAX),
    ]


class claim_label_scheme(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("lv_cavity", c_int32),
        ("myocardium", c_int32),
        ("scar", c_int32),
        ("mvo", c_int32),
        ("rv", c_int32),
    ]


class claim_volume(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("voxel_type", c_int32),
        ("dims", c_uint64 * 3),
        ("spacing", c_double * 3),
        ("origin", c_double * 3),
        ("direction", c_double * 9),
        ("data", c_void_p),
    ]


class claim_aha_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("labels", POINTER(claim_label_scheme)),
        ("rotation_deg", c_double),
        ("long_axis", c_double * 3),
    ]


class claim_smile_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("pattern", c_int32),
        ("territory", c_int32),
        ("mvo", c_int32),
        ("burden", c_double),
        ("transmurality", c_double),
        ("labels", POINTER(claim_label_scheme)),
        ("aha", POINTER(claim_aha_params)),
    ]


class claim_smile_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("pattern", c_int32),
        ("territory", c_int32),
        ("segments_chosen_count", c_uint32),
        ("segments_chosen", c_uint8 * CLAIM_AHA_SEGMENT_COUNT),
        ("burden_target", c_double),
        ("burden", c_double),
        ("transmurality", c_double),
        ("territory_fraction", c_double),
        ("scar_voxels", c_uint64),
        ("mvo_voxels", c_uint64),
        ("seed", c_uint64),
    ]


class claim_aha_segment_stats(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("myocardium_ml", c_double * CLAIM_AHA_STATS_ENTRIES),
        ("scar_ml", c_double * CLAIM_AHA_STATS_ENTRIES),
        ("mvo_ml", c_double * CLAIM_AHA_STATS_ENTRIES),
        ("scar_percent", c_double * CLAIM_AHA_STATS_ENTRIES),
        ("total_myocardium_ml", c_double),
        ("total_scar_ml", c_double),
        ("total_mvo_ml", c_double),
        ("burden", c_double),
    ]


class claim_bullseye_options(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("size_px", c_uint32),
        ("max_percent", c_double),
        ("show_numbers", c_int32),
        ("show_percent", c_int32),
        ("title", c_char_p),
    ]


class claim_load_options(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("device", c_int32),
        ("device_index", c_int32),
        ("precision", c_int32),
    ]


class claim_diffusion_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("channels", c_uint32),
        ("cond_dim", c_uint32),
        ("dim", c_uint32),
        ("levels", c_uint32),
        ("size_multiple", c_uint32),
        ("frames", c_uint32),
        ("histogram_count", c_uint32),
    ]


class claim_tensor(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("ndim", c_uint32),
        ("shape", c_uint64 * CLAIM_TENSOR_MAX_DIMS),
        ("data", POINTER(c_float)),
        ("dtype", c_int32),
    ]


class claim_synthesis_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("t_start", c_uint32),
        ("jump_length", c_uint32),
        ("jump_n_sample", c_uint32),
        ("seed", c_uint64),
        ("guidance_scale", c_double),
        ("histogram_source", c_int32),
        ("histogram_length", c_uint32),
        ("histogram", c_float * CLAIM_HISTOGRAM_MAX),
        ("perturb_histogram", c_int32),
        ("keep_network_output", c_int32),
        ("batch_size", c_uint32),
        ("crop_size", c_uint32),
        ("frames", c_uint32),
        ("labels", POINTER(claim_label_scheme)),
        ("channel_count", c_uint32),
        ("channel_labels", c_int32 * CLAIM_MAX_CHANNELS),
    ]


class claim_segmenter_options(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("fold_count", c_uint32),
        ("folds", c_int32 * CLAIM_SEGMENTER_MAX_FOLDS),
        ("configuration", c_char * CLAIM_SEGMENTER_NAME_MAX),
    ]


class claim_segmenter_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("spatial_dims", c_uint32),
        ("input_channels", c_uint32),
        ("num_classes", c_uint32),
        ("patch_size", c_uint32 * 3),
        ("fold_count", c_uint32),
        ("spacing", c_double * 3),
        ("parameters", c_uint64),
        ("folds", c_int32 * CLAIM_SEGMENTER_MAX_FOLDS),
        ("mirroring_axis_count", c_uint32),
        ("mirroring_axes", c_uint32 * 3),
        ("configuration", c_char * CLAIM_SEGMENTER_NAME_MAX),
        ("trainer", c_char * CLAIM_SEGMENTER_NAME_MAX),
    ]


class claim_segmentation_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("mirroring", c_int32),
        ("step_size", c_float),
        ("postprocess", c_int32),
        ("labels", POINTER(claim_label_scheme)),
    ]


# Every struct mirrored above, by its C name (used by the layout test).
STRUCTS = {
    cls.__name__: cls
    for cls in (
        claim_build_info,
        claim_label_scheme,
        claim_volume,
        claim_aha_params,
        claim_smile_params,
        claim_smile_info,
        claim_aha_segment_stats,
        claim_bullseye_options,
        claim_load_options,
        claim_diffusion_info,
        claim_tensor,
        claim_synthesis_params,
        claim_segmenter_options,
        claim_segmenter_info,
        claim_segmentation_params,
    )
}

# Opaque handles are plain void pointers on this side.
claim_image_p = c_void_p
claim_smile_context_p = c_void_p
claim_diffusion_model_p = c_void_p
claim_segmenter_p = c_void_p

claim_status = c_int32

# int32_t (*claim_progress_fn)(void *user_data, uint64_t done, uint64_t total)
claim_progress_fn = ctypes.CFUNCTYPE(c_int32, c_void_p, c_uint64, c_uint64)

# name: (restype, argtypes), in header order.
_P = POINTER
PROTOTYPES = {
    "claim_status_str": (c_char_p, [claim_status]),
    "claim_last_error_message": (c_char_p, []),
    "claim_abi_version": (c_uint32, []),
    "claim_version_string": (c_char_p, []),
    "claim_build_info_get": (claim_status, [_P(claim_build_info)]),
    "claim_label_scheme_default": (None, [_P(claim_label_scheme), c_size_t]),
    "claim_max_voxels_set": (claim_status, [c_uint64]),
    "claim_max_voxels_get": (c_uint64, []),
    "claim_image_read": (claim_status, [c_char_p, _P(claim_image_p)]),
    "claim_image_write": (claim_status, [claim_image_p, c_char_p]),
    "claim_image_create": (claim_status, [_P(claim_volume), c_int32, _P(claim_image_p)]),
    "claim_image_view": (claim_status, [claim_image_p, _P(claim_volume)]),
    "claim_image_free": (None, [claim_image_p]),
    "claim_aha_params_default": (None, [_P(claim_aha_params), c_size_t]),
    "claim_aha_parcellate": (
        claim_status,
        [_P(claim_volume), _P(claim_aha_params), _P(claim_volume)],
    ),
    "claim_smile_params_default": (None, [_P(claim_smile_params), c_size_t]),
    "claim_smile_generate": (
        claim_status,
        [_P(claim_volume), _P(claim_smile_params), c_uint64, _P(claim_volume)],
    ),
    "claim_smile_context_create": (
        claim_status,
        [_P(claim_volume), _P(claim_volume), _P(claim_smile_params), _P(claim_smile_context_p)],
    ),
    "claim_smile_context_draw": (
        claim_status,
        [claim_smile_context_p, c_uint64, _P(claim_volume), _P(claim_smile_info)],
    ),
    "claim_smile_context_free": (None, [claim_smile_context_p]),
    "claim_aha_segment_stats_measure": (
        claim_status,
        [_P(claim_volume), _P(claim_volume), _P(claim_aha_params), _P(claim_aha_segment_stats)],
    ),
    "claim_bullseye_options_default": (None, [_P(claim_bullseye_options), c_size_t]),
    "claim_bullseye_render_svg": (
        claim_status,
        [_P(claim_aha_segment_stats), _P(claim_bullseye_options), c_void_p, c_size_t, _P(c_size_t)],
    ),
    "claim_bullseye_render_png": (
        claim_status,
        [_P(claim_aha_segment_stats), _P(claim_bullseye_options), c_void_p, c_size_t, _P(c_size_t)],
    ),
    "claim_load_options_default": (None, [_P(claim_load_options), c_size_t]),
    "claim_diffusion_load": (
        claim_status,
        [c_char_p, _P(claim_load_options), _P(claim_diffusion_model_p)],
    ),
    "claim_diffusion_free": (None, [claim_diffusion_model_p]),
    "claim_diffusion_info_get": (claim_status, [claim_diffusion_model_p, _P(claim_diffusion_info)]),
    "claim_diffusion_predict_noise": (
        claim_status,
        [claim_diffusion_model_p, _P(claim_tensor), _P(c_int64), _P(claim_tensor), _P(claim_tensor)],
    ),
    "claim_synthesis_params_default": (None, [_P(claim_synthesis_params), c_size_t]),
    "claim_diffusion_synthesize": (
        claim_status,
        [
            claim_diffusion_model_p,
            _P(claim_volume),
            _P(claim_volume),
            _P(claim_synthesis_params),
            claim_progress_fn,
            c_void_p,
            _P(claim_volume),
        ],
    ),
    "claim_histogram_measure": (
        claim_status,
        [_P(claim_volume), _P(claim_volume), _P(claim_label_scheme), c_uint32, _P(c_float)],
    ),
    "claim_histogram_measure_channels": (
        claim_status,
        [
            claim_diffusion_model_p,
            _P(claim_volume),
            _P(claim_volume),
            _P(claim_synthesis_params),
            _P(c_float),
            c_uint32,
            _P(c_uint32),
        ],
    ),
    "claim_segmenter_options_default": (None, [_P(claim_segmenter_options), c_size_t]),
    "claim_segmenter_load": (
        claim_status,
        [c_char_p, _P(claim_load_options), _P(claim_segmenter_options), _P(claim_segmenter_p)],
    ),
    "claim_segmenter_free": (None, [claim_segmenter_p]),
    "claim_segmenter_info_get": (claim_status, [claim_segmenter_p, _P(claim_segmenter_info)]),
    "claim_segmenter_predict_logits": (
        claim_status,
        [claim_segmenter_p, _P(claim_tensor), _P(claim_tensor)],
    ),
    "claim_segmentation_params_default": (None, [_P(claim_segmentation_params), c_size_t]),
    "claim_segmenter_segment": (
        claim_status,
        [
            claim_segmenter_p,
            _P(claim_volume),
            _P(claim_segmentation_params),
            claim_progress_fn,
            c_void_p,
            _P(claim_volume),
        ],
    ),
}

# Functions appended after ABI_MINOR: name -> (minor that added it, restype,
# argtypes). Bound when the library has them; calling one on an older library
# raises ClaimError UNSUPPORTED (see `require`).
OPTIONAL_PROTOTYPES = {
    "claim_labels_evaluate_json": (
        2,
        claim_status,
        [_P(claim_volume), _P(claim_volume), _P(claim_aha_params), c_void_p, c_size_t, _P(c_size_t)],
    ),
}

# --- loading ----------------------------------------------------------------


def library_file_name():
    """File name of the shared library on this platform."""
    if sys.platform == "darwin":
        return "libclaim.dylib"
    if sys.platform == "win32":
        return "claim.dll"
    return "libclaim.so"


def library_path():
    """The library this package loads: `$CLAIM_LIBRARY` when set, else the
    copy bundled at install time in `claim/_lib/`."""
    override = os.environ.get("CLAIM_LIBRARY")
    if override:
        return override
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lib", library_file_name())


def _load():
    path = library_path()
    if not os.path.isfile(path):
        raise ClaimError(
            -1,
            f"claim: the shared library was not found at {path!r}. Install the package with "
            "`pip install ./bindings/python` (which builds and bundles it), or point the "
            "environment variable CLAIM_LIBRARY at a built libclaim",
        )
    try:
        # By path: the soname (libclaim.so.2) does not matter.
        lib = ctypes.CDLL(path)
    except OSError as exc:
        raise ClaimError(-1, f"claim: cannot load the shared library {path!r}: {exc}") from None
    try:
        lib.claim_abi_version.restype = c_uint32
        lib.claim_abi_version.argtypes = []
        abi = lib.claim_abi_version()
    except AttributeError:
        raise ClaimError(-1, f"claim: {path!r} does not export claim_abi_version: not libclaim") from None
    major, minor = abi >> 16, abi & 0xFFFF
    if major != ABI_MAJOR or minor < ABI_MINOR:
        raise ClaimError(
            -1,
            f"claim: {path!r} has C ABI {major}.{minor}; this Python package needs "
            f"{ABI_MAJOR}.x with x >= {ABI_MINOR}. Rebuild the library and the package from "
            "the same checkout (or set CLAIM_LIBRARY to a matching build)",
        )
    missing = []
    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise ClaimError(
            -1, f"claim: {path!r} (ABI {major}.{minor}) lacks the functions {', '.join(missing)}"
        )
    for name, (_since, restype, argtypes) in OPTIONAL_PROTOTYPES.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = restype
            fn.argtypes = argtypes
    return lib, path, (major, minor)


lib, LIBRARY_PATH, LIBRARY_ABI = _load()


def require(name):
    """The optional function `name`, or ClaimError UNSUPPORTED naming the ABI
    minor that added it when the loaded library is older."""
    fn = getattr(lib, name, None)
    if fn is None:
        since = OPTIONAL_PROTOTYPES[name][0]
        raise ClaimError(
            CLAIM_ERR_UNSUPPORTED,
            f"{name} needs a library of C ABI {ABI_MAJOR}.{since} or later; {LIBRARY_PATH} has "
            f"{LIBRARY_ABI[0]}.{LIBRARY_ABI[1]}",
        )
    return fn


def check(status):
    """Raises ClaimError with the calling thread's last message unless OK."""
    if status != CLAIM_OK:
        message = lib.claim_last_error_message() or b""
        raise ClaimError(
            status,
            message.decode("utf-8", "replace"),
            (lib.claim_status_str(status) or b"").decode("ascii", "replace"),
        )


def default(cls):
    """A parameter struct initialised by its claim_<name>_default."""
    value = cls()
    getattr(lib, cls.__name__ + "_default")(ctypes.byref(value), ctypes.sizeof(value))
    return value


def sized(cls):
    """A zeroed output struct with struct_size set."""
    value = cls()
    value.struct_size = ctypes.sizeof(cls)
    return value


class Handle:
    """A library handle freed by `close()`, a `with` block or garbage collection."""

    _free = None

    def __init__(self):
        self._handle = None

    @property
    def handle(self):
        if self._handle is None:
            raise ValueError(f"{type(self).__name__}: used after close()")
        return self._handle

    def close(self):
        """Frees the handle. Must not be called while another thread uses it."""
        handle, self._handle = self._handle, None
        if handle is not None:
            type(self)._free(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
