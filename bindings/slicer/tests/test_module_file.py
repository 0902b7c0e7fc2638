"""ClaimScar.py itself needs Slicer; check its structure without it."""

import ast
from pathlib import Path

import numpy as np

import fakes
from ClaimScarLib import SmileOptions, labels as L

MODULE = Path(__file__).resolve().parents[1] / "ClaimScar" / "ClaimScar.py"


def test_scripted_module_classes():
    tree = ast.parse(MODULE.read_text(), str(MODULE))
    bases = {
        node.name: [b.id for b in node.bases if isinstance(b, ast.Name)]
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }
    assert bases["ClaimScar"] == ["ScriptedLoadableModule"]
    assert bases["ClaimScarWidget"] == ["ScriptedLoadableModuleWidget"]
    assert bases["ClaimScarLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["ClaimScarTest"] == ["ScriptedLoadableModuleTest"]
    compile(MODULE.read_text(), str(MODULE), "exec")


def test_toy_heart_smile(logic, fake_slicer):
    """The toy heart the in-Slicer self-test uses works with SMILE."""
    heart = L.toy_heart()
    m = np.diag([-1.5, -1.5, 8.0, 1.0])
    ref = fakes.add_volume(fake_slicer, np.zeros(heart.shape, np.int16), m, "toy")
    node = fakes.add_segmentation(
        fake_slicer, {L.BY_VALUE[v].name: heart == v for v in (L.LV, L.MYO, L.RV)}, m, "toy heart"
    )
    result = logic.drawScar(node, SmileOptions(seed=1, burden=0.2), referenceVolumeNode=ref)
    mask, _ = logic.labelsFromNode(result.node, ref)
    assert abs(L.burden(mask.array) - 0.2) <= 0.02
    assert not np.any(np.isin(mask.array, [L.SCAR, L.MVO]) & (heart != L.MYO))
