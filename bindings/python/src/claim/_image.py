"""Image: a NumPy array plus ITK geometry; conversion to claim_volume; NIfTI I/O."""

import ctypes
import os

import numpy as np

from . import _ffi
from ._ffi import check, lib

__all__ = ["Image", "read_image", "write_image"]

# numpy dtype <-> claim_voxel_type, the five types the library stores.
_VOXEL_OF_DTYPE = {
    np.dtype(np.uint8): _ffi.CLAIM_VOXEL_U8,
    np.dtype(np.int16): _ffi.CLAIM_VOXEL_I16,
    np.dtype(np.uint16): _ffi.CLAIM_VOXEL_U16,
    np.dtype(np.int32): _ffi.CLAIM_VOXEL_I32,
    np.dtype(np.float32): _ffi.CLAIM_VOXEL_F32,
}
_DTYPE_OF_VOXEL = {v: k for k, v in _VOXEL_OF_DTYPE.items()}


def _native(array):
    """The array in native byte order (nibabel may hand out big-endian data)."""
    if not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def to_claim_dtype(array, name="array"):
    """`array` in a dtype the library stores, converted by these rules:

    - uint8, int16, uint16, int32, float32: kept;
    - bool: uint8 (0/1);
    - int8: int16; other integers (int64, uint32, uint64, ...): int32 when
      every value fits, else TypeError;
    - float16, float64: float32 (values rounded to float32);
    - anything else (complex, object, strings): TypeError.
    """
    array = _native(np.asarray(array))
    dt = array.dtype
    if dt in _VOXEL_OF_DTYPE:
        return array
    if dt == np.bool_:
        return array.astype(np.uint8)
    if dt == np.int8:
        return array.astype(np.int16)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(np.int32)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise TypeError(
                f"{name}: dtype {dt} with values in [{array.min()}, {array.max()}] does not fit "
                "int32, the widest integer voxel type claim stores"
            )
        return array.astype(np.int32)
    if np.issubdtype(dt, np.floating) and dt.itemsize <= 8:
        return array.astype(np.float32)
    raise TypeError(
        f"{name}: dtype {dt} is not supported (claim stores uint8, int16, uint16, int32 and "
        "float32; bool, other integers and float64 are converted)"
    )


def _vec3(value, name):
    out = tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
    if len(out) != 3:
        raise ValueError(f"{name}: expected 3 values, got {len(out)}")
    return out


