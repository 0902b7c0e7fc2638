#!/usr/bin/env python3
"""Time an upstream-style SMILE scar generator on the AHA atlas.

A numpy/scipy re-implementation of steps 2-4 of the upstream CLAIM/SMILE
generator as `shared/reference/smile.md` describes them (no registration:
the atlas is the subject), to compare against `cargo bench --bench smile`:

  2. segment pick: a random subset of basal segments, some of their
     basal/mid neighbours, one mid segment and its ring neighbours, one
     apical segment and its ring neighbours (same rule as
     `claim::smile::territory::sample_upstream`);
  3. per picked segment a porespy-style `blobs` field (uniform noise,
     Gaussian sigma = mean(shape) / 40, rank-normalised, `< porosity` with
     porosity 0.21 x U(3, 12), fixed seed 1001), eroded in-plane with a
     random 1/3/5/7 square, masked by that segment; the masks are summed;
  4. fill holes, Gaussian sigma = 1 voxel, threshold 0.3, largest
     26-connected component.

It then reports the time per mask, the scar fraction of the myocardium
before and after clipping to it, the segments touched and the mean pairwise
Dice, for seeds 100-107 (the table in smile.md).

Needs numpy and scipy only; reads the gzipped NIfTI itself.

    python3 tools/upstream_smile_timing.py [ATLAS_DIR]
"""

import gzip
import itertools
import os
import struct
import sys
import time

import numpy as np
from scipy import ndimage

# Adjacency of the AHA segments (same table as claim::smile::territory).
NEIGHBOURS = {
    1: [2, 6, 7], 2: [1, 3, 8], 3: [2, 4, 9], 4: [3, 5, 10], 5: [4, 6, 11], 6: [5, 1, 12],
    7: [1, 8, 12, 13], 8: [2, 7, 9, 13, 14], 9: [3, 8, 10, 14, 15], 10: [4, 9, 11, 15],
    11: [5, 10, 12, 15, 16], 12: [6, 11, 7, 13, 16], 13: [7, 8, 12, 14, 16, 17],
    14: [8, 9, 13, 15, 17], 15: [9, 10, 11, 14, 16, 17], 16: [11, 12, 13, 15, 17],
    17: [13, 14, 15, 16],
}
BLOB_SEED = 1001


def ring(segment):
    return 0 if segment <= 6 else 1 if segment <= 12 else 2 if segment <= 16 else 3


def read_nifti(path):
    """Voxel array indexed [i, j, k] of a NIfTI-1 file (int16/uint8/int32/float32)."""
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        raw = f.read()
    endian = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    dims = struct.unpack(endian + "8h", raw[40:56])
    datatype = struct.unpack(endian + "h", raw[70:72])[0]
    offset = int(struct.unpack(endian + "f", raw[108:112])[0])
    dtype = {2: "u1", 4: "i2", 8: "i4", 16: "f4"}[datatype]
    shape = tuple(d for d in dims[1:dims[0] + 1])
    count = int(np.prod(shape))
    data = np.frombuffer(raw, dtype=endian + dtype, count=count, offset=offset)
    data = data.reshape(shape, order="F")
    return data.reshape(shape[:3], order="F") if len(shape) > 3 else data


def blobs(shape, porosity, seed=BLOB_SEED, blobiness=1.0):
    """porespy-style blobs: blurred uniform noise, rank-normalised, < porosity."""
    rng = np.random.RandomState(seed)
    im = rng.random_sample(shape)
    im = ndimage.gaussian_filter(im, sigma=np.mean(shape) / (40.0 * blobiness))
    ranks = np.empty(im.size)
    ranks[np.argsort(im, axis=None, kind="stable")] = np.arange(im.size) / im.size
    return ranks.reshape(shape) < porosity


def pick_segments(rng):
    chosen = set()
    basal = rng.permutation(np.arange(1, 7))[: rng.randint(1, 4)]
    for s in basal:
        chosen.add(int(s))
        for n in NEIGHBOURS[int(s)]:
            if n <= 12 and rng.random_sample() < 0.5:
                chosen.add(n)
    mid = int(rng.randint(7, 13))
    apical = int(rng.randint(13, 18))
    for s in (mid, apical):
        chosen.add(s)
        chosen.update(n for n in NEIGHBOURS[s] if ring(n) == ring(s) or s == 17)
    return sorted(chosen)


def draw(segments, myo, seed):
    rng = np.random.RandomState(seed)
    total = np.zeros(segments.shape, dtype=np.float64)
    for s in pick_segments(rng):
        porosity = 0.21 * rng.uniform(3, 12)
        kernel = int(rng.choice([1, 3, 5, 7]))
        blob = blobs(segments.shape, porosity)
        blob = ndimage.binary_erosion(blob, structure=np.ones((kernel, kernel, 1), bool))
        total += blob * (myo & (segments == s))
    mask = ndimage.binary_fill_holes(total > 0)
    smooth = ndimage.gaussian_filter(mask.astype(np.float64), sigma=1)
    scar = smooth > 0.3
    labels, count = ndimage.label(scar, structure=np.ones((3, 3, 3), bool))
    if count > 1:
        sizes = ndimage.sum(scar, labels, range(1, count + 1))
        scar = labels == (int(np.argmax(sizes)) + 1)
    return scar


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    atlas_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "CLAIM_ATLAS_DIR", os.path.join(here, "..", "..", "shared", "data", "aha-template"))
    raw = read_nifti(os.path.join(atlas_dir, "AHA17_model_ED.nii.gz")).astype(np.int32)
    segments = np.where((raw >= 1) & (raw <= 17), raw, 0)
    myo = segments > 0
    n_myo = int(myo.sum())
    masks, times = [], []
    for seed in range(100, 108):
        t0 = time.perf_counter()
        scar = draw(segments, myo, seed)
        times.append(time.perf_counter() - t0)
        clipped = scar & myo
        touched = len(np.unique(segments[clipped]))
        print(f"seed {seed}: {times[-1]:.2f} s, scar {scar.sum() / n_myo:.2f} of the myocardium "
              f"({clipped.sum() / n_myo:.2f} clipped), outside {1 - clipped.sum() / max(scar.sum(), 1):.2f}, "
              f"{touched} segments")
        masks.append(clipped)
    dice = [2 * (a & b).sum() / (a.sum() + b.sum()) for a, b in itertools.combinations(masks, 2)]
    print(f"median {np.median(times):.2f} s per mask; mean pairwise Dice {np.mean(dice):.2f} "
          f"({min(dice):.2f}-{max(dice):.2f})")


if __name__ == "__main__":
    main()
