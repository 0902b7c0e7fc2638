"""Slicer-free part of the ClaimScar 3D Slicer module.

- geometry: Slicer IJK-to-RAS matrices <-> claim's LPS spacing/origin/direction
- labels: the label scheme (1 LV cavity, 2 myocardium, 3 scar, 4 MVO, 5 RV),
  segment names and colours
- options: SMILE, synthesis and segmentation settings (dataclasses)
- jobs: a worker thread per long claim call, progress queue, cancel flag
- compute: the claim calls on claim.Images
- logic: SceneLogic, Slicer nodes <-> claim.Images and the operations, with
  the slicer/vtk/claim modules injected

Nothing here imports slicer, vtk, qt or claim at import time.
"""

from . import compute, geometry, jobs, labels, options
from .jobs import Job, Outcome, Update
from .logic import INSTALL_HINT, ClaimUnavailable, SceneLogic, ScarResult
from .options import SegmentationOptions, SmileOptions, SynthesisOptions

__all__ = [
    "ClaimUnavailable",
    "INSTALL_HINT",
    "Job",
    "Outcome",
    "ScarResult",
    "SceneLogic",
    "SegmentationOptions",
    "SmileOptions",
    "SynthesisOptions",
    "Update",
    "compute",
    "geometry",
    "jobs",
    "labels",
    "options",
]
