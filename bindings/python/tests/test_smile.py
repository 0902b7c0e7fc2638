"""AHA parcellation (against the CLI), SMILE draws, statistics and bull's-eyes,
on the AHA-17 atlas."""

import numpy as np
import pytest

import claim
from conftest import RV, run_cli

LAD = {1, 2, 7, 8, 13, 14, 17}


def lesion_fraction(labels):
    a = labels.array
    lesion = np.count_nonzero((a == 3) | (a == 4))
    return lesion / np.count_nonzero((a == 2) | (a == 3) | (a == 4))


@pytest.mark.parametrize("with_rv", [True, False])
def test_aha_equals_the_cli(atlas, cli, tmp_path, with_rv):
    labels, _ = atlas
    claim.write_image(labels, tmp_path / "labels.nii.gz")
    args = ["aha", tmp_path / "labels.nii.gz", "-o", tmp_path / "segments.nii.gz"]
    if with_rv:
        args += ["--rv", RV]
        given = labels
    else:
        given = claim.Image.like(labels, np.where(labels.array == RV, 0, labels.array))
        claim.write_image(given, tmp_path / "labels.nii.gz")
    run_cli(cli, *args)
    expected = claim.read_image(tmp_path / "segments.nii.gz")
    found = claim.aha_segments(given, rv=RV if with_rv else None)
    assert found.array.dtype == np.uint8 == expected.array.dtype
    np.testing.assert_array_equal(found.array, expected.array)
    assert found.spacing == expected.spacing and found.origin == expected.origin
    np.testing.assert_array_equal(found.direction, expected.direction)
    assert found.same_geometry(labels, 0)


def test_aha_agrees_with_the_atlas_segments(atlas):
    labels, segments = atlas
    found = claim.aha_segments(labels, rv=RV).array
    myo = labels.array == 2
    assert set(np.unique(found[myo])) == set(range(1, 18))
    assert np.all(found[~myo] == 0)
    assert np.mean(found[myo] == segments.array[myo]) > 0.8


def test_aha_options_and_errors(atlas):
    labels, _ = atlas
    base = claim.aha_segments(labels, rv=RV)
    turned = claim.aha_segments(labels, rv=RV, rotation_deg=60.0)
    assert not np.array_equal(base.array, turned.array)
    # Labels outside the scheme (RV present but not named).
    with pytest.raises(claim.ClaimError) as err:
        claim.aha_segments(labels)
    assert err.value.status == claim.Status.INVALID_ARGUMENT
    assert str(RV) in err.value.message
    # A plain array is accepted (unit geometry).
    assert claim.aha_segments(labels.array, rv=RV).spacing == (1.0, 1.0, 1.0)


def test_smile_is_deterministic_and_hits_the_burden(atlas):
    labels, _ = atlas
    a = claim.smile(labels, seed=11, territory="lad", burden=0.2, rv=RV)
    b = claim.smile(labels, seed=11, territory="lad", burden=0.2, rv=RV)
    c = claim.smile(labels, seed=12, territory="lad", burden=0.2, rv=RV)
    np.testing.assert_array_equal(a.array, b.array)
    assert not np.array_equal(a.array, c.array)
    assert a.array.dtype == labels.array.dtype and a.same_geometry(labels, 0)
    assert abs(lesion_fraction(a) - 0.2) <= 0.02
    # Scar only on myocardium; every other voxel unchanged.
    changed = a.array != labels.array
    assert np.all(labels.array[changed] == 2)
    assert set(np.unique(a.array[changed])) <= {3, 4}


