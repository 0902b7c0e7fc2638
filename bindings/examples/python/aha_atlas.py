"""Parcellates the AHA-17 atlas from Python and checks the result against
the `claim aha` command line: same segments, same geometry.

    python aha_atlas.py AHA17_model_ED.nii.gz OUT_DIR [CLAIM_CLI]

The atlas labels segments 1-17 on the myocardium, 21 on the LV blood pool
and 24 on the RV; claim wants one myocardium label, so the map is
relabelled first (1-17 -> 2, 21 -> 1, 24 -> 5, with RV = 5).
"""

import os
import subprocess
import sys

import numpy as np

import claim

atlas_path, out_dir = sys.argv[1], sys.argv[2]
cli = sys.argv[3] if len(sys.argv) > 3 else None
os.makedirs(out_dir, exist_ok=True)

# readme:begin
atlas = claim.read_image(atlas_path)  # .array is (z, y, x); geometry in LPS, as ITK
a = atlas.array
labels = claim.Image.like(atlas, np.select(
    [(a >= 1) & (a <= 17), a == 21, a == 24], [2, 1, 5], 0).astype(np.uint8))
segments = claim.aha_segments(labels, lv=1, myo=2, rv=5)
inside = (a >= 1) & (a <= 17)
agree = np.mean(segments.array[inside] == a[inside])
print(f"claim {claim.version()}: {inside.sum()} myocardium voxels, "
      f"{100 * agree:.1f} % in the atlas's segment")
claim.write_image(segments, os.path.join(out_dir, "segments_python.nii.gz"))
# readme:end
assert agree > 0.8, agree

if cli:
    # The same map through the command line: identical voxels and geometry.
    relabelled = os.path.join(out_dir, "labels.nii.gz")
    from_cli = os.path.join(out_dir, "segments_cli.nii.gz")
    claim.write_image(labels, relabelled)
    subprocess.run([cli, "aha", relabelled, "--lv", "1", "--myo", "2", "--rv", "5", "-o", from_cli],
                   check=True, stdout=subprocess.DEVNULL)
    reference = claim.read_image(from_cli)
    assert np.array_equal(reference.array, segments.array), "segments differ from `claim aha`"
    assert np.array_equal(reference.origin, segments.origin), (reference.origin, segments.origin)
    assert np.array_equal(reference.spacing, segments.spacing), (reference.spacing, segments.spacing)
    assert np.array_equal(reference.direction, segments.direction), "direction differs"
    print("identical to `claim aha`: voxels, origin, spacing and direction")
