"""Label maps <-> segmentation nodes: names, colours, values."""

import numpy as np
import pytest

import fakes
from ClaimScarLib import labels as L
from ClaimScarLib.logic import COLOR_TABLE_NAME


def _label_map(shape=(4, 6, 8)):
    array = np.zeros(shape, dtype=np.uint8)
    array[1:3, 1:3, 1:3] = L.LV
    array[1:3, 3:5, 1:3] = L.MYO
    array[1:3, 1:3, 3:5] = L.SCAR
    array[2, 4, 4] = L.MVO
    array[1:3, 1:5, 6:8] = L.RV
    return array


@pytest.mark.parametrize(
    "name, value",
    [
        ("LV cavity", L.LV),
        ("lv_cavity", L.LV),
        ("Left Ventricle", L.LV),
        ("Myocardium", L.MYO),
        ("MYO", L.MYO),
        ("scar", L.SCAR),
        ("Infarct", L.SCAR),
        ("MVO", L.MVO),
        ("microvascular-obstruction", L.MVO),
        ("RV", L.RV),
        ("right ventricle", L.RV),
        ("Label_2", L.MYO),
        ("Segment_5", L.RV),
        ("Label_9", None),
        ("Liver", None),
    ],
)
def test_segment_name_matching(name, value):
    assert L.label_for_segment_name(name) == value


def test_merge_exported_by_name():
    exported = np.array([[[0, 1, 2, 3, 4]]])
    out, unknown = L.merge_exported(exported, ["Scar", "Liver", "LV cavity", "myocardium"])
    np.testing.assert_array_equal(out, [[[0, L.SCAR, 0, L.LV, L.MYO]]])
    assert unknown == ["Liver"]


def test_relabel_and_burden():
    atlas = np.array([0, 1, 9, 17, 18, 21, 24])
    np.testing.assert_array_equal(
        L.relabel(atlas, {range(1, 18): L.MYO, 21: L.LV, 24: L.RV}), [0, 2, 2, 2, 0, 1, 5]
    )
    assert L.burden(np.array([2, 2, 3, 4, 1, 1])) == pytest.approx(0.5)
    assert L.heart_problem(np.array([0, 1, 2])) is None
    assert "Myocardium" in L.heart_problem(np.array([0, 1, 3]))


def test_labels_to_segmentation_names_and_colours(logic, fake_slicer, claim):
    m = fakes.oblique_ijk_to_ras()
    array = _label_map()
    ref = fakes.add_volume(fake_slicer, np.zeros(array.shape, np.int16), m, "image")
    image = logic.volumeToImage(ref)
    labels = claim.Image(array, image.spacing, image.origin, image.direction)

    node = logic.labelsToSegmentation(labels, "heart", referenceVolumeNode=ref)
    seg = node.GetSegmentation()
    assert seg.names() == ["LV cavity", "Myocardium", "Scar", "MVO", "RV"]
    for info in L.LABELS:
        segment, mask = seg.by_name(info.name)
        assert segment.GetColor() == pytest.approx(info.color)
        np.testing.assert_array_equal(mask, array == info.value)
    assert node.reference_geometry[0] == array.shape
    # Temporary labelmap and its display node are gone; the colour table stays, once.
    scene = fake_slicer.mrmlScene
    assert scene.nodes("vtkMRMLLabelMapVolumeNode") == []
    assert len([n for n in scene.nodes() if n.GetName() == COLOR_TABLE_NAME]) == 1

    # And back: the same values on the same grid, nothing left in the scene.
    before = len(scene.nodes())
    again, notes = logic.labelsFromNode(node, ref)
    assert notes == []
    np.testing.assert_array_equal(again.array, array)
    assert again.same_geometry(labels)
    assert len(scene.nodes()) == before

    # Writing into the same node replaces its segments.
    only_myo = np.where(array == L.MYO, L.MYO, 0).astype(np.uint8)
    logic.labelsToSegmentation(claim.Image.like(labels, only_myo), "x", segmentationNode=node, referenceVolumeNode=ref)
    assert seg.names() == ["Myocardium"]
    assert len([n for n in scene.nodes() if n.GetName() == COLOR_TABLE_NAME]) == 1


def test_segmentation_with_other_names(logic, fake_slicer):
    m = fakes.oblique_ijk_to_ras()
    array = _label_map()
    node = fakes.add_segmentation(
        fake_slicer,
        {
            "left ventricle": array == L.LV,
            "Liver": np.zeros(array.shape, bool),
            "myo": array == L.MYO,
            "Label_5": array == L.RV,
        },
        m,
    )
    labels, notes = logic.labelsFromNode(node)
    expected = np.where(np.isin(array, [L.LV, L.MYO, L.RV]), array, 0)
    np.testing.assert_array_equal(labels.array, expected)
    assert len(notes) == 1 and "'Liver' ignored" in notes[0]


def test_labelmap_volume_input(logic, fake_slicer):
    m = fakes.oblique_ijk_to_ras()
    array = _label_map()
    lm = fakes.add_volume(fake_slicer, array.astype(np.int16), m, "lm", labelmap=True)
    labels, notes = logic.labelsFromNode(lm)
    assert labels.array.dtype == np.uint8 and notes == []
    np.testing.assert_array_equal(labels.array, array)

    bad = fakes.add_volume(fake_slicer, np.full(array.shape, 21, np.int16), m, "atlas", labelmap=True)
    with pytest.raises(ValueError, match="outside the scheme"):
        logic.labelsFromNode(bad)

    other_grid = fakes.add_volume(fake_slicer, np.zeros(array.shape), np.eye(4), "other")
    with pytest.raises(ValueError, match="different grids"):
        logic.labelsFromNode(lm, other_grid)


def test_empty_segmentation_is_an_error(logic, fake_slicer):
    node = fakes.add_segmentation(fake_slicer, {}, np.eye(4), name="empty")
    with pytest.raises(ValueError, match="no segments"):
        logic.labelsFromNode(node)
