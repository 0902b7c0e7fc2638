"""ClaimScar's Slicer-free logic from plain numpy, as the module uses it
inside Slicer: Slicer-style arrays and IJK-to-RAS matrices to claim.Image,
a SMILE draw, a segmentation on a worker thread polled like the module's
QTimer polls it, and back. Run from the repository root:

    python bindings/slicer/examples/logic_numpy.py
"""
# readme:begin
import sys
sys.path.insert(0, "bindings/slicer/ClaimScar")

import numpy as np
import claim
from ClaimScarLib import Job, SegmentationOptions, SmileOptions, compute, labels

# A Slicer-style volume: voxels indexed [k, j, i] and an IJK-to-RAS matrix.
ijk_to_ras = np.array([[-1.5, 0, 0, 40.0], [0, -1.5, 0, 50.0], [0, 0, 8.0, -30.0], [0, 0, 0, 1]])
heart = compute.image_from_slicer_array(claim, labels.toy_heart(), ijk_to_ras)
assert np.allclose(heart.origin, [-40, -50, -30])  # LPS
assert np.allclose(heart.direction, np.eye(3)) and np.allclose(heart.spacing, [1.5, 1.5, 8.0])

# SMILE: an LAD infarct of 20 % of the myocardium, with an MVO core.
mask, info = compute.draw_scar(claim, heart, SmileOptions(seed=3, territory="lad", burden=0.2, mvo=True))
print(f"{info.pattern} scar in AHA segments {info.segments_chosen}, burden {labels.burden(mask.array):.3f}")

# A segmentation on a worker thread, polled the way the module's QTimer polls it.
intensity = np.choose(mask.array, [20, 300, 60, 450, 120, 250]).astype(np.float32)
image = claim.Image.like(mask, intensity)
options = SegmentationOptions(mirroring=False, step_size=1.0)
job = Job(lambda progress: compute.segment(claim, compute.ModelCache(), image, options, progress), name="Segmentation")
outcome = job.start().run_to_end(lambda job, done, total: print(f"{done}/{total}"))
print(outcome.message, np.unique(outcome.result.array))

# Back to what slicer.util.updateVolumeFromArray and SetIJKToRASMatrix take.
array, matrix = compute.slicer_array_from_image(outcome.result)
assert np.allclose(matrix, ijk_to_ras)
# readme:end
