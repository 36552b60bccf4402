"""What every op's implementation shares: the kjit call on the tensors' device and torch's current
stream there, and the host copies some ops validate on the host."""

from __future__ import annotations

import torch

from ._library import call
from .errors import InvalidArgumentError


def launch(name: str, anchor: torch.Tensor, *args) -> None:
    """Calls entry point `name` with `args` and the current stream of `anchor`'s device (a CPU
    tensor passes no stream: kjit refuses it by its device first, with kjit's message)."""
    if not anchor.is_cuda:
        call(name, *args, None)
        return
    index = anchor.device.index
    if index is None or index == torch.cuda.current_device():
        call(name, *args, torch.cuda.current_stream().cuda_stream)
        return
    with torch.cuda.device(index):  # kjit launches in the current context
        call(name, *args, torch.cuda.current_stream().cuda_stream)


def host_copy(host: torch.Tensor, device_copy: torch.Tensor, what: str) -> int:
    """The address of `host`, the host copy of int32 `device_copy` that kjit validates on the host
    (so that no call synchronises with the device). kjit reads as many entries as the device
    copy has, so they must agree here."""
    if host.device.type != "cpu" or host.dtype != torch.int32 or not host.is_contiguous():
        raise InvalidArgumentError(
            f"{what} must be a contiguous int32 tensor on the host, got {host.dtype} on {host.device}"
        )
    if host.shape != device_copy.shape:
        raise InvalidArgumentError(
            f"{what} must have the device copy's shape {list(device_copy.shape)}, got {list(host.shape)}"
        )
    return host.data_ptr()


def host_or_copy(host, device_copy: torch.Tensor) -> torch.Tensor:
    """`host`, or where it is None the host copy of `device_copy` (one synchronisation: callers
    pass their own to avoid it)."""
    return device_copy.to("cpu", torch.int32).contiguous() if host is None else host
