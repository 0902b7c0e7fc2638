"""Synthesis and segmentation with the built-in models on a phantom: results,
progress, cancellation, exceptions and Ctrl-C inside callbacks, the GIL."""

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

import claim
from conftest import RV

# Quick RePaint schedule: 20 steps, no jumps.
QUICK = dict(t_start=20, jump_length=1, jump_n_sample=1)


def test_model_info(diffusion, segmenter):
    info = diffusion.info
    assert (info.channels, info.cond_dim, info.frames, info.histogram_count) == (1, 16, 1, 1)
    assert info.size_multiple == 2 ** (info.levels - 1)
    s = segmenter.info
    assert s.spatial_dims == 2 and s.input_channels == 1 and s.num_classes >= 5
    assert len(s.patch_size) == 2 and s.folds and s.configuration and s.trainer
    assert "DiffusionModel('builtin'" in repr(diffusion)


def test_missing_model_files_raise_io(tmp_path):
    for load in (claim.DiffusionModel, claim.Segmenter):
        with pytest.raises(claim.ClaimError) as err:
            load(tmp_path / "absent.safetensors")
        assert err.value.status == claim.Status.IO, err.value
        assert "absent.safetensors" in err.value.message


def test_bad_device():
    with pytest.raises(ValueError, match="device"):
        claim.DiffusionModel(device="tpu")
    if not claim.build_info().cuda_available:
        with pytest.raises(claim.ClaimError) as err:
            claim.Segmenter(device="cuda")
        assert err.value.status == claim.Status.DEVICE


def test_closed_model_is_refused(phantom):
    model = claim.DiffusionModel()
    model.close()
    model.close()
    with pytest.raises(ValueError, match="close"):
        model.synthesize(*phantom, rv=RV, **QUICK)


def test_synthesis_changes_only_lesion_voxels(diffusion, phantom):
    image, labels = phantom
    calls = []
    out = claim.synthesize(diffusion, image, labels, seed=3, rv=RV, progress=lambda d, t: calls.append((d, t)), **QUICK)
    assert out.array.dtype == image.array.dtype and out.same_geometry(image, 0)
    lesion = np.isin(labels.array, (3, 4))
    np.testing.assert_array_equal(out.array[~lesion], image.array[~lesion])
    assert np.count_nonzero(out.array[lesion] != image.array[lesion]) > lesion.sum() // 2
    # Progress: from 0 to total, in order.
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    # Deterministic; the method form gives the same; float32 output on request.
    again = diffusion.synthesize(image, labels, seed=3, rv=RV, dtype=np.float32, **QUICK)
    assert again.array.dtype == np.float32
    np.testing.assert_allclose(np.round(again.array), out.array, atol=1)


def test_measured_histogram(diffusion, phantom):
    image, labels = phantom
    hist = diffusion.measure_histogram(image, labels, rv=RV)
    assert hist.shape == (16,) and hist.sum() == pytest.approx(1.0, abs=1e-5)


def test_synthesis_input_errors(diffusion, phantom):
    image, labels = phantom
    with pytest.raises(ValueError, match="shape"):
        claim.synthesize(diffusion, image, claim.Image(labels.array[1:]), rv=RV, **QUICK)
    healthy = claim.Image.like(labels, np.where(np.isin(labels.array, (3, 4)), 2, labels.array))
    with pytest.raises(claim.ClaimError) as err:
        claim.synthesize(diffusion, image, healthy, rv=RV, **QUICK)
    assert err.value.status == claim.Status.INVALID_ARGUMENT
    with pytest.raises(claim.ClaimError) as err:
        claim.synthesize(diffusion, image, labels, **QUICK)  # RV label 5 not in the scheme
    assert err.value.status == claim.Status.INVALID_ARGUMENT
    with pytest.raises(claim.ClaimError) as err:
        claim.synthesize(diffusion, image, labels, rv=RV, histogram=[0.1] * 5, **QUICK)
    assert err.value.status == claim.Status.INVALID_ARGUMENT
    with pytest.raises(ValueError, match="histogram"):
        claim.synthesize(diffusion, image, labels, rv=RV, histogram="uniform", **QUICK)


def test_segmentation_finds_the_myocardium(segmenter, phantom):
    image, labels = phantom
    calls = []
    out = claim.segment(segmenter, image, mirroring=False, step_size=1.0, progress=lambda d, t: calls.append(d))
    assert out.array.dtype == np.uint8 and out.same_geometry(image, 0)
    truth, found = labels.array == 2, out.array == 2
    dice = 2 * np.count_nonzero(truth & found) / (truth.sum() + found.sum())
    assert dice > 0.7
    assert calls and calls[0] == 0
    # Other label values for the output.
    relabelled = segmenter.segment(image, mirroring=False, step_size=1.0, lv=10, myo=20, scar=30, mvo_label=40, rv=50)
    np.testing.assert_array_equal(relabelled.array == 20, found)


def test_predict_raw(segmenter, diffusion):
    x = np.zeros((1, 1) + tuple(segmenter.info.patch_size), np.float32)
    assert segmenter.predict_logits(x).shape == (1, segmenter.info.num_classes) + x.shape[2:]
    m = diffusion.info.size_multiple * 2
    x = np.zeros((2, diffusion.info.channels, 1, m, m), np.float32)
    assert diffusion.predict_noise(x, [10, 20]).shape == x.shape


def test_cancel_by_return_value(diffusion, segmenter, phantom):
    image, labels = phantom
    calls = []

    def stop_after_two(done, total):
        calls.append(done)
        return len(calls) >= 2

    with pytest.raises(claim.ClaimError) as err:
        claim.synthesize(diffusion, image, labels, rv=RV, progress=stop_after_two, **QUICK)
    assert err.value.status == claim.Status.CANCELLED
    assert err.value.status_name == "CLAIM_ERR_CANCELLED"
    assert len(calls) == 2
    with pytest.raises(claim.ClaimError) as err:
        claim.segment(segmenter, image, progress=lambda d, t: True)
    assert err.value.status == claim.Status.CANCELLED


def test_exception_in_callback_propagates(segmenter, phantom):
    image, _ = phantom

    class Stop(Exception):
        pass

    def fail(done, total):
        raise Stop(done)

    with pytest.raises(Stop) as err:
        claim.segment(segmenter, image, progress=fail)
    assert err.value.args == (0,)


def test_keyboard_interrupt_in_callback_stays_keyboard_interrupt(diffusion, phantom):
    image, labels = phantom
    calls = []

    def interrupt(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        claim.synthesize(diffusion, image, labels, rv=RV, progress=interrupt, **QUICK)
    assert len(calls) == 3  # the call stopped at once


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_cancels_a_call_without_progress(segmenter, big_phantom):
    """A real SIGINT while the C code runs: Python's handler runs inside the
    internal callback, which cancels; KeyboardInterrupt comes out."""
    assert threading.current_thread() is threading.main_thread()
    # Python's own handler, as in an interactive session: a process started
    # in the background (CI scripts, nohup) inherits SIGINT ignored.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    image, _ = big_phantom
    sender = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    returned = False
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                sender.start()
                claim.segment(segmenter, image)  # mirroring, step 0.5: seconds of work
                returned = True
            finally:
                # A signal that came too late lands here, not in the next test.
                sender.join()
                time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert not returned, "the segmentation finished before the signal; make it longer"
    assert time.monotonic() - started < 2.5


def test_gil_is_released_during_calls(diffusion, phantom):
    """Another Python thread runs while the C code runs. The switch interval
    is raised so that the interpreter never forces a switch itself: the
    other thread can then only run where the GIL is released, i.e. around
    the foreign call."""
    image, labels = phantom
    go, seen_at = threading.Event(), []
    calls = []

    def other():
        go.wait()
        seen_at.append(len(calls))  # how many callbacks had run when this thread ran

    def progress(done, total):
        calls.append(done)
        if len(calls) == 1:
            go.set()
        # Stop once the other thread has run (plus a bound).
        return bool(seen_at) and len(calls) >= 3 or len(calls) >= 40

    worker = threading.Thread(target=other)
    old = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        worker.start()
        try:
            claim.synthesize(diffusion, image, labels, rv=RV, progress=progress, **QUICK)
        except claim.ClaimError as err:
            assert err.status == claim.Status.CANCELLED
    finally:
        sys.setswitchinterval(old)
        go.set()
        worker.join()
    assert seen_at, "the other thread never ran"
    assert seen_at[0] < len(calls), (
        f"the other thread only ran after the call ({seen_at[0]} of {len(calls)} callbacks): GIL held"
    )