def test_smile_draw_and_context(atlas):
    labels, segments = atlas
    mask, info = claim.smile_draw(labels, seed=5, territory="lad", burden=0.15, mvo=True, transmurality=0.8, rv=RV)
    assert info.pattern == "ischemic" and info.territory == "lad" and info.seed == 5
    assert set(info.segments_chosen) <= LAD and info.segments_chosen
    assert info.burden_target == pytest.approx(0.15)
    assert info.burden == pytest.approx(lesion_fraction(mask))
    assert info.mvo_voxels == np.count_nonzero(mask.array == 4) > 0
    assert info.scar_voxels == np.count_nonzero(mask.array == 3)
    with claim.SmileContext(labels, territory="lad", burden=0.15, mvo=True, transmurality=0.8, rv=RV) as ctx:
        for seed in (5, 6):
            drawn, drawn_info = ctx.draw(seed)
            np.testing.assert_array_equal(
                drawn.array,
                claim.smile(labels, seed=seed, territory="lad", burden=0.15, mvo=True, transmurality=0.8, rv=RV).array,
            )
        assert drawn_info.seed == 6
    # The atlas's own segments instead of a parcellation.
    with claim.SmileContext(labels, segments=segments, pattern="midwall", burden=0.08, rv=RV) as ctx:
        drawn, drawn_info = ctx.draw(1)
    assert drawn_info.pattern == "midwall" and drawn_info.transmurality is None
    assert abs(drawn_info.burden - 0.08) <= 0.02


@pytest.mark.parametrize("pattern", ["midwall", "epicardial", "insertion", "claim"])
def test_every_pattern(atlas, pattern):
    labels, _ = atlas
    mask, info = claim.smile_draw(labels, seed=2, pattern=pattern, rv=RV)
    assert info.pattern == pattern
    assert np.count_nonzero(mask.array == 3) > 0


def test_smile_errors(atlas):
    labels, segments = atlas
    with pytest.raises(ValueError, match="pattern"):
        claim.smile(labels, pattern="diffuse", rv=RV)
    with pytest.raises(ValueError, match="territory"):
        claim.smile(labels, territory="lmca", rv=RV)
    with pytest.raises(claim.ClaimError) as err:
        claim.smile(labels, burden=1.5, rv=RV)
    assert err.value.status == claim.Status.INVALID_ARGUMENT and "burden" in err.value.message
    with pytest.raises(ValueError, match="shape"):
        claim.SmileContext(labels, segments=claim.Image(segments.array[:-1]), rv=RV)


def test_stats_and_bullseye(atlas):
    labels, _ = atlas
    mask, info = claim.smile_draw(labels, seed=3, territory="rca", burden=0.25, rv=RV)
    stats = claim.segment_stats(mask, rv=RV)
    own = claim.segment_stats(mask, segments=claim.aha_segments(mask, rv=RV), rv=RV)
    np.testing.assert_allclose(stats.scar_ml, own.scar_ml)
    assert stats.burden == pytest.approx(info.burden)
    voxel_ml = np.prod(labels.spacing) / 1000.0
    myo_voxels = np.count_nonzero(np.isin(mask.array, (2, 3, 4)))
    assert stats.total_myocardium_ml == pytest.approx(myo_voxels * voxel_ml)
    assert stats.myocardium_ml.shape == (18,)
    assert stats.myocardium_ml.sum() == pytest.approx(stats.total_myocardium_ml)
    assert stats.scar_ml.sum() == pytest.approx(stats.total_scar_ml)
    assert stats.as_dict()["burden"] == stats.burden

    svg = claim.bullseye_svg(stats, size_px=320, max_percent=60, title="RCA <test> & co")
    assert svg.lstrip().startswith(("<svg", "<?xml")) and svg.rstrip().endswith("</svg>")
    assert "RCA &lt;test&gt; &amp; co" in svg
    png = claim.bullseye_png(stats, size_px=128)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert claim.bullseye_png(claim.SegmentStats.from_scar_percent(np.linspace(0, 80, 17))).startswith(b"\x89PNG")
    with pytest.raises(claim.ClaimError) as err:
        claim.bullseye_svg(stats, size_px=8)
    assert err.value.status == claim.Status.INVALID_ARGUMENT


def test_evaluate(atlas):
    labels, _ = atlas
    if claim.abi_version() < (2, 2):
        with pytest.raises(claim.ClaimError) as err:
            claim.evaluate(labels, labels, rv=RV)
        assert err.value.status == claim.Status.UNSUPPORTED
        pytest.skip("the library predates claim_labels_evaluate_json (ABI 2.2)")
    a = claim.smile(labels, seed=1, burden=0.2, rv=RV)
    report = claim.evaluate(a, a, rv=RV)
    assert isinstance(report, dict) and report
