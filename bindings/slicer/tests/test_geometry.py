"""RAS (Slicer) <-> LPS (claim) geometry."""

import gzip
import struct

import numpy as np
import pytest

import fakes
from ClaimScarLib import geometry

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])
INDICES = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (4, 2, 3), (9, 7, 5), (2.5, 3.25, 0.5)]


def test_pure_round_trip_oblique():
    m = fakes.oblique_ijk_to_ras()
    spacing, origin, direction = geometry.lps_geometry_from_ijk_to_ras(m)
    np.testing.assert_allclose(spacing, [0.7, 0.9, 2.5], atol=1e-12)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(origin, [-12.5, 30.25, 47.0], atol=1e-12)
    np.testing.assert_allclose(geometry.ijk_to_ras_from_lps_geometry(spacing, origin, direction), m, atol=1e-12)
    for ijk in INDICES:
        lps = origin + direction @ (spacing * np.asarray(ijk))
        ras = m @ np.append(ijk, 1.0)
        np.testing.assert_allclose(ras[:3], RAS_FROM_LPS @ lps, atol=1e-9)


def test_pure_rejects_degenerate():
    m = np.eye(4)
    m[:3, 1] = 0.0
    with pytest.raises(ValueError, match="zero length"):
        geometry.lps_geometry_from_ijk_to_ras(m)
    with pytest.raises(ValueError, match="4x4"):
        geometry.lps_geometry_from_ijk_to_ras(np.eye(3))


def test_vtk_matrix_helpers(fake_vtk):
    m = fakes.oblique_ijk_to_ras()
    vm = geometry.array_to_matrix(m, fake_vtk.vtkMatrix4x4())
    np.testing.assert_array_equal(geometry.matrix_to_array(vm), m)


def test_volume_node_round_trip_oblique(logic, fake_slicer):
    m = fakes.oblique_ijk_to_ras()
    rng = np.random.default_rng(1)
    array = rng.normal(size=(6, 8, 10)).astype(np.float32)  # (k, j, i)
    node = fakes.add_volume(fake_slicer, array, m, "oblique")
    image = logic.volumeToImage(node)
    assert image.array.shape == (6, 8, 10)
    assert image.size == (10, 8, 6)
    # The same voxel sits at the same physical point in both conventions.
    for ijk in INDICES:
        ras = m @ np.append(ijk, 1.0)
        np.testing.assert_allclose(ras[:3], RAS_FROM_LPS @ image.index_to_physical(ijk), atol=1e-9)
    assert image.array[3, 2, 4] == array[3, 2, 4]
    # The image owns its voxels (the worker thread must not see later edits).
    node._array[0, 0, 0] = 1234.0
    assert image.array[0, 0, 0] != 1234.0

    back = logic.imageToVolume(image, "back")
    np.testing.assert_allclose(back._ijk_to_ras, m, atol=1e-12)
    np.testing.assert_array_equal(back._array, array)
    assert back.IsA("vtkMRMLScalarVolumeNode") and not back.IsA("vtkMRMLLabelMapVolumeNode")
    assert back.GetDisplayNode() is not None

    # Writing into an existing node replaces voxels and geometry.
    target = fakes.add_volume(fake_slicer, np.zeros((2, 2, 2)), np.eye(4), "target")
    assert logic.imageToVolume(image, "ignored", node=target) is target
    np.testing.assert_allclose(target._ijk_to_ras, m, atol=1e-12)
    assert target._array.shape == (6, 8, 10)


def test_transform_follows_reference(logic, fake_slicer):
    ref = fakes.add_volume(fake_slicer, np.zeros((2, 3, 4)), np.eye(4), "ref")
    ref.SetAndObserveTransformNodeID("vtkMRMLLinearTransformNode7")
    out = logic.imageToVolume(logic.volumeToImage(ref), "out", like=ref)
    assert out.GetTransformNodeID() == "vtkMRMLLinearTransformNode7"


def _nifti_sform(path):
    header = gzip.open(path).read(348)
    _qform_code, sform_code = struct.unpack_from("<hh", header, 252)
    rows = [struct.unpack_from("<4f", header, 280 + 16 * r) for r in range(3)]
    return sform_code, np.vstack([np.array(rows), [0, 0, 0, 1]])


def test_matches_nifti_sform(claim, phantom, tmp_path):
    """A NIfTI file's sform is the IJK-to-RAS matrix Slicer shows for it:
    the matrix made from claim's LPS geometry must equal it."""
    image, _ = phantom
    path = tmp_path / "image.nii.gz"
    claim.write_image(image, str(path))
    sform_code, sform = _nifti_sform(path)
    assert sform_code > 0
    np.testing.assert_allclose(fakes.ijk_to_ras_of(claim.read_image(str(path))), sform, atol=1e-4)
