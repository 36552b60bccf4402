"""kjit's errors as Python exceptions: one class per kjit_status, carrying kjit's message."""

from __future__ import annotations


class KjitError(RuntimeError):
    """A failed kjit call; `status` is the C ABI's kjit_status."""

    status = 6  # KJIT_ERROR_INTERNAL


class InvalidArgumentError(KjitError, ValueError):
    """Bad dtype, shape, stride, alignment or pointer: the message names the argument."""

    status = 1


class NoDriverError(KjitError):
    """No CUDA driver or device."""

    status = 2


class DriverError(KjitError):
    """A CUDA driver call failed."""

    status = 3


class CompileError(KjitError):
    """NVRTC rejected a kernel (the message has the log and the source lines around it)."""

    status = 4


class MissingKernelError(KjitError):
    """KJIT_NO_JIT=1 and the kernel is not in the kernel store."""

    status = 5


class CommError(KjitError):
    """A collective failed or timed out, or its communicator was aborted (every later call fails
    too)."""

    status = 7


_BY_STATUS = {
    c.status: c for c in (InvalidArgumentError, NoDriverError, DriverError, CompileError, MissingKernelError, CommError)
}


def raise_for_status(status: int, message: str) -> None:
    raise _BY_STATUS.get(status, KjitError)(message)
