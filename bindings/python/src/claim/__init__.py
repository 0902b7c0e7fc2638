"""claim: CLAIM cardiac LGE scar synthesis and segmentation, from Python.

A ctypes binding of the claim C library (include/claim.h, ABI 2.x): NumPy
arrays in and out, always with their ITK geometry (`claim.Image`). Every
library failure raises `claim.ClaimError` carrying the status code and the
library's message. Long calls (synthesis, segmentation) release the GIL and
take a `progress` callable that may cancel; Ctrl-C cancels them cleanly.
"""

import ctypes as _ctypes
from dataclasses import dataclass as _dataclass

from . import _ffi
from ._errors import ClaimError, Status
from ._image import Image, read_image, to_claim_dtype, write_image
from ._models import (
    DiffusionInfo,
    DiffusionModel,
    Segmenter,
    SegmenterInfo,
    measure_histogram,
    segment,
    synthesize,
)
from ._smile import (
    PATTERNS,
    TERRITORIES,
    SegmentStats,
    SmileContext,
    SmileInfo,
    aha_segments,
    bullseye_png,
    bullseye_svg,
    evaluate,
    segment_stats,
    smile,
    smile_draw,
)

__all__ = [
    "BuildInfo",
    "ClaimError",
    "DiffusionInfo",
    "DiffusionModel",
    "Image",
    "PATTERNS",
    "Segmenter",
    "SegmenterInfo",
    "SegmentStats",
    "SmileContext",
    "SmileInfo",
    "Status",
    "TERRITORIES",
    "abi_version",
    "aha_segments",
    "build_info",
    "evaluate",
    "bullseye_png",
    "bullseye_svg",
    "library_path",
    "max_voxels",
    "measure_histogram",
    "read_image",
    "segment",
    "segment_stats",
    "set_max_voxels",
    "smile",
    "smile_draw",
    "synthesize",
    "to_claim_dtype",
    "version",
    "write_image",
]


def version():
    """The library's release (claim_version_string), e.g. "0.1.0"."""
    return _ffi.lib.claim_version_string().decode("utf-8")


__version__ = version()


def abi_version():
    """(major, minor) C ABI of the loaded library (claim_abi_version)."""
    abi = _ffi.lib.claim_abi_version()
    return (abi >> 16, abi & 0xFFFF)


def library_path():
    """Path of the shared library in use ($CLAIM_LIBRARY or the bundled copy)."""
    return _ffi.LIBRARY_PATH


@_dataclass(frozen=True)
class BuildInfo:
    """What this build of the library is and finds (claim_build_info):
    whether the CUDA back-end is built in and usable, the driver version
    (major*1000 + minor*10), devices found, the GPU targets of the embedded
    kernels, and a status line per device or why CUDA is not usable."""

    cuda_feature: bool
    cuda_available: bool
    cuda_driver_version: int
    cuda_device_count: int
    kernel_archs: str
    cuda_status: str


def build_info():
    """Describes this build and what it finds now (claim_build_info_get)."""
    out = _ffi.sized(_ffi.claim_build_info)
    _ffi.check(_ffi.lib.claim_build_info_get(_ctypes.byref(out)))
    return BuildInfo(
        cuda_feature=bool(out.cuda_feature),
        cuda_available=bool(out.cuda_available),
        cuda_driver_version=int(out.cuda_driver_version),
        cuda_device_count=int(out.cuda_device_count),
        kernel_archs=out.kernel_archs.decode("utf-8", "replace"),
        cuda_status=out.cuda_status.decode("utf-8", "replace"),
    )


def set_max_voxels(n):
    """Sets the largest number of voxels a volume may have, for the whole
    process (claim_max_voxels_set): 1 to 2^32, or 0 for the environment's
    CLAIM_MAX_VOXELS or the default 2^28. Larger NIfTI files are refused from
    their header, larger arrays before any work (ClaimError OUT_OF_MEMORY)."""
    _ffi.check(_ffi.lib.claim_max_voxels_set(int(n)))


def max_voxels():
    """The voxel limit in force (claim_max_voxels_get)."""
    return int(_ffi.lib.claim_max_voxels_get())
