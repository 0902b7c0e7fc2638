"""The three operations through SceneLogic with the real claim package and
fake Slicer nodes: SMILE on the AHA atlas, synthesis and segmentation on a
phantom, progress, cancel and errors."""

import time

import numpy as np
import pytest

import fakes
from ClaimScarLib import SegmentationOptions, SmileOptions, SynthesisOptions, labels as L

TINY = dict(t_start=20, jump_length=1, jump_n_sample=1)


def _volume_like(fake_slicer, image, name, array=None):
    return fakes.add_volume(
        fake_slicer, image.array if array is None else array, fakes.ijk_to_ras_of(image), name
    )


@pytest.fixture
def atlas_scene(logic, fake_slicer, atlas_labels):
    """A reference volume on the atlas grid and the atlas heart as a
    segmentation (LV cavity, Myocardium, RV)."""
    ref = _volume_like(fake_slicer, atlas_labels, "atlas", np.zeros(atlas_labels.array.shape, np.int16))
    heart = logic.labelsToSegmentation(atlas_labels, "atlas heart", referenceVolumeNode=ref)
    assert heart.GetSegmentation().names() == ["LV cavity", "Myocardium", "RV"]
    return ref, heart


@pytest.mark.parametrize(
    "options",
    [
        SmileOptions(seed=3, pattern="ischemic", territory="lad", burden=0.20, mvo=True),
        SmileOptions(seed=11, pattern="ischemic", territory="rca", burden=0.10, transmurality=0.5),
        SmileOptions(seed=5, pattern="midwall", burden=0.08),
    ],
    ids=["ischemic-lad-mvo", "ischemic-rca", "midwall"],
)
def test_smile_on_atlas(logic, atlas_scene, atlas_labels, options):
    ref, heart = atlas_scene
    result = logic.drawScar(heart, options, referenceVolumeNode=ref)
    assert result.notes == []
    assert result.node.GetName() == f"atlas heart SMILE {options.pattern} seed {options.seed}"
    names = result.node.GetSegmentation().names()
    assert names[:3] == ["LV cavity", "Myocardium", "Scar"] and names[-1] == "RV"
    assert ("MVO" in names) == options.mvo

    mask, notes = logic.labelsFromNode(result.node, ref)
    assert notes == [] and mask.same_geometry(atlas_labels)
    wall = atlas_labels.array == L.MYO
    lesion = np.isin(mask.array, [L.SCAR, L.MVO])
    assert lesion.any() and not (lesion & ~wall).any(), "scar outside the myocardium"
    # Everything that is not lesion is the heart as it was.
    np.testing.assert_array_equal(mask.array[~lesion], atlas_labels.array[~lesion])
    assert abs(L.burden(mask.array) - options.burden) <= 0.02
    assert result.info.burden == pytest.approx(L.burden(mask.array), abs=1e-6)
    assert result.info.pattern == options.pattern and result.info.seed == options.seed
    if options.pattern == "ischemic":
        assert result.info.territory == options.territory


def test_smile_is_reproducible_and_replaces_output(logic, atlas_scene):
    ref, heart = atlas_scene
    options = SmileOptions(seed=7, territory="lcx", burden=0.12)
    first = logic.drawScar(heart, options, referenceVolumeNode=ref)
    a, _ = logic.labelsFromNode(first.node, ref)
    again = logic.drawScar(heart, options, referenceVolumeNode=ref, outputNode=first.node)
    assert again.node is first.node
    b, _ = logic.labelsFromNode(first.node, ref)
    np.testing.assert_array_equal(a.array, b.array)


def test_smile_problems_are_value_errors(logic, atlas_scene, fake_slicer, atlas_labels):
    ref, heart = atlas_scene
    with pytest.raises(ValueError, match="burden"):
        logic.drawScar(heart, SmileOptions(burden=1.5), referenceVolumeNode=ref)
    with pytest.raises(ValueError, match="pattern"):
        logic.drawScar(heart, SmileOptions(pattern="random"), referenceVolumeNode=ref)
    myo_only = fakes.add_segmentation(
        fake_slicer, {"Myocardium": atlas_labels.array == L.MYO}, fakes.ijk_to_ras_of(atlas_labels)
    )
    with pytest.raises(ValueError, match="no LV cavity"):
        logic.drawScar(myo_only, SmileOptions(), referenceVolumeNode=ref)


@pytest.fixture
def phantom_scene(logic, fake_slicer, phantom):
    image, labels = phantom
    image_node = _volume_like(fake_slicer, image, "phantom")
    mask_node = logic.labelsToSegmentation(labels, "phantom mask", referenceVolumeNode=image_node)
    assert mask_node.GetSegmentation().names() == ["LV cavity", "Myocardium", "Scar", "MVO", "RV"]
    return image_node, mask_node


