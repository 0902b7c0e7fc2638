"""Progress callbacks with cancellation, and exception (Ctrl-C) propagation."""

import signal
import threading

from . import _ffi


class Progress:
    """Owns the C callback of one long call.

    `progress` is None or a callable(done, total) that may return True to
    cancel. The C callback is installed even without one, so that Ctrl-C
    cancels the call: see `run`. An exception the callable raises
    (KeyboardInterrupt included) is stored, the callback returns non-zero
    (cancel), and `finish` re-raises it once the C call has returned.
    """

    __slots__ = ("_user", "exception", "cancelled", "c_callback")

    def __init__(self, progress):
        if progress is not None and not callable(progress):
            raise TypeError(f"progress: expected a callable(done, total) or None, got {progress!r}")
        self._user = progress
        self.exception = None
        self.cancelled = False
        # Kept alive as long as this object, i.e. for the whole C call.
        self.c_callback = _ffi.claim_progress_fn(self._call)

    def _call(self, _user_data, done, total):
        try:
            if self.exception is not None or self.cancelled:
                return 1
            if self._user is not None and self._user(done, total):
                self.cancelled = True
                return 1
            return 0
        except BaseException as exc:  # noqa: B036 - KeyboardInterrupt included on purpose
            self.exception = exc
            return 1

    def store(self, exc):
        if self.exception is None:
            self.exception = exc

    def finish(self, status):
        """Raises what the call ended with: the stored exception first (even
        when the library had already finished), else ClaimError for any
        status other than OK."""
        exc = self.exception
        if exc is not None:
            self.exception = None
            raise exc
        _ffi.check(status)


class _SignalGuard:
    """While a long call runs on the main thread, SIGINT's Python handler is
    wrapped so that whatever it raises (KeyboardInterrupt for Python's
    default handler) is stored in the call's Progress instead of escaping.

    Python runs signal handlers between bytecodes of the main thread; during
    a foreign call that is inside our ctypes callback, and the first check
    comes at the callback's very entry, before any `try` of ours, where
    ctypes would print and drop the exception. The wrapper turns it into
    "cancel, then re-raise after the call". Handlers that are not Python
    callables (SIG_IGN, SIG_DFL) are left alone, and so is every other
    thread (only the main thread may set handlers, and only it receives
    Python's KeyboardInterrupt).
    """

    __slots__ = ("_state", "_previous")

    def __init__(self, state):
        self._state = state
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            previous = signal.getsignal(signal.SIGINT)
        except (ValueError, AttributeError):  # not the main interpreter, no SIGINT
            return self
        if not callable(previous):
            return self
        state = self._state

        def on_sigint(signum, frame):
            try:
                previous(signum, frame)
            except BaseException as exc:  # noqa: B036
                state.store(exc)

        try:
            signal.signal(signal.SIGINT, on_sigint)
        except ValueError:
            return self
        self._previous = previous
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            # A SIGINT still pending runs on_sigint at the latest here, once
            # the handler is restored it would raise directly; both are fine.
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def run(call, progress):
    """Runs `call(c_callback)` (a claim_* function given the callback and NULL
    user data) and raises whatever it ended with."""
    state = Progress(progress)
    with _SignalGuard(state):
        status = call(state.c_callback)
    state.finish(status)
    return status


__all__ = ["Progress", "run"]