class Image:
    """A 3-D image: voxels plus the physical geometry ITK defines.

    Attributes:
        array: numpy array of shape (nk, nj, ni) = (z, y, x), C-contiguous:
            i (x) is the fastest axis, the order of SimpleITK's
            GetArrayFromImage and of the C library's buffers.
        spacing: voxel size along i, j, k in mm (a tuple of 3 floats).
        origin: LPS position (mm) of the centre of voxel (0, 0, 0).
        direction: 3x3 float64 array, row-major; column c is the LPS unit
            vector of voxel axis c (i, j, k), as ITK's GetDirection().

    The LPS position of voxel index (i, j, k), i.e. ``array[k, j, i]``, is
    ``origin + direction @ (spacing * (i, j, k))``.
    """

    __slots__ = ("array", "spacing", "origin", "direction")

    def __init__(self, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
        array = np.asarray(array)
        if array.ndim != 3:
            raise ValueError(
                f"Image: expected a 3-D array (z, y, x), got shape {array.shape}; "
                "add an axis for a single slice (array[np.newaxis])"
            )
        self.array = np.ascontiguousarray(array)
        self.spacing = _vec3(spacing, "spacing")
        self.origin = _vec3(origin, "origin")
        if direction is None:
            direction = np.eye(3)
        direction = np.array(direction, dtype=np.float64)
        if direction.size != 9:
            raise ValueError(f"direction: expected 3x3 (or 9) values, got {direction.size}")
        self.direction = direction.reshape(3, 3)

    @classmethod
    def like(cls, other, array):
        """A new image with `array` as voxels and the geometry of `other`
        (the shapes must agree)."""
        array = np.asarray(array)
        if array.shape != other.shape:
            raise ValueError(f"Image.like: array shape {array.shape} differs from {other.shape}")
        return cls(array, other.spacing, other.origin, other.direction)

    def copy(self):
        """A deep copy (voxels and geometry)."""
        return Image(self.array.copy(), self.spacing, self.origin, self.direction.copy())

    @property
    def shape(self):
        """(nk, nj, ni): the array's shape."""
        return self.array.shape

    @property
    def size(self):
        """(ni, nj, nk): the number of voxels along i, j, k, as ITK's GetSize()."""
        return tuple(reversed(self.array.shape))

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def affine(self):
        """4x4 matrix mapping homogeneous voxel indices (i, j, k, 1) to LPS mm."""
        out = np.eye(4)
        out[:3, :3] = self.direction * np.asarray(self.spacing)[np.newaxis, :]
        out[:3, 3] = self.origin
        return out

    def index_to_physical(self, index):
        """LPS position (mm) of voxel index (i, j, k) (fractional indices allowed),
        as ITK's TransformIndexToPhysicalPoint / TransformContinuousIndexToPhysicalPoint."""
        index = np.asarray(index, dtype=np.float64)
        return np.asarray(self.origin) + self.direction @ (np.asarray(self.spacing) * index)

    def physical_to_index(self, point):
        """Continuous voxel index (i, j, k) of an LPS point (mm)."""
        point = np.asarray(point, dtype=np.float64) - np.asarray(self.origin)
        return np.linalg.solve(self.direction * np.asarray(self.spacing)[np.newaxis, :], point)

    def same_geometry(self, other, tolerance=1e-6):
        """True when `other` has the same shape, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, rtol=0, atol=tolerance)
            and np.allclose(self.origin, other.origin, rtol=0, atol=tolerance)
            and np.allclose(self.direction, other.direction, rtol=0, atol=tolerance)
        )

    def __repr__(self):
        return (
            f"Image(shape={self.shape} (z, y, x), dtype={self.array.dtype}, spacing={self.spacing}, "
            f"origin={self.origin}, direction={self.direction.reshape(-1).tolist()})"
        )

    # --- converters (each imports its library lazily) ----------------------

    @classmethod
    def from_sitk(cls, img):
        """From a 3-D scalar SimpleITK image (voxels copied; geometry as is)."""
        sitk = _import("SimpleITK")
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                f"from_sitk: expected a 3-D scalar image, got {img.GetDimension()}-D with "
                f"{img.GetNumberOfComponentsPerPixel()} components"
            )
        return cls(
            sitk.GetArrayFromImage(img),
            img.GetSpacing(),
            img.GetOrigin(),
            np.asarray(img.GetDirection()).reshape(3, 3),
        )

    def to_sitk(self):
        """A SimpleITK image with these voxels (copied) and this geometry."""
        sitk = _import("SimpleITK")
        img = sitk.GetImageFromArray(self.array, isVector=False)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(tuple(self.direction.reshape(-1)))
        return img

    @classmethod
    def from_nibabel(cls, nib_img):
        """From a 3-D nibabel image. nibabel's data is indexed (i, j, k) and its
        affine maps to RAS; both are converted (transpose; the first two rows
        of the affine negated to get LPS)."""
        _import("nibabel")
        data = np.asanyarray(nib_img.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise ValueError(f"from_nibabel: expected a 3-D image, got shape {data.shape}")
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(nib_img.affine, dtype=np.float64)
        linear = lps[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing == 0):
            raise ValueError("from_nibabel: the affine has a zero-length axis")
        return cls(data.transpose(2, 1, 0), spacing, lps[:3, 3], linear / spacing[np.newaxis, :])

    def to_nibabel(self):
        """A nibabel Nifti1Image (data (i, j, k), RAS affine in both the qform and
        the sform, codes 1 = scanner)."""
        nib = _import("nibabel")
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine
        img = nib.Nifti1Image(self.array.transpose(2, 1, 0), ras)
        img.set_qform(ras, code=1)
        img.set_sform(ras, code=1)
        img.header.set_xyzt_units("mm")
        return img


def _import(name):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pip_name = {"SimpleITK": "SimpleITK", "nibabel": "nibabel"}[name]
        raise ImportError(
            f"this converter needs the package {pip_name!r}, which is not installed "
            f"(pip install {pip_name})"
        ) from exc


def as_image(value, name):
    """`value` if an Image; a bare array becomes an Image of unit geometry."""
    if isinstance(value, Image):
        return value
    if isinstance(value, np.ndarray):
        return Image(value)
    raise TypeError(f"{name}: expected a claim.Image or a numpy array, got {type(value).__name__}")


class Volume:
    """A claim_volume describing a numpy buffer kept alive alongside it."""

    __slots__ = ("struct", "array", "geometry")

    def __init__(self, array, geometry):
        """`geometry`: (spacing, origin, direction) or an Image."""
        if isinstance(geometry, Image):
            geometry = (geometry.spacing, geometry.origin, geometry.direction)
        spacing, origin, direction = geometry
        self.array = array
        self.geometry = (tuple(spacing), tuple(origin), np.array(direction, dtype=np.float64).reshape(3, 3))
        s = _ffi.claim_volume()
        s.struct_size = ctypes.sizeof(s)
        s.voxel_type = _VOXEL_OF_DTYPE[array.dtype]
        s.dims[:] = [array.shape[2], array.shape[1], array.shape[0]]
        s.spacing[:] = [float(v) for v in spacing]
        s.origin[:] = [float(v) for v in origin]
        s.direction[:] = [float(v) for v in self.geometry[2].reshape(-1)]
        s.data = array.ctypes.data
        self.struct = s

    @property
    def ref(self):
        return ctypes.byref(self.struct)

    def to_image(self):
        """The buffer as an Image with the geometry the library wrote."""
        s = self.struct
        return Image(
            self.array,
            tuple(s.spacing),
            tuple(s.origin),
            np.array(s.direction[:], dtype=np.float64).reshape(3, 3),
        )


def input_volume(image, name):
    """A claim_volume over `image` (converted per `to_claim_dtype`, copied only
    when the dtype or memory layout requires it)."""
    image = as_image(image, name)
    array = np.ascontiguousarray(to_claim_dtype(image.array, name))
    if array.size == 0:
        raise ValueError(f"{name}: the image has no voxels (shape {array.shape})")
    return Volume(array, image)


def output_volume(geometry, dtype, shape):
    """A zero-filled caller-allocated output volume (the library writes its
    voxels and geometry)."""
    return Volume(np.zeros(shape, dtype=dtype), geometry)


def same_shape(a, b, name_a, name_b):
    if a.array.shape != b.array.shape:
        raise ValueError(
            f"{name_b}: shape {b.array.shape} differs from {name_a}'s {a.array.shape} "
            "(both are (z, y, x) and must match voxel for voxel)"
        )


def _fspath(path):
    return os.fsencode(os.fspath(path)) if not isinstance(path, bytes) else path


def _copy_view(handle):
    """An Image copied out of a claim_image handle (not freed here)."""
    view = _ffi.sized(_ffi.claim_volume)
    check(lib.claim_image_view(handle, ctypes.byref(view)))
    dtype = _DTYPE_OF_VOXEL[view.voxel_type]
    shape = (view.dims[2], view.dims[1], view.dims[0])
    count = shape[0] * shape[1] * shape[2]
    buf = (ctypes.c_char * (count * dtype.itemsize)).from_address(view.data)
    array = np.frombuffer(buf, dtype=dtype, count=count).reshape(shape).copy()
    return Image(
        array,
        tuple(view.spacing),
        tuple(view.origin),
        np.array(view.direction[:], dtype=np.float64).reshape(3, 3),
    )


def read_image(path):
    """Reads a NIfTI-1 file (.nii or .nii.gz) the way ITK reads it (LPS
    geometry), via claim_image_read. The voxels are copied into numpy, the
    library's handle is freed.

    Raises ClaimError: IO (missing, unreadable, a folder), FORMAT (not NIfTI,
    truncated, corrupt), OUT_OF_MEMORY (more voxels than `max_voxels()`).
    """
    handle = _ffi.claim_image_p()
    check(lib.claim_image_read(_fspath(path), ctypes.byref(handle)))
    try:
        return _copy_view(handle)
    finally:
        lib.claim_image_free(handle)


def write_image(image, path):
    """Writes `image` to a NIfTI-1 file (gzip-compressed when `path` ends in
    .gz) via claim_image_create + claim_image_write; an existing file is
    replaced.

    The voxel type is the array's for uint8, int16, uint16, int32 and
    float32; other dtypes are converted as `to_claim_dtype` says (bool to
    uint8, int8 to int16, wider integers to int32 when the values fit,
    float64 to float32) or refused with TypeError.
    """
    vol = input_volume(image, "image")
    handle = _ffi.claim_image_p()
    check(lib.claim_image_create(vol.ref, vol.struct.voxel_type, ctypes.byref(handle)))
    try:
        view = _ffi.sized(_ffi.claim_volume)
        check(lib.claim_image_view(handle, ctypes.byref(view)))
        ctypes.memmove(view.data, vol.array.ctypes.data, vol.array.nbytes)
        check(lib.claim_image_write(handle, _fspath(path)))
    finally:
        lib.claim_image_free(handle)
