"""Shared pieces of the Python tests: tensors that describe CUDA memory without a GPU (so that
kjit's validation runs on the CPU machine), and the skip of the GPU tests where there is none."""

import pytest
import torch


class FakeCuda:
    """Describes a tensor in CUDA memory (a fake device pointer, compact strides) to the binding:
    every call with one is refused by kjit's validation before any device work, as the C++ C ABI
    tests do."""

    def __init__(self, dtype, *shape):
        self._meta = torch.empty(shape, dtype=dtype, device="meta")
        self.dtype, self.shape = dtype, self._meta.shape
        self.device = torch.device("cuda", 0)
        self.is_cuda = True

    def get_device(self):
        return 0

    def dim(self):
        return self._meta.dim()

    def stride(self):
        return self._meta.stride()

    def data_ptr(self):
        return 0x200000


@pytest.fixture
def fake_cuda():
    return FakeCuda


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"no CUDA device (torch {torch.__version__}, cuda available: False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (an H100/H200: sm_90a)")
