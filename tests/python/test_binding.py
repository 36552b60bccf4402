"""The binding on the CPU machine: the library loads without a GPU, kjit's refusals arrive as
Python exceptions carrying kjit's message (through the C ABI and through the torch ops), and the
Python-side checks (host copies, FlashAttention's unsupported arguments) refuse by name."""

import ctypes
import os
import shutil
import struct
import subprocess
import sys

import pytest
import torch

import kjit
from kjit import _native
from kjit._dlpack import DLArgs
from kjit._launch import _QUERIES, host_copy, launch
from kjit._library import AttentionGroup, RouterOptions, call

bf16, f32, i32, u8 = torch.bfloat16, torch.float32, torch.int32, torch.uint8
dl = None  # each test's described DLTensors: one DLArgs for all its calls


@pytest.fixture(autouse=True)
def fresh_dl_args():
    global dl
    dl = DLArgs()


def refused(says, name, *args):
    with pytest.raises(kjit.InvalidArgumentError) as error:
        call(name, *args)
    assert says in str(error.value), str(error.value)
    assert isinstance(error.value, ValueError)


def test_import_needs_no_library_until_the_first_call():
    code = "import kjit\ntry:\n    kjit.library_path()\nexcept ImportError as e:\n    print('refused:', e)"
    env = dict(os.environ, KJIT_LIBRARY="/nonexistent/libkjit.so")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "refused: kjit: libkjit.so not found" in run.stdout
    assert "/nonexistent/libkjit.so (absent)" in run.stdout


