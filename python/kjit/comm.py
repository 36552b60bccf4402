"""kjit's communicator (kjit/comm.hpp, NCCL) for the collective ops (helix MLA decode), made from
a NCCL unique id that the caller's ranks share: from_torch_distributed() broadcasts rank 0's id
through a torch.distributed group."""

from __future__ import annotations

import contextlib
import ctypes
from typing import Union

import torch

from ._library import call, library
from .errors import InvalidArgumentError

__all__ = ["Communicator", "unique_id"]

UNIQUE_ID_BYTES = 128  # KJIT_COMM_UNIQUE_ID_BYTES


def unique_id() -> bytes:
    """A new NCCL unique id (rank 0 makes it; every rank passes the same bytes)."""
    buffer = ctypes.create_string_buffer(UNIQUE_ID_BYTES)
    call("kjit_comm_unique_id", buffer)
    return buffer.raw


def _device_index(device) -> int:
    """The CUDA ordinal of `device` (an int, "cuda:N", a torch.device), or -1 for the current one
    (None, -1, "cuda")."""
    if device is None or device == -1:
        return -1
    d = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    if d.type != "cuda":
        raise InvalidArgumentError(f"device must be a CUDA device, got {d}")
    return -1 if d.index is None else d.index


class Communicator:
    """This process's rank of a kjit communicator. Creating one is collective: it returns once
    all `size` ranks joined (or raises CommError after the timeout). close() (or the garbage
    collector) destroys it."""

    def __init__(
        self, id: bytes, rank: int, size: int, device: Union[int, str, torch.device, None] = None, timeout_s: float = 0
    ):
        id = bytes(id)
        if len(id) != UNIQUE_ID_BYTES:
            raise InvalidArgumentError(f"id must be {UNIQUE_ID_BYTES} bytes (a unique_id()), got {len(id)}")
        index = _device_index(device)
        timeout_ms = max(1, round(timeout_s * 1000)) if timeout_s > 0 else 0  # 0: KJIT_COMM_TIMEOUT_S
        handle = ctypes.c_void_p()
        # kjit makes the device current to create the communicator: torch's current device is kept.
        with torch.cuda.device(index) if index >= 0 and torch.cuda.is_available() else contextlib.nullcontext():
            call("kjit_comm_create", id, rank, size, index, timeout_ms, handle)
        self._handle, self.rank, self.size = handle.value, rank, size

    @classmethod
    def from_torch_distributed(cls, group=None, device=None, timeout_s: float = 0) -> "Communicator":
        """The communicator of `group`'s ranks (default: the world), this process's rank being
        its rank in the group: rank 0's unique id reaches the others through the group."""
        import torch.distributed as dist

        rank, size = dist.get_rank(group), dist.get_world_size(group)
        ids = [unique_id() if rank == 0 else None]
        source = 0 if group is None else dist.get_global_rank(group, 0)
        index = _device_index(device)
        # An NCCL group moves the id through a CUDA buffer of this rank's device; others through host memory.
        nccl = dist.get_backend(group) == dist.Backend.NCCL
        staging = torch.device("cuda", index if index >= 0 else torch.cuda.current_device()) if nccl else None
        dist.broadcast_object_list(ids, src=source, group=group, device=staging)
        return cls(ids[0], rank, size, device, timeout_s)

    @property
    def handle(self) -> int:
        """The kjit_comm* the C ABI takes."""
        if self._handle is None:
            raise InvalidArgumentError("the communicator is closed")
        return self._handle

    def close(self) -> None:
        if getattr(self, "_handle", None) is not None:
            library().kjit_comm_destroy(self._handle)
            self._handle = None

    def __del__(self):
        self.close()

    def __repr__(self):
        state = "closed" if self._handle is None else "open"
        return f"kjit.comm.Communicator(rank {self.rank} of {self.size}, {state})"
