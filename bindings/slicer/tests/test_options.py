"""Option dataclasses: parsing, validation, settings round trip."""

import json

import pytest

from ClaimScarLib import SegmentationOptions, SmileOptions, SynthesisOptions
from ClaimScarLib.options import parse_folds


@pytest.mark.parametrize(
    "text, folds",
    [("", None), ("  ", None), ("auto", None), ("all", ["all"]), ("0", [0]), ("0,1, 2", [0, 1, 2]), ("3 4", [3, 4])],
)
def test_parse_folds(text, folds):
    assert parse_folds(text) == folds


@pytest.mark.parametrize("text", ["zero", "1;2", "-1"])
def test_parse_folds_rejects(text):
    with pytest.raises(ValueError, match="folds"):
        parse_folds(text)


def test_defaults_are_valid():
    for cls in (SmileOptions, SynthesisOptions, SegmentationOptions):
        assert cls().problems() == []
    assert SynthesisOptions().model_path == "builtin" and SegmentationOptions().model_path == "builtin"
    assert SegmentationOptions().mirroring and SegmentationOptions().step_size == 0.5


def test_problems():
    assert SmileOptions(pattern="x", territory="y", burden=0.0).problems() == [
        "pattern: 'x' is not one of ischemic, midwall, epicardial, insertion, claim",
        "territory: 'y' is not one of any, lad, rca, lcx",
        "burden: 0.0 is not in (0, 1]",
    ]
    assert SynthesisOptions(model_path=" ", device="gpu", t_start=301).problems()[0].startswith("model: no path")
    assert len(SynthesisOptions(model_path=" ", device="gpu", t_start=301).problems()) == 3
    assert SynthesisOptions(device="cuda:1").problems() == []
    assert SegmentationOptions(step_size=1.5, folds="a").problems() == [
        "folds: 'a' is not a fold number or 'all' (e.g. '0,1,2')",
        "step size: 1.5 is not in (0, 1]",
    ]


def test_settings_round_trip():
    options = SegmentationOptions(model_path="/models/Dataset101", folds="0,1", device="cuda", mirroring=False)
    assert SegmentationOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    # Stale or foreign settings keep the defaults.
    loaded = SmileOptions.from_dict({"seed": "x", "burden": None, "unknown": 1, "rotation_deg": 5})
    assert loaded.seed == 0 and loaded.burden is None and loaded.rotation_deg == 5.0
