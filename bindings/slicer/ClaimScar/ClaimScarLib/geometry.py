"""Voxel geometry: Slicer's IJK-to-RAS matrices and claim's LPS images.

Slicer keeps a volume's geometry as one 4x4 matrix mapping homogeneous voxel
indices (i, j, k, 1) to RAS millimetres. claim (like ITK and DICOM) uses
LPS: an origin (the centre of voxel (0, 0, 0)), a spacing per voxel axis and
a 3x3 direction whose column c is the unit LPS vector of voxel axis c. The
two world frames differ only by the signs of x and y:

    RAS point = diag(-1, -1, 1) @ LPS point

so the LPS matrix is the RAS one with its first two rows negated, and the
spacing and direction are the column norms and normalised columns of its
upper-left 3x3 block. Voxel arrays need no change: Slicer's
``arrayFromVolume`` and claim's ``Image.array`` are both indexed [k, j, i].

Only numpy is used here.
"""

import numpy as np

__all__ = [
    "RAS_FROM_LPS",
    "lps_geometry_from_ijk_to_ras",
    "ijk_to_ras_from_lps_geometry",
    "matrix_to_array",
    "array_to_matrix",
]

# diag(-1, -1, 1) is its own inverse: it maps LPS to RAS and RAS to LPS.
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])


def lps_geometry_from_ijk_to_ras(ijk_to_ras):
    """(spacing, origin, direction) in claim's LPS convention from a 4x4
    IJK-to-RAS matrix.

    spacing: (3,) column norms of the 3x3 block; origin: (3,) LPS position of
    voxel (0, 0, 0); direction: 3x3 with unit columns (voxel axes in LPS).
    Raises ValueError for a matrix that is not 4x4, holds non-finite
    values, or has a zero-length column (a degenerate axis).
    """
    m = np.array(ijk_to_ras, dtype=np.float64)
    if m.size != 16:
        raise ValueError(f"IJK-to-RAS: expected a 4x4 matrix, got {m.size} values")
    m = m.reshape(4, 4)
    if not np.all(np.isfinite(m)):
        raise ValueError("IJK-to-RAS: the matrix holds non-finite values")
    lps = RAS_FROM_LPS @ m[:3, :]
    block = lps[:, :3]
    spacing = np.linalg.norm(block, axis=0)
    if np.any(spacing <= 0.0):
        raise ValueError(f"IJK-to-RAS: voxel axis of zero length (spacing {spacing.tolist()})")
    direction = block / spacing[np.newaxis, :]
    origin = lps[:, 3].copy()
    return spacing, origin, direction


def ijk_to_ras_from_lps_geometry(spacing, origin, direction):
    """The 4x4 IJK-to-RAS matrix of an LPS (spacing, origin, direction)
    geometry: the inverse of `lps_geometry_from_ijk_to_ras`."""
    spacing = np.asarray(spacing, dtype=np.float64).reshape(3)
    origin = np.asarray(origin, dtype=np.float64).reshape(3)
    direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = RAS_FROM_LPS @ (direction * spacing[np.newaxis, :])
    m[:3, 3] = RAS_FROM_LPS @ origin
    return m


def matrix_to_array(matrix):
    """A vtkMatrix4x4 (anything with GetElement(row, col)) as a 4x4 numpy array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def array_to_matrix(array, matrix):
    """Writes a 4x4 numpy array into a vtkMatrix4x4 (SetElement) and returns it."""
    array = np.asarray(array, dtype=np.float64).reshape(4, 4)
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix
