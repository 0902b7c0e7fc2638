"""The worker thread, progress queue and cancel flag (no claim needed)."""

import threading
import time

from ClaimScarLib.jobs import CANCELLED_STATUS, Job, JobCancelled, describe_error


class FakeClaimError(Exception):
    def __init__(self, status, message, status_name):
        super().__init__(f"[{status_name}] {message}")
        self.status, self.message, self.status_name = status, message, status_name


def _counting(total, delay=0.0, cancel_status=CANCELLED_STATUS):
    """A compute that reports `total` steps and stops like claim on cancel."""

    def compute(progress):
        for done in range(total + 1):
            if progress(done, total):
                raise FakeClaimError(cancel_status, "cancelled by the progress callback", "CLAIM_ERR_CANCELLED")
            time.sleep(delay)
        return "value"

    return compute


def test_progress_and_publish_on_polling_thread():
    threads = {}

    def publish(value):
        threads["publish"] = threading.current_thread()
        return value.upper()

    seen = []
    outcome = Job(_counting(20, 0.002), publish, "Test").run_to_end(lambda job, d, t: seen.append((d, t)), 0.005)
    assert outcome.status == "done" and outcome.ok
    assert outcome.result == "VALUE" and outcome.message == "Test done"
    assert threads["publish"] is threading.current_thread()
    assert seen and seen[-1] == (20, 20)
    assert all(t == 20 for _, t in seen) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_poll_after_finish_is_quiet():
    job = Job(lambda progress: 5, name="x").start()
    assert job.wait(5)
    first = job.poll()
    assert first.finished and first.outcome.result == 5
    assert not job.poll().finished
    assert job.outcome is first.outcome and not job.running


def test_cancel_from_progress_handler():
    def on_progress(job, done, total):
        if done >= 3:
            job.cancel()

    job = Job(_counting(10_000, 0.001), name="Long")
    outcome = job.run_to_end(on_progress, 0.005)
    assert outcome.status == "cancelled" and outcome.message == "Long cancelled"
    assert job.last_progress[0] < 10_000
    assert job.wait(1)


def test_cancel_before_first_progress():
    gate = threading.Event()

    def compute(progress):
        gate.wait(5)
        if progress(0, 1):
            raise JobCancelled()
        return 1

    job = Job(compute, name="Gated").start()
    job.cancel()
    gate.set()
    assert job.run_to_end(interval=0.005).status == "cancelled"


def test_timeout_cancels():
    outcome = Job(_counting(100_000, 0.001), name="Slow").run_to_end(interval=0.005, timeout=0.05)
    assert outcome.status == "cancelled"


def test_errors_become_messages():
    def claim_failure(progress):
        raise FakeClaimError(2, "claim_segmenter_load: I/O error: /x: No such file", "CLAIM_ERR_IO")

    outcome = Job(claim_failure, name="Segmentation").run_to_end(interval=0.005)
    assert outcome.status == "error"
    assert outcome.message == "Segmentation failed: CLAIM_ERR_IO: claim_segmenter_load: I/O error: /x: No such file"
    assert outcome.details == ""

    def bug(progress):
        raise ZeroDivisionError("division by zero")

    outcome = Job(bug, name="Bug").run_to_end(interval=0.005)
    assert outcome.status == "error" and "ZeroDivisionError: division by zero" in outcome.message
    assert "Traceback" in outcome.details

    def bad_publish(value):
        raise RuntimeError("scene closed")

    outcome = Job(lambda p: 1, bad_publish, "Store").run_to_end(interval=0.005)
    assert outcome.status == "error" and "could not store the result: RuntimeError: scene closed" in outcome.message


def test_describe_error():
    assert describe_error(FakeClaimError(1, "bad", "CLAIM_ERR_INVALID_ARGUMENT")) == "CLAIM_ERR_INVALID_ARGUMENT: bad"
    assert describe_error(ValueError("x")) == "ValueError: x"
    assert describe_error(KeyError()) == "KeyError"


def test_gui_thread_keeps_running():
    """While the worker runs, the polling thread is free (many polls happen)."""
    polls = []
    job = Job(_counting(50, 0.004), name="Busy").start()
    while not job.poll().finished:
        polls.append(time.monotonic())
        time.sleep(0.002)
    assert len(polls) > 10