def test_synthesis_changes_only_lesion(logic, phantom_scene, phantom):
    image, labels = phantom
    image_node, mask_node = phantom_scene
    image_node.GetDisplayNode().SetWindowLevel(900.0, 300.0)
    job = logic.startSynthesis(image_node, mask_node, SynthesisOptions(seed=2, **TINY))
    seen = []
    outcome = job.run_to_end(lambda job, done, total: seen.append((done, total)), interval=0.01)
    assert outcome.status == "done", outcome.message
    node = outcome.result
    assert node.GetName() == "phantom synthetic seed 2"
    np.testing.assert_allclose(node._ijk_to_ras, image_node._ijk_to_ras)
    assert node.GetTransformNodeID() == image_node.GetTransformNodeID()
    assert node.GetDisplayNode().window_level == (900.0, 300.0)
    out = node._array
    assert out.shape == image.array.shape and out.dtype == image.array.dtype
    changed = out != image.array
    lesion = np.isin(labels.array, [L.SCAR, L.MVO])
    assert changed.any() and not (changed & ~lesion).any()
    assert seen and seen[-1][0] == seen[-1][1] > 0


def test_synthesis_needs_a_lesion(logic, fake_slicer, phantom):
    image, labels = phantom
    image_node = _volume_like(fake_slicer, image, "phantom")
    healthy = np.where(np.isin(labels.array, [L.SCAR, L.MVO]), L.MYO, labels.array).astype(np.uint8)
    lm = _volume_like(fake_slicer, labels, "healthy", healthy)
    with pytest.raises(ValueError, match="no Scar or MVO"):
        logic.startSynthesis(image_node, lm, SynthesisOptions(**TINY))
    with pytest.raises(ValueError, match="t_start"):
        logic.startSynthesis(image_node, lm, SynthesisOptions(t_start=0))


def test_segmentation_returns_myocardium(logic, fake_slicer, phantom):
    image, labels = phantom
    image_node = _volume_like(fake_slicer, image, "phantom")
    options = SegmentationOptions(mirroring=False, step_size=1.0)
    outcome = logic.startSegmentation(image_node, options).run_to_end(interval=0.01)
    assert outcome.status == "done", outcome.message
    node = outcome.result
    assert node.GetName() == "phantom segmentation"
    seg = node.GetSegmentation()
    assert "Myocardium" in seg.names() and "LV cavity" in seg.names()
    predicted, _ = logic.labelsFromNode(node, image_node)
    truth = labels.array == L.MYO
    mine = predicted.array == L.MYO
    assert mine.sum() > 1000
    assert 2 * (truth & mine).sum() / (truth.sum() + mine.sum()) > 0.8
    # Segmenting again reuses the loaded model.
    segmenter = logic.models.segmenter(logic.claim, "builtin", None, "", "cpu")
    assert logic.models.segmenter(logic.claim, "builtin", None, None, "cpu") is segmenter


def test_cancel_gives_a_clean_cancelled_outcome(logic, fake_slicer, phantom):
    image, labels = phantom
    image_node = _volume_like(fake_slicer, image, "phantom")
    lm = _volume_like(fake_slicer, labels, "phantom labels")
    # 300 network evaluations: long enough to be cancelled after the first.
    job = logic.startSynthesis(image_node, lm, SynthesisOptions(t_start=300, jump_length=1, jump_n_sample=1))
    start = time.monotonic()

    def stop(job, done, total):
        if done >= 1:
            job.cancel()

    outcome = job.run_to_end(stop, interval=0.01)
    assert outcome.status == "cancelled" and outcome.message == "Synthesis cancelled"
    assert outcome.result is None
    assert job.last_progress[0] < job.last_progress[1]
    assert time.monotonic() - start < 30
    assert fake_slicer.mrmlScene.nodes("vtkMRMLScalarVolumeNode") == [image_node, lm]


def test_missing_model_is_a_message(logic, fake_slicer, phantom, tmp_path):
    image, labels = phantom
    image_node = _volume_like(fake_slicer, image, "phantom")
    lm = _volume_like(fake_slicer, labels, "phantom labels")
    missing = tmp_path / "no-such-model.safetensors"

    outcome = logic.startSynthesis(image_node, lm, SynthesisOptions(model_path=str(missing), **TINY)).run_to_end(
        interval=0.01
    )
    assert outcome.status == "error" and outcome.result is None
    assert outcome.message.startswith("Synthesis failed: CLAIM_ERR_IO")
    assert "no-such-model.safetensors" in outcome.message

    outcome = logic.startSegmentation(
        image_node, SegmentationOptions(model_path=str(tmp_path / "no-such-folder"))
    ).run_to_end(interval=0.01)
    assert outcome.status == "error" and outcome.message.startswith("Segmentation failed: CLAIM_ERR_IO")

    outcome = logic.startSegmentation(image_node, SegmentationOptions(folds="7", mirroring=False)).run_to_end(
        interval=0.01
    )
    assert outcome.status == "error" and "CLAIM_ERR" in outcome.message

    with pytest.raises(ValueError, match="folds"):
        logic.startSegmentation(image_node, SegmentationOptions(folds="zero"))
    with pytest.raises(ValueError, match="step size"):
        logic.startSegmentation(image_node, SegmentationOptions(step_size=0.0))
    with pytest.raises(ValueError, match="device"):
        logic.startSegmentation(image_node, SegmentationOptions(device="tpu"))


def test_claim_available(logic, claim):
    ok, version = logic.claimAvailable()
    assert ok and version == claim.version()
