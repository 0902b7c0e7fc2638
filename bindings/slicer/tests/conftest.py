"""Fixtures of the ClaimScar tests (no Slicer needed).

Environment:
  PYTHONPATH / installed package: the `claim` Python package (bindings/python)
  CLAIM_LIBRARY     libclaim.so to use (the package's own rule)
  CLAIM_ATLAS_DIR   the AHA atlas folder (default: ../shared/data/aha-template
                    beside the checkout)
  CLAIM_CLI         the claim command line (default: target/release/claim)
  CLAIM_REQUIRE_PACKAGE=1, CLAIM_REQUIRE_ATLAS=1, CLAIM_REQUIRE_CLI=1:
                    fail instead of skipping when that piece is missing
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parent / "ClaimScar"
REPO_ROOT = HERE.parents[2]

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(MODULE_DIR))

import fakes  # noqa: E402
from ClaimScarLib import SceneLogic, labels as L  # noqa: E402


def _missing(what, variable):
    if os.environ.get(variable) == "1":
        pytest.fail(f"{what} ({variable}=1)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def claim():
    try:
        import claim as module
    except ImportError as exc:
        _missing(f"the claim Python package is not importable: {exc}", "CLAIM_REQUIRE_PACKAGE")
    return module


@pytest.fixture(scope="session")
def atlas_dir():
    path = Path(os.environ.get("CLAIM_ATLAS_DIR") or REPO_ROOT.parent / "shared" / "data" / "aha-template")
    if not (path / "AHA17_model_ED.nii.gz").is_file():
        _missing(f"no AHA atlas at {path} (set CLAIM_ATLAS_DIR)", "CLAIM_REQUIRE_ATLAS")
    return path


@pytest.fixture(scope="session")
def atlas_labels(claim, atlas_dir):
    """The atlas heart in the module's scheme: segments 1-17 -> myocardium,
    21 -> LV cavity, 24 -> RV."""
    atlas = claim.read_image(str(atlas_dir / "AHA17_model_ED.nii.gz"))
    array = L.relabel(atlas.array, {range(1, 18): L.MYO, 21: L.LV, 24: L.RV})
    return claim.Image(array, atlas.spacing, atlas.origin, atlas.direction)


@pytest.fixture(scope="session")
def phantom(claim, tmp_path_factory):
    """(image, labels) of `claim phantom --scar --size 96` as claim.Images."""
    cli = Path(os.environ.get("CLAIM_CLI") or REPO_ROOT / "target" / "release" / "claim")
    if not cli.is_file():
        _missing(f"no claim CLI at {cli} (set CLAIM_CLI)", "CLAIM_REQUIRE_CLI")
    out = tmp_path_factory.mktemp("phantom")
    subprocess.run([str(cli), "phantom", "--scar", "-o", str(out), "--size", "96"], check=True, capture_output=True)
    return claim.read_image(str(out / "image.nii.gz")), claim.read_image(str(out / "labels.nii.gz"))


@pytest.fixture
def fake_slicer():
    return fakes.make_slicer()


@pytest.fixture
def fake_vtk():
    return fakes.make_vtk()


@pytest.fixture
def logic(fake_slicer, fake_vtk, claim):
    return SceneLogic(slicer=fake_slicer, vtk=fake_vtk, claim=claim)
