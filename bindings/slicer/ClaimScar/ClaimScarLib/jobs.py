"""Long claim calls off the GUI thread, with progress and cancel.

A `Job` runs `compute(progress)` on a worker thread. The claim call inside
it releases the GIL (ctypes does so on every foreign call), so Slicer's GUI
keeps running. `progress(done, total)` is what the job hands to claim's
`progress=` argument: it is called on the worker thread, puts the numbers
on a queue and returns the job's cancel flag, which makes claim stop within
one network evaluation and raise ClaimError CANCELLED.

The GUI thread calls `poll()` (from a QTimer in Slicer): it drains the
queue and, once the worker has ended, runs `publish(value)` on the polling
thread (Slicer nodes may only be touched on the GUI thread) and reports an
`Outcome`: "done" with the published result, "cancelled", or "error" with a
message. Nothing raised in compute or publish escapes poll().

Only the standard library is used here; claim is not imported (a
ClaimError is recognised by its `status` attribute).
"""

import queue
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

__all__ = ["CANCELLED_STATUS", "Job", "JobCancelled", "Outcome", "Update", "describe_error"]

# claim.Status.CANCELLED (claim.h: CLAIM_ERR_CANCELLED); numbers never change.
CANCELLED_STATUS = 7

DONE = "done"
CANCELLED = "cancelled"
ERROR = "error"


class JobCancelled(Exception):
    """Raised by compute code that notices the cancel flag itself."""


@dataclass
class Outcome:
    """How a job ended. status: "done", "cancelled" or "error". result: what
    publish returned ("done" only). message: one line for the user.
    details: a traceback for errors that were not ClaimErrors."""

    status: str
    result: Any = None
    message: str = ""
    details: str = ""
    seconds: float = 0.0

    @property
    def ok(self):
        return self.status == DONE


@dataclass
class Update:
    """What one poll() saw. progress: the latest (done, total) reported since
    the previous poll, or None. outcome: set once, by the poll that sees the
    job end."""

    progress: Optional[Tuple[int, int]] = None
    outcome: Optional[Outcome] = None

    @property
    def finished(self):
        return self.outcome is not None


def _is_cancelled_error(exc):
    return isinstance(exc, JobCancelled) or getattr(exc, "status", None) == CANCELLED_STATUS


def describe_error(exc):
    """One line for the user: claim's status name and message for a
    ClaimError, else the exception's type and text."""
    status_name = getattr(exc, "status_name", None)
    message = getattr(exc, "message", None)
    if status_name is not None and message is not None:
        return f"{status_name}: {message}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Job:
    """One long computation on a worker thread. See the module docstring.

    compute: callable(progress) -> value, run on the worker thread; it must
        not touch Slicer nodes. progress(done, total) returns True once
        cancel() was called.
    publish: None or callable(value) -> result, run by poll() on the polling
        (GUI) thread when compute succeeded.
    name: a label for messages ("Synthesis").
    """

    def __init__(self, compute: Callable, publish: Optional[Callable] = None, name: str = "job"):
        self.name = name
        self._compute = compute
        self._publish = publish
        self._cancel = threading.Event()
        self._events = queue.Queue()
        self._thread = None
        self._outcome = None
        self._started = None
        self.last_progress = None

    # --- worker side -------------------------------------------------------

    def _progress(self, done, total):
        self._events.put(("progress", int(done), int(total)))
        return self._cancel.is_set()

    def _run(self):
        try:
            value = self._compute(self._progress)
        except BaseException as exc:  # noqa: B036 - reported, never re-raised on this thread
            if self._cancel.is_set() or _is_cancelled_error(exc):
                self._events.put(("cancelled", None))
            else:
                self._events.put(("error", exc, traceback.format_exc()))
        else:
            self._events.put(("value", value))

    # --- caller side -------------------------------------------------------

    def start(self):
        """Starts the worker thread (once); returns self."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"ClaimScar {self.name}", daemon=True)
        self._thread.start()
        return self

    def cancel(self):
        """Asks the computation to stop: claim's next progress call returns
        True. Returns at once; poll() reports "cancelled" when it has."""
        self._cancel.set()

    @property
    def cancel_requested(self):
        return self._cancel.is_set()

    @property
    def running(self):
        """True from start() until poll() has reported the outcome."""
        return self._thread is not None and self._outcome is None

    @property
    def outcome(self):
        return self._outcome

    def wait(self, timeout=None):
        """Blocks until the worker thread has ended (publish has not run yet:
        call poll()). Returns False on timeout."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def poll(self):
        """Drains the queue; call on the GUI thread. Returns an Update."""
        update = Update()
        if self._outcome is not None:
            return update
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return update
            kind = event[0]
            if kind == "progress":
                update.progress = (event[1], event[2])
                self.last_progress = update.progress
                continue
            update.outcome = self._finish(event)
            self._outcome = update.outcome
            return update

    def _finish(self, event):
        seconds = time.monotonic() - self._started
        kind = event[0]
        if kind == "cancelled":
            return Outcome(CANCELLED, message=f"{self.name} cancelled", seconds=seconds)
        if kind == "error":
            exc, details = event[1], event[2]
            is_claim = getattr(exc, "status_name", None) is not None
            return Outcome(
                ERROR,
                message=f"{self.name} failed: {describe_error(exc)}",
                details="" if is_claim else details,
                seconds=seconds,
            )
        value = event[1]
        if self._publish is None:
            return Outcome(DONE, result=value, message=f"{self.name} done", seconds=seconds)
        try:
            result = self._publish(value)
        except Exception as exc:
            return Outcome(
                ERROR,
                message=f"{self.name}: could not store the result: {describe_error(exc)}",
                details=traceback.format_exc(),
                seconds=seconds,
            )
        return Outcome(DONE, result=result, message=f"{self.name} done", seconds=seconds)

    def run_to_end(self, on_progress=None, interval=0.05, timeout=None):
        """Starts the job if needed and polls it until it ends, as the GUI's
        timer does, on the calling thread; returns the Outcome.
        on_progress: None or callable(job, done, total) called on each poll
        that saw progress (it may call job.cancel()). timeout: seconds, after
        which the job is cancelled (the outcome is then "cancelled")."""
        if self._thread is None:
            self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            update = self.poll()
            if update.progress is not None and on_progress is not None:
                on_progress(self, *update.progress)
            if update.outcome is not None:
                return update.outcome
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                deadline = None
            time.sleep(interval)
