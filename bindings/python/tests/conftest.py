"""Shared fixtures: the repository, the CLI, the AHA atlas, a phantom, the built-in models.

Environment:
    CLAIM_SOURCE_DIR   repository root (default: three levels above this folder)
    CLAIM_CLI          the claim CLI (default: <root>/target/release/claim)
    CLAIM_ATLAS_DIR    the AHA-17 atlas folder (default: <root>/../shared/data/aha-template)
    CLAIM_REQUIRE_ATLAS=1, CLAIM_REQUIRE_CLI=1
                       fail instead of skipping when the atlas / CLI is missing (CI)
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import claim

ROOT = Path(os.environ.get("CLAIM_SOURCE_DIR") or Path(__file__).resolve().parents[3])
ATLAS_LV, ATLAS_RV = 21, 24
RV = 5  # RV label of the phantoms and of the atlas as converted here


def _missing(what, env):
    if os.environ.get(env) == "1":
        pytest.fail(f"{what} ({env}=1 makes this a failure)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def cli():
    path = Path(os.environ.get("CLAIM_CLI") or ROOT / "target" / "release" / "claim")
    if not path.is_file():
        _missing(
            f"the claim CLI is not at {path}: run `cargo build --release` or set CLAIM_CLI",
            "CLAIM_REQUIRE_CLI",
        )
    return path


def run_cli(cli, *args):
    done = subprocess.run([str(cli), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, f"claim {' '.join(map(str, args))} failed:\n{done.stderr}"
    return done


@pytest.fixture(scope="session")
def atlas_dir():
    path = Path(os.environ.get("CLAIM_ATLAS_DIR") or ROOT.parent / "shared" / "data" / "aha-template")
    if not (path / "AHA17_model_ED.nii.gz").is_file():
        _missing(
            f"the AHA atlas is not in {path}: set CLAIM_ATLAS_DIR to the aha-template folder",
            "CLAIM_REQUIRE_ATLAS",
        )
    return path


@pytest.fixture(scope="session")
def atlas(atlas_dir):
    """(labels, segments): the atlas as an EMIDEC label map with RV 5 (uint8)
    and its own AHA segments (uint8), on the atlas grid."""
    raw = claim.read_image(atlas_dir / "AHA17_model_ED.nii.gz")
    r = raw.array
    myo = (r >= 1) & (r <= 17)
    labels = np.zeros(r.shape, np.uint8)
    labels[myo] = 2
    labels[r == ATLAS_LV] = 1
    labels[r == ATLAS_RV] = RV
    segments = np.where(myo, r, 0).astype(np.uint8)
    return claim.Image.like(raw, labels), claim.Image.like(raw, segments)


@pytest.fixture(scope="session")
def phantom(cli, tmp_path_factory):
    """(image, labels) of a small scarred phantom (96 x 96 x 6, oblique,
    labels 1 LV, 2 myo, 3 scar, 4 MVO, 5 RV)."""
    out = tmp_path_factory.mktemp("phantom")
    run_cli(cli, "phantom", "-o", out, "--size", 96, "--slices", 6, "--scar", "--seed", 0)
    return claim.read_image(out / "image.nii.gz"), claim.read_image(out / "labels.nii.gz")


@pytest.fixture(scope="session")
def big_phantom(cli, tmp_path_factory):
    """(image, labels) of a larger phantom, for calls that must last a while."""
    out = tmp_path_factory.mktemp("big_phantom")
    run_cli(cli, "phantom", "-o", out, "--size", 192, "--slices", 10, "--scar", "--seed", 1)
    return claim.read_image(out / "image.nii.gz"), claim.read_image(out / "labels.nii.gz")


@pytest.fixture(scope="session")
def diffusion():
    with claim.DiffusionModel("builtin") as model:
        yield model


@pytest.fixture(scope="session")
def segmenter():
    with claim.Segmenter("builtin") as model:
        yield model


def oblique_direction(ax=0.3, ay=-0.5, az=0.8):
    """A proper rotation (det +1) about all three axes."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx
