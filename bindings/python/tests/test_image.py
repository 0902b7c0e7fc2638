"""claim.Image, NIfTI read/write, dtype rules, and geometry round trips
against SimpleITK and nibabel on oblique images."""

import sys

import numpy as np
import pytest

import claim
from conftest import oblique_direction

SPACING = (0.7, 1.3, 4.5)
ORIGIN = (-12.25, 37.5, 101.75)
INDICES = [(0, 0, 0), (4, 0, 0), (0, 5, 0), (0, 0, 2), (4, 5, 2), (1, 3, 1)]


def oblique(array):
    return claim.Image(array, SPACING, ORIGIN, oblique_direction())


def ramp(dtype, shape=(3, 6, 5)):
    values = np.arange(np.prod(shape)).reshape(shape) - 20
    if np.dtype(dtype).kind == "u":
        values = values + 20
    return values.astype(dtype)


def assert_geometry(a, b, tol=2e-5):
    """NIfTI stores geometry in float32: equal to float32 precision."""
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=0, atol=tol)
    np.testing.assert_allclose(a.origin, b.origin, rtol=0, atol=tol * max(1, np.abs(a.origin).max()))
    np.testing.assert_allclose(a.direction, b.direction, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_write_read_round_trip(tmp_path, dtype, suffix):
    image = oblique(ramp(dtype))
    path = tmp_path / ("img" + suffix)
    claim.write_image(image, path)
    back = claim.read_image(path)
    assert back.array.dtype == np.dtype(dtype)
    assert back.array.flags.c_contiguous
    np.testing.assert_array_equal(back.array, image.array)
    assert_geometry(back, image)
    # A second round trip of what was read is exact.
    claim.write_image(back, path)
    again = claim.read_image(path)
    np.testing.assert_array_equal(again.array, back.array)
    assert again.spacing == back.spacing and again.origin == back.origin
    np.testing.assert_allclose(again.direction, back.direction, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "given, stored",
    [
        (np.array([True, False]).repeat(12).reshape(2, 3, 4), np.uint8),
        (np.arange(24, dtype=np.int64).reshape(2, 3, 4), np.int32),
        (np.arange(24, dtype=np.int8).reshape(2, 3, 4), np.int16),
        (np.linspace(0, 1, 24).reshape(2, 3, 4), np.float32),
        (np.arange(24, dtype=">i2").reshape(2, 3, 4), np.int16),
    ],
)
def test_dtype_rules(tmp_path, given, stored):
    claim.write_image(claim.Image(given), tmp_path / "x.nii")
    back = claim.read_image(tmp_path / "x.nii")
    assert back.array.dtype == np.dtype(stored)
    np.testing.assert_array_equal(back.array, given.astype(stored))


def test_refused_dtypes(tmp_path):
    with pytest.raises(TypeError, match="does not fit"):
        claim.write_image(claim.Image(np.full((1, 1, 2), 2**40, np.int64)), tmp_path / "x.nii")
    with pytest.raises(TypeError, match="not supported"):
        claim.write_image(claim.Image(np.zeros((1, 1, 2), np.complex64)), tmp_path / "x.nii")


def test_non_contiguous_input_is_copied(tmp_path):
    base = ramp(np.int16, (4, 6, 10))
    view = base[:, ::2, ::3]
    claim.write_image(claim.Image(view), tmp_path / "v.nii")
    np.testing.assert_array_equal(claim.read_image(tmp_path / "v.nii").array, view)


def test_image_basics():
    image = oblique(ramp(np.int16))
    assert image.size == (5, 6, 3)
    copy = image.copy()
    copy.array[0, 0, 0] = 99
    assert image.array[0, 0, 0] != 99
    like = claim.Image.like(image, np.zeros(image.shape, np.uint8))
    assert like.same_geometry(image)
    np.testing.assert_allclose(image.physical_to_index(image.index_to_physical((1, 2, 3))), (1, 2, 3))
    with pytest.raises(ValueError):
        claim.Image.like(image, np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="3-D"):
        claim.Image(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="direction"):
        claim.Image(np.zeros((1, 1, 1)), direction=np.eye(2))


def test_read_errors(tmp_path):
    with pytest.raises(claim.ClaimError) as err:
        claim.read_image(tmp_path / "missing.nii.gz")
    assert err.value.status == claim.Status.IO
    assert err.value.status_name == "CLAIM_ERR_IO"
    assert "missing.nii.gz" in err.value.message
    (tmp_path / "junk.nii").write_bytes(b"not a nifti file" * 40)
    with pytest.raises(claim.ClaimError) as err:
        claim.read_image(tmp_path / "junk.nii")
    assert err.value.status == claim.Status.FORMAT


def test_bad_geometry_is_refused_by_the_library(tmp_path):
    skewed = claim.Image(np.zeros((2, 2, 2), np.uint8), direction=[[1, 0.5, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(claim.ClaimError) as err:
        claim.write_image(skewed, tmp_path / "x.nii")
    assert err.value.status == claim.Status.INVALID_ARGUMENT


def test_max_voxels(tmp_path):
    claim.write_image(claim.Image(np.zeros((4, 4, 4), np.uint8)), tmp_path / "x.nii")
    try:
        claim.set_max_voxels(10)
        assert claim.max_voxels() == 10
        with pytest.raises(claim.ClaimError) as err:
            claim.read_image(tmp_path / "x.nii")
        assert err.value.status == claim.Status.OUT_OF_MEMORY
    finally:
        claim.set_max_voxels(0)
    assert claim.max_voxels() >= 64


# --- SimpleITK ---------------------------------------------------------------


def test_claim_written_read_by_simpleitk(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    image = oblique(ramp(np.int16))
    claim.write_image(image, tmp_path / "c.nii.gz")
    s = sitk.ReadImage(str(tmp_path / "c.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(s), image.array)
    for index in INDICES:
        np.testing.assert_allclose(
            s.TransformIndexToPhysicalPoint(index), image.index_to_physical(index), rtol=0, atol=1e-4
        )


def test_simpleitk_written_read_by_claim(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    s = sitk.GetImageFromArray(ramp(np.float32))
    s.SetSpacing(SPACING)
    s.SetOrigin(ORIGIN)
    s.SetDirection(tuple(oblique_direction(-0.7, 0.2, 1.9).reshape(-1)))
    sitk.WriteImage(s, str(tmp_path / "s.nii.gz"))
    image = claim.read_image(tmp_path / "s.nii.gz")
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(s))
    for index in INDICES:
        np.testing.assert_allclose(
            image.index_to_physical(index), s.TransformIndexToPhysicalPoint(index), rtol=0, atol=1e-4
        )


def test_simpleitk_in_memory_conversion():
    pytest.importorskip("SimpleITK")
    image = oblique(ramp(np.uint16))
    s = image.to_sitk()
    assert s.GetSize() == image.size
    for index in INDICES:
        np.testing.assert_allclose(s.TransformIndexToPhysicalPoint(index), image.index_to_physical(index), atol=1e-9)
    back = claim.Image.from_sitk(s)
    np.testing.assert_array_equal(back.array, image.array)
    assert back.same_geometry(image, 1e-12)


# --- nibabel -------------------------------------------------------------------


def ras_point(nib_img, index):
    return (nib_img.affine @ np.r_[index, 1.0])[:3]


def lps_to_ras(point):
    return np.asarray(point) * [-1.0, -1.0, 1.0]


def test_nibabel_round_trip(tmp_path):
    nib = pytest.importorskip("nibabel")
    image = oblique(ramp(np.int32))
    # claim writes, nibabel reads: same voxels (transposed) and same points (RAS).
    claim.write_image(image, tmp_path / "c.nii.gz")
    n = nib.load(str(tmp_path / "c.nii.gz"))
    data = np.asanyarray(n.dataobj)
    assert data.shape == image.size
    np.testing.assert_array_equal(data.transpose(2, 1, 0), image.array)
    for index in INDICES:
        np.testing.assert_allclose(ras_point(n, index), lps_to_ras(image.index_to_physical(index)), atol=1e-4)
        i, j, k = index
        assert data[i, j, k] == image.array[k, j, i]
    # from_nibabel gives back the geometry.
    assert claim.Image.from_nibabel(n).same_geometry(image, 1e-4)
    # nibabel writes (to_nibabel), claim reads.
    nib.save(image.to_nibabel(), str(tmp_path / "n.nii.gz"))
    back = claim.read_image(tmp_path / "n.nii.gz")
    np.testing.assert_array_equal(back.array, image.array)
    for index in INDICES:
        np.testing.assert_allclose(back.index_to_physical(index), image.index_to_physical(index), atol=1e-4)


def test_converters_name_the_missing_package(monkeypatch):
    image = oblique(ramp(np.uint8))
    for module, call in [("SimpleITK", image.to_sitk), ("nibabel", image.to_nibabel)]:
        monkeypatch.setitem(sys.modules, module, None)
        with pytest.raises(ImportError, match=module):
            call()
