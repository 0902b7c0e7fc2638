"""ClaimError and the status codes."""

import enum

__all__ = ["ClaimError", "Status"]


class Status(enum.IntEnum):
    """The `claim_status` codes of claim.h (numbers never change)."""

    OK = 0
    INVALID_ARGUMENT = 1
    IO = 2
    FORMAT = 3
    MODEL = 4
    DEVICE = 5
    OUT_OF_MEMORY = 6
    CANCELLED = 7
    UNSUPPORTED = 8
    INTERNAL = 9


# Used for failures found by this package before any C call (library not
# found, incompatible ABI); not a claim.h code.
BINDING_STATUS = -1


class ClaimError(Exception):
    """A claim call returned a status other than CLAIM_OK.

    Attributes:
        status: the `claim_status` code (an int; compare with `Status.IO`
            etc.); -1 when this package itself could not load a usable
            library.
        status_name: the code's name from `claim_status_str`, e.g.
            ``"CLAIM_ERR_IO"`` ("CLAIM_BINDING" for -1).
        message: `claim_last_error_message()` of the failed call: names the
            function and the offending argument, expected vs found.
    """

    def __init__(self, status, message, status_name=None):
        self.status = int(status)
        if status_name is None:
            try:
                status_name = "CLAIM_" + Status(self.status).name
                if self.status != Status.OK:
                    status_name = "CLAIM_ERR_" + Status(self.status).name
            except ValueError:
                status_name = "CLAIM_BINDING" if self.status == BINDING_STATUS else "CLAIM_ERR_UNKNOWN"
        self.status_name = status_name
        self.message = message
        super().__init__(f"[{status_name}] {message}" if message else status_name)

    def __reduce__(self):
        return (type(self), (self.status, self.message, self.status_name))