def test_a_package_without_its_c_extension_says_how_to_build_it(tmp_path):
    package = os.path.dirname(kjit.__file__)
    shutil.copytree(package, tmp_path / "kjit", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    run = subprocess.run(
        [sys.executable, "-c", "import kjit"],
        env=dict(os.environ, PYTHONPATH=str(tmp_path)),
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "kjit._native is not built; install the package with `pip install" in run.stderr


def test_library_loads_without_a_driver():
    assert kjit.library_path().name.startswith("libkjit.so")


def test_attention_refusals_through_the_c_abi(fake_cuda):
    q, k = fake_cuda(bf16, 2, 128, 8, 80), fake_cuda(bf16, 2, 128, 2, 80)
    out, lse = fake_cuda(bf16, 2, 128, 8, 80), fake_cuda(f32, 2, 8, 128)
    refused(
        "head dim",
        "kjit_attention_forward",
        dl(q, "q"),
        dl(k, "k"),
        dl(k, "v"),
        dl(out, "out"),
        dl(lse, "lse"),
        0.0,
        1,
        None,
    )
    refused("q is NULL", "kjit_attention_forward", None, dl(k, "k"), dl(k, "v"), dl(out, "out"), None, 0.0, 0, None)
    q = fake_cuda(bf16, 2, 128, 8, 64)
    bad_lse = fake_cuda(f32, 2, 128, 8)
    refused(
        "lse",
        "kjit_attention_forward",
        dl(q, "q"),
        dl(q, "k"),
        dl(q, "v"),
        dl(q, "out"),
        dl(bad_lse, "lse"),
        0.0,
        0,
        None,
    )


def test_varlen_host_copies_are_validated_by_kjit(fake_cuda):
    q, cu = fake_cuda(bf16, 100, 8, 64), fake_cuda(i32, 3)
    lse = fake_cuda(f32, 8, 100)
    host = torch.tensor([0, 60, 90], dtype=i32)  # ends at 90, not the 100 tokens
    refused(
        "100",
        "kjit_attention_forward_varlen",
        dl(q, "q"),
        dl(q, "k"),
        dl(q, "v"),
        dl(q, "out"),
        dl(lse, "lse"),
        dl(cu, "cu_seqlens_q"),
        dl(cu, "cu_seqlens_k"),
        host.data_ptr(),
        host.data_ptr(),
        0.0,
        1,
        None,
    )


def test_grouped_refusal_names_the_group(fake_cuda):
    k, cu_k = fake_cuda(bf16, 64, 2, 128), fake_cuda(i32, 2)
    q, cu_q, windows = fake_cuda(bf16, 32, 8, 128), fake_cuda(i32, 2), fake_cuda(i32, 1, 2)
    host_cu_k, host_cu_q = torch.tensor([0, 64], dtype=i32), torch.tensor([0, 32], dtype=i32)
    host_windows = torch.tensor([0, 65], dtype=i32)  # past the sequence's 64 keys
    lse = fake_cuda(f32, 8, 32)
    group = AttentionGroup(
        dl(q, "q"),
        dl(q, "out"),
        dl(lse, "lse"),
        dl(cu_q, "cu"),
        host_cu_q.data_ptr(),
        dl(windows, "w"),
        host_windows.data_ptr(),
        None,
        None,
    )
    with pytest.raises(kjit.InvalidArgumentError) as error:
        call(
            "kjit_attention_forward_grouped",
            group,
            1,
            dl(k, "k"),
            dl(k, "v"),
            dl(cu_k, "cu_k"),
            host_cu_k.data_ptr(),
            0.0,
            1,
            None,
        )
    assert "group 0" in str(error.value), str(error.value)


def test_merge_and_mla_refusals(fake_cuda):
    parts, lse = fake_cuda(bf16, 3, 10, 4, 128), fake_cuda(f32, 3, 10, 5)
    refused(
        "parts_lse",
        "kjit_merge_states",
        dl(parts, "parts"),
        dl(lse, "parts_lse"),
        dl(fake_cuda(bf16, 10, 4, 128), "out"),
        None,
        None,
    )
    q, cache = fake_cuda(bf16, 2, 1, 20, 512), fake_cuda(bf16, 4, 64, 576)
    table, lengths = fake_cuda(i32, 2, 2), fake_cuda(i32, 2)
    host_table, host_lengths = torch.tensor([[0, 1], [2, 3]], dtype=i32), torch.tensor([100, 10], dtype=i32)
    refused(
        "576",
        "kjit_mla_decode",
        dl(q, "q"),
        dl(cache, "cache"),
        dl(table, "block_table"),
        host_table.data_ptr(),
        dl(lengths, "lengths"),
        host_lengths.data_ptr(),
        dl(fake_cuda(bf16, 2, 1, 20, 512), "out"),
        None,
        0.0,
        None,
    )


def test_moe_refusals_through_the_c_abi(fake_cuda):
    logits, ids, weights = fake_cuda(f32, 10, 64), fake_cuda(i32, 10, 4), fake_cuda(f32, 10, 4)
    options = RouterOptions(1, 65, 1, 1, 1, 1.8)
    refused(
        "top_k must be 1 to min(32, E = 64)",
        "kjit_moe_router_topk",
        dl(logits, "logits"),
        None,
        dl(ids, "ids"),
        dl(weights, "weights"),
        options,
        None,
    )
    rows = call("kjit_moe_align_capacity", 40, 64, 64)
    sorted_, blocks = fake_cuda(i32, rows), fake_cuda(i32, rows // 64)
    counts, offsets, invalid = fake_cuda(i32, 64), fake_cuda(i32, 65), fake_cuda(i32, 1)
    refused(
        "block must be 1 to 1024 rows",
        "kjit_moe_align",
        dl(ids, "ids"),
        64,
        2000,
        dl(sorted_, "sorted"),
        dl(blocks, "block_expert"),
        dl(counts, "counts"),
        dl(offsets, "offsets"),
        dl(invalid, "invalid"),
        None,
    )
    x, x_sorted, positions = fake_cuda(bf16, 10, 20), fake_cuda(bf16, rows, 20), fake_cuda(i32, 40)
    refused(
        "multiple of 8",
        "kjit_moe_permute",
        dl(x, "x"),
        dl(sorted_, "sorted"),
        4,
        dl(x_sorted, "x_sorted"),
        dl(positions, "positions"),
        None,
    )
    xs, gemm_blocks = fake_cuda(bf16, 1024, 2048), fake_cuda(i32, 8)
    w, y = fake_cuda(bf16, 64, 3072, 2048), fake_cuda(bf16, 1024, 3072)
    refused(
        "N / 2 after SwiGLU",
        "kjit_moe_grouped_gemm",
        dl(xs, "x_sorted"),
        dl(gemm_blocks, "block_expert"),
        128,
        dl(w, "w"),
        dl(y, "y"),
        1,
        None,
        None,
        None,
    )
    codes, scales = fake_cuda(u8, 64, 3072, 1024), fake_cuda(u8, 64, 3072, 128)
    refused(
        "format must be 0 (NVFP4) or 1 (MXFP4), got 2",
        "kjit_moe_expert_gemm_fp4",
        dl(xs, "x_sorted"),
        dl(gemm_blocks, "block_expert"),
        128,
        2,
        dl(codes, "codes"),
        dl(scales, "scales"),
        None,
        dl(y, "y"),
        0,
        None,
        None,
        None,
    )


def test_a_wrongly_typed_scalar_is_an_invalid_argument(fake_cuda):
    logits = fake_cuda(f32, 10, 64)
    with pytest.raises(kjit.InvalidArgumentError, match="kjit_moe_align: argument 2"):
        call("kjit_moe_align", dl(logits, "ids"), "64", 64, None, None, None, None, None, None)


def test_align_capacity_in_python_matches_the_library():
    for pairs in (0, 1, 7, 40, 64, 65, 1000, 4096 * 8, 16384 * 8 + 3):
        for experts in (1, 8, 64, 256):
            for block in (1, 16, 64, 128):
                assert int(kjit.moe.align_capacity(pairs, experts, block)) == call(
                    "kjit_moe_align_capacity", pairs, experts, block
                )


def test_outputs_given_are_refused_as_the_allocated_ones_and_never_with_autograd():
    q = torch.randn(1, 16, 4, 64, dtype=bf16)
    with pytest.raises(kjit.InvalidArgumentError, match="q is not in CUDA device memory"):
        kjit.attention.forward(q, q, q, out=torch.empty_like(q))
    with pytest.raises(kjit.InvalidArgumentError, match="lse= needs out= too"):
        kjit.attention.forward(q, q, q, lse=torch.empty(1, 4, 16))
    with torch.enable_grad(), pytest.raises(kjit.InvalidArgumentError, match="record no autograd"):
        kjit.attention.forward(q.clone().requires_grad_(), q, q, out=torch.empty_like(q))
    parts = torch.randn(2, 16, 4, 64)
    with pytest.raises(kjit.InvalidArgumentError, match="out_lse= needs out= too"):
        kjit.attention.merge_states(parts, parts[..., 0], out_lse=parts[0, ..., 0])
    logits = torch.randn(8, 16)
    with pytest.raises(kjit.InvalidArgumentError):
        kjit.moe.router_topk(logits, kjit.moe.GLM_4_7_FLASH, out=(torch.empty(8, 4, dtype=i32), torch.empty(8, 4)))


def test_torch_ops_refuse_host_tensors_with_kjits_message():
    # kjit names the caller's tensor, not an output the op allocated like it.
    q = torch.randn(2, 16, 4, 64, dtype=bf16)
    with pytest.raises(kjit.InvalidArgumentError, match="^q is not in CUDA device memory"):
        kjit.attention.forward(q, q, q)
    logits = torch.randn(10, 64)
    with pytest.raises(kjit.InvalidArgumentError, match="^logits is not in CUDA device memory"):
        kjit.moe.router_topk(logits, kjit.moe.GLM_4_7_FLASH)
    with pytest.raises(kjit.InvalidArgumentError, match="^w is not in CUDA device memory"):
        kjit.moe.quantize_fp4(torch.randn(64, 128, dtype=bf16))
    with pytest.raises(kjit.InvalidArgumentError, match="^parts is not in CUDA device memory"):
        kjit.attention.merge_states(torch.randn(2, 3, 4, 64), torch.randn(2, 3, 4))


def test_python_side_refusals_name_the_argument():
    q = torch.randn(8, 2, 64, dtype=bf16)
    cu = torch.tensor([0, 8], dtype=i32)
    with pytest.raises(kjit.InvalidArgumentError, match=r"host_cu_seqlens_q must have the device copy's shape \[2\]"):
        kjit.attention.forward_varlen(q, q, q, cu, cu, host_cu_seqlens_q=torch.tensor([0, 4, 8], dtype=i32))
    with pytest.raises(kjit.InvalidArgumentError, match="host_cu_seqlens_k must be a contiguous int32 tensor"):
        kjit.attention.forward_varlen(q, q, q, cu, cu, host_cu_seqlens_k=torch.tensor([0, 8]))
    with pytest.raises(kjit.InvalidArgumentError, match="dropout_p: kjit's attention has no dropout"):
        kjit.flash_attn_func(q[None], q[None], q[None], dropout_p=0.1)
    with pytest.raises(kjit.InvalidArgumentError, match="window_size"):
        kjit.flash_attn_varlen_func(q, q, q, cu, cu, 8, 8, window_size=(64, 0))
    with pytest.raises(
        kjit.InvalidArgumentError, match=r"epilogue must be one of \['plain', 'routing_weights', 'swiglu'\]"
    ):
        kjit.moe.grouped_gemm(q[0], cu, 64, q, epilogue="gelu")
    with pytest.raises(
        kjit.InvalidArgumentError, match="x has dtype torch.complex64 and 1 dims, which kjit does not take"
    ):
        dl(torch.zeros(2, dtype=torch.complex64), "x")


def _layouts():
    """Tensors whose DLTensors the binding must get right: views with strides, empty, bool and
    0-dim ones."""
    base = torch.randn(4, 6, 8)
    return (
        base,
        base[1:3, ::2].transpose(0, 2),
        torch.zeros(0, 5, dtype=bf16),
        torch.ones(3, dtype=torch.bool),
        torch.arange(7, dtype=i32)[None, :, None],
        torch.tensor(2.5, dtype=torch.float16),
    )


def _dltensor_fields(address):
    """A DLTensor's fields at `address`: data, device type and id, dims, dtype code, bits and
    lanes, shape, strides (elements) and byte offset."""
    data, device, index, dims, code, bits, lanes, shape, strides, offset = struct.unpack(
        "=QiiiBBHQQQ", ctypes.string_at(address, 48)
    )
    sizes = struct.unpack(f"{dims}q", ctypes.string_at(shape, 8 * dims)) if dims else ()
    steps = struct.unpack(f"{dims}q", ctypes.string_at(strides, 8 * dims)) if dims else ()
    return data, device, index, dims, code, bits, lanes, sizes, steps, offset


def _as_called(*args, header_only=False):
    """The DLTensor a C function receives for each of `args` through kjit._native (libc's memcpy as
    the function: it copies the 48 bytes it is given into a buffer), read while the args live."""
    memcpy = ctypes.cast(ctypes.CDLL(None).memcpy, ctypes.c_void_p).value
    entry = _native.entry(memcpy, "l", "ptz", "memcpy")
    seen = []
    for arg in args:
        copy = ctypes.create_string_buffer(48)
        _native.call(entry, copy, arg, 48)
        seen.append(struct.unpack("=QiiiBBH", copy[:24]) if header_only else _dltensor_fields(ctypes.addressof(copy)))
    return seen


def test_the_exchange_tables_dltensor_is_the_hand_description(fake_cuda):
    """kjit._native has torch fill a tensor argument's DLTensor (its exchange table): the same
    fields as the DLArgs description, for views, empty, bool and 0-dim tensors and a Parameter; a
    meta tensor (no storage: the table refuses it) and a stand-in are described by hand."""
    cases = (*_layouts(), torch.nn.Parameter(torch.randn(3, 2)))
    for t, seen in zip(cases, _as_called(*cases)):
        data, device, index, dims, code, bits, lanes, sizes, steps, offset = seen
        assert seen == _dltensor_fields(DLArgs()(t.detach(), "t")), (t.shape, t.stride())
        assert data + offset == t.data_ptr() and sizes == tuple(t.shape) and steps == t.stride()
    # Described by hand for the call only (its shape is gone after it): the header.
    meta, stand_in = _as_called(torch.empty(2, 3, device="meta"), fake_cuda(bf16, 2, 3), header_only=True)
    assert meta[1:4] == (0, 0, 2) and stand_in[:7] == (0x200000, 2, 0, 2, 4, 16, 1)


def test_native_calls_refuse_bad_arguments_by_entry_and_position():
    with pytest.raises(kjit.InvalidArgumentError, match="kjit_moe_align_capacity takes 3 arguments, got 2"):
        call("kjit_moe_align_capacity", 40, 64)
    with pytest.raises(kjit.InvalidArgumentError, match="kjit_moe_align_capacity: argument 2 is out of range"):
        call("kjit_moe_align_capacity", 40, 2**31, 64)
    with pytest.raises(kjit.InvalidArgumentError, match="kjit_merge_states: argument 5 must be an address"):
        call("kjit_merge_states", None, None, None, None, 1.5)
    with pytest.raises(kjit.InvalidArgumentError, match="kjit_attention_forward: argument 6 must be a float"):
        call("kjit_attention_forward", None, None, None, None, None, "0.1", 1, None)


def test_a_host_copy_is_checked_in_c_and_named_by_the_caller(fake_cuda):
    """kjit._native.host_copy: the address of a contiguous int32 host tensor of the device copy's
    shape (a view's too), against a torch tensor or a stand-in; else InvalidArgumentError naming
    the argument with what it got."""
    base = torch.arange(12, dtype=i32)
    view = base[4:8]
    assert host_copy(view, torch.zeros(4, dtype=i32), "cu") == view.data_ptr() == base.data_ptr() + 16
    assert host_copy(base.view(3, 4), fake_cuda(i32, 3, 4), "cu") == base.data_ptr()
    assert isinstance(host_copy(base[:0], torch.zeros(0, dtype=i32), "cu"), int)  # empty: any address
    refusals = (
        (
            torch.zeros(4, dtype=torch.int64),
            r"cu must be a contiguous int32 tensor on the host, got torch.int64 on cpu",
        ),
        (base[::3], "cu must be a contiguous int32 tensor on the host, got torch.int32 on cpu"),
        (torch.zeros(4, dtype=i32, device="meta"), "got torch.int32 on meta"),
        ([0, 1, 2, 3], "cu must be a contiguous int32 tensor on the host, got list"),
        (fake_cuda(i32, 4), "got FakeCuda"),
        (base[:5], r"cu must have the device copy's shape \[4\], got \[5\]"),
        (base.view(2, 6)[:, :2].contiguous(), r"cu must have the device copy's shape \[4\], got \[2, 2\]"),
    )
    for host, message in refusals:
        for device_copy in (torch.zeros(4, dtype=i32), fake_cuda(i32, 4)):
            with pytest.raises(kjit.InvalidArgumentError, match=message):
                host_copy(host, device_copy, "cu")


def test_launch_adds_the_stream_and_raises_kjits_error(fake_cuda):
    """kjit._native.launch: the entry point's arguments but its stream, which a tensor off CUDA
    (or a stand-in) leaves NULL, so kjit refuses it by its device with kjit's message; a call
    with the stream's argument too is refused by count."""
    parts, lse = torch.randn(2, 3, 4, 64, dtype=bf16), torch.randn(2, 3, 4)
    out, out_lse = parts[0].clone(), lse[0].clone()
    with pytest.raises(kjit.InvalidArgumentError, match="^parts is not in CUDA device memory"):
        launch("kjit_merge_states", parts, parts, lse, out, out_lse)
    stand_in = fake_cuda(bf16, 2, 3, 4, 64)
    with pytest.raises(kjit.InvalidArgumentError, match="parts_lse"):
        launch("kjit_merge_states", stand_in, dl(stand_in, "parts"), None, None, None)
    with pytest.raises(kjit.InvalidArgumentError, match="kjit_merge_states takes 4 arguments, got 5"):
        launch("kjit_merge_states", parts, parts, lse, out, out_lse, None)
    with pytest.raises(KeyError, match="kjit has no entry 'kjit_nothing'"):
        call("kjit_nothing")


def test_the_direct_path_needs_cuda_tensors_and_no_gradient():
    t = torch.randn(2, 3)
    assert _native.direct(_QUERIES, torch.is_grad_enabled, (t, [t, t], 1.0, None)) is False  # host tensors
    assert _native.direct((), torch.is_grad_enabled, (t,)) is False
    with torch.enable_grad():
        grad = torch.randn(2, requires_grad=True)
        assert _native.direct((), torch.is_grad_enabled, (grad,)) is False
    assert _native.direct((lambda: True,), torch.is_grad_enabled, (t,)) is False  # a mode is on
    with pytest.raises(ZeroDivisionError):
        _native.direct((lambda: 1 / 0,), torch.is_grad_enabled, (t,))
    # run(): an op's eager path says NotImplemented where the call must dispatch, before any call.
    never = lambda *_: pytest.fail("called")  # noqa: E731
    assert _native.run(_QUERIES, torch.is_grad_enabled, never, never, (0,), (t,)) is NotImplemented
    with pytest.raises(ZeroDivisionError):
        _native.run((lambda: 1 / 0,), torch.is_grad_enabled, never, never, (), (t,))


def test_torchs_export_and_the_hand_description_are_the_same_dltensor(fake_cuda):
    """A torch tensor goes through torch's DLPack export, anything else (a meta tensor, the tests'
    stand-ins) is described by hand: both must give kjit the same DLTensor (the pointer, device,
    dims, dtype, shape and strides, in elements)."""

    class StandIn:  # what the hand path reads of a tensor, nothing else
        def __init__(self, t):
            self.t, self.dtype, self.shape, self.is_cuda, self.device = t, t.dtype, t.shape, t.is_cuda, t.device

        def dim(self):
            return self.t.dim()

        def get_device(self):
            return self.t.get_device()

        def data_ptr(self):
            return self.t.data_ptr()

        def stride(self):
            return self.t.stride()

    for t in _layouts():
        args = DLArgs()
        exported, described = _dltensor_fields(args(t, "t")), _dltensor_fields(args(StandIn(t), "t"))
        assert exported == described, (t.shape, t.stride(), exported, described)
        assert exported[0] == t.data_ptr() and exported[7] == tuple(t.shape) and exported[8] == t.stride()
    # A meta tensor has no storage to export: described by hand, with the device type kjit refuses.
    meta, args = torch.empty(2, 3, device="meta"), DLArgs()  # its descriptions live as long as it
    assert _dltensor_fields(args(meta, "m"))[1] == 0


def test_interleave_gate_up_is_the_documented_layout():
    experts, inter, hidden = 3, 4, 8
    gate, up = torch.randn(experts, inter, hidden), torch.randn(experts, inter, hidden)
    gate_up = kjit.moe.interleave_gate_up(torch.cat([gate, up], dim=1))
    assert torch.equal(gate_up[:, 0::2], gate) and torch.equal(gate_up[:, 1::2], up)


def test_python_m_kjit_forwards_to_the_cli():
    run = subprocess.run([sys.executable, "-m", "kjit", "--help"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for command in ("info", "tune", "cache"):
        assert command in run.stdout
    run = subprocess.run([sys.executable, "-m", "kjit", "cache", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "prune" in run.stdout, run.stdout + run.stderr


def test_communicator_refusals_and_the_torch_distributed_bootstrap():
    with pytest.raises(kjit.InvalidArgumentError, match=r"rank 3 is outside 0..1"):
        kjit.comm.Communicator(bytes(128), 3, 2)
    with pytest.raises(kjit.InvalidArgumentError, match="id must be 128 bytes"):
        kjit.comm.Communicator(b"short", 0, 1)
    with pytest.raises(kjit.InvalidArgumentError, match="device must be a CUDA device, got cpu"):
        kjit.comm.Communicator(bytes(128), 0, 1, device="cpu")
    # A collective stays in a compiled graph even where its outputs go unused (one rank skipping
    # it would hang the others).
    assert torch.ops.kjit.mla_helix_decode.default in torch.fx.node._side_effectful_functions
    assert kjit.mla.helix_heads(20, 3, 2) == (13, 20)
    with pytest.raises(kjit.InvalidArgumentError, match="would leave a rank without heads"):
        kjit.mla.helix_heads(2, 3, 0)
    # One gloo rank: rank 0's id goes through the group; then kjit makes the communicator on a GPU
    # machine, and says it needs the GPU (or, where libnccl is absent, NCCL) on the CPU one.
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        if torch.cuda.is_available():
            comm = kjit.comm.Communicator.from_torch_distributed()
            assert (comm.rank, comm.size) == (0, 1)
            comm.close()
        else:
            with pytest.raises((kjit.NoDriverError, kjit.CommError, kjit.KjitError)) as error:
                kjit.comm.Communicator.from_torch_distributed()
            assert "driver" in str(error.value) or "nccl" in str(error.value).lower(), str(error.value)
    finally:
        dist.destroy_process_group()


def test_zigzag_refusals_through_the_c_abi_and_the_ops(fake_cuda):
    cu, host_cu = fake_cuda(i32, 3), torch.tensor([0, 512, 1536], dtype=i32)  # W = 4: 384 a rank
    gathered, local = fake_cuda(bf16, 1536, 8, 128), fake_cuda(bf16, 384, 8, 128)
    refused(
        "extract_zigzag_kv_slice: destination must hold 768 rows",
        "kjit_zigzag_extract_kv_slice",
        dl(gathered, "gathered"),
        dl(cu, "cu_seqlens"),
        host_cu.data_ptr(),
        4,
        0,
        4,
        dl(local, "out"),
        None,
    )
    refused(
        "rank must be in [0, 4)",
        "kjit_zigzag_scatter_grad",
        dl(fake_cuda(bf16, 768, 8, 128), "grad"),
        dl(cu, "cu_seqlens"),
        host_cu.data_ptr(),
        4,
        0,
        4,
        7,
        dl(local, "out"),
        None,
    )
    refused(
        "comm is NULL",
        "kjit_zigzag_forward",
        None,
        *(dl(t, name) for t, name in ((local, "q"), (local, "k"), (local, "v"), (local, "out"))),
        None,
        dl(cu, "cu_seqlens"),
        host_cu.data_ptr(),
        0.0,
        1,
        0,
        None,
    )
    # The Python side: a host copy of the wrong length, sequences W does not divide; kjit names the
    # caller's host tensor.
    x = torch.randn(1536, 2, 8, dtype=bf16)
    with pytest.raises(kjit.InvalidArgumentError, match=r"host_cu_seqlens must have the device copy's shape \[3\]"):
        kjit.zigzag.extract_kv_slice(x, host_cu, 4, 0, 4, host_cu[:2])
    with pytest.raises(kjit.InvalidArgumentError, match="^gathered is not in CUDA device memory"):
        kjit.zigzag.extract_kv_slice(x, host_cu, 4, 0, 4, host_cu)
    with pytest.raises(kjit.InvalidArgumentError, match="sequence 1 has 1024 tokens, not a multiple of 2W = 6"):
        kjit.zigzag.local_cu_seqlens(torch.tensor([0, 6, 1030]), 3)
    assert kjit.zigzag.local_cu_seqlens(host_cu, 4).tolist() == [0, 128, 384]


def test_the_forks_zigzag_function_refuses_what_it_cannot_do():
    q, cu = torch.randn(64, 2, 64, dtype=bf16), torch.tensor([0, 128], dtype=i32)
    call = kjit.zigzag_llama3_flash_attn_varlen_func
    with pytest.raises(kjit.InvalidArgumentError, match="dropout_p: kjit's attention has no dropout"):
        call(q, q, q, cu, cu, 64, 128, 1, dropout_p=0.1, causal=True)
    with pytest.raises(kjit.InvalidArgumentError, match="deterministic: kjit's zigzag backward"):
        call(q, q, q, cu, cu, 64, 128, 1, causal=True, deterministic=True)
    with pytest.raises(
        kjit.InvalidArgumentError, match=r"must describe the same sequences, got shapes \[3\] and \[2\]"
    ):
        call(q, q, q, torch.tensor([0, 32, 64], dtype=i32), cu, 64, 128, 1, causal=True)
    with pytest.raises(kjit.InvalidArgumentError, match="torch.distributed is not initialised"):
        call(q, q, q, cu, cu, 64, 128, 1, causal=True)
    # Over one gloo rank the communicator is made from the group: on a GPU machine kjit then
    # refuses the host tensors; on the CPU one making it needs the GPU.
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        with pytest.raises(kjit.KjitError) as error:
            call(q, q, q, cu, cu, 64, 128, 1, causal=True)
        message = str(error.value)
        if torch.cuda.is_available():
            assert message.startswith("q is not in CUDA device memory"), message
        else:
            assert "driver" in message or "nccl" in message.lower(), message
    finally:
        dist.destroy_process_group()


def test_offloaded_moe_refusals_before_any_device_work():
    # Host weights as plain CPU tensors: the stack's checks refuse before any device is touched.
    up, down = torch.zeros(16, 256, 128, dtype=bf16), torch.zeros(16, 128, 128, dtype=bf16)
    with pytest.raises(kjit.InvalidArgumentError, match=r"slots a layer must be between top_k \(4\)"):
        kjit.moe.OffloadedMoE([up, up], [down, down], slots=3)
    with pytest.raises(kjit.InvalidArgumentError, match="leave none of its 4 slots"):
        kjit.moe.OffloadedMoE([up, up], [down, down], slots=4, pinned=[[0, 1, 2, 3], [0, 1, 2, 3]])
    with pytest.raises(kjit.InvalidArgumentError, match="policy must be one of"):
        kjit.moe.OffloadedMoE([up, up], [down, down], slots=8, policy="mru")
    with pytest.raises(kjit.InvalidArgumentError, match="one entry a layer"):
        kjit.moe.OffloadedMoE([up, up], [down], slots=8)
    with pytest.raises(kjit.InvalidArgumentError, match=r"layer 1's weights"):
        kjit.moe.OffloadedMoE([up, torch.zeros(16, 256, 64, dtype=bf16)], [down, down], slots=8)
