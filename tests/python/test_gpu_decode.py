"""The decode ops on the GPU through the torch ops: MLA decode against an fp64 reference, and CUDA
graph capture of the decode paths (MLA decode, the MoE layer at decode sizes), replayed with new
inputs against eager calls."""

import pytest
import torch

import kjit
import references as ref

pytestmark = pytest.mark.gpu
bf16, i32 = torch.bfloat16, torch.int32
SCALE = 0.0625  # GLM-4.7-Flash's


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def paged_cache(lengths, block_size=64, spare_blocks=3):
    """A cache with each sequence's blocks scattered (a shuffled block table)."""
    max_blocks = max(1, max((n + block_size - 1) // block_size for n in lengths))
    blocks = len(lengths) * max_blocks + spare_blocks
    cache = torch.randn(blocks, block_size, 576, dtype=bf16, device="cuda")
    table = torch.randperm(blocks, dtype=i32)[: len(lengths) * max_blocks].view(len(lengths), max_blocks)
    return cache, table, torch.tensor(lengths, dtype=i32)


@pytest.mark.parametrize("lengths,s_q,heads", [([1, 700, 64, 0], 1, 16), ([4096, 33], 2, 20), ([130], 4, 128)])
def test_mla_decode(lengths, s_q, heads):
    cache, table, host_lengths = paged_cache(lengths)
    q = torch.randn(len(lengths), s_q, heads, 576, dtype=bf16, device="cuda")
    out, lse = kjit.mla.decode(q, cache, table.cuda(), host_lengths.cuda(), table, host_lengths, SCALE)
    ref_out, ref_lse = ref.mla_decode(q, cache, table, host_lengths, SCALE)
    ref.fa_bound(out, ref_out, ref.mla_decode(q, cache, table, host_lengths, SCALE, dtype=bf16)[0])
    seen = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), seen)
    torch.testing.assert_close(lse[seen].double(), ref_lse[seen], atol=1e-3, rtol=1e-4)


def capture(fn):
    """fn captured as a CUDA graph after a warm-up call (the JIT compile stays outside)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph, outputs


def test_mla_decode_of_a_batch_with_no_cached_token():
    """Every sequence empty, the table [B, 0] (which torch strides (1, 1)): O 0 and LSE -inf."""
    cache = torch.randn(2, 64, 576, dtype=bf16, device="cuda")
    table, lengths = torch.empty(3, 0, dtype=i32), torch.zeros(3, dtype=i32)
    q = torch.randn(3, 2, 20, 576, dtype=bf16, device="cuda")
    out, lse = kjit.mla.decode(q, cache, table.cuda(), lengths.cuda(), table, lengths, SCALE)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(lse, torch.full_like(lse, float("-inf")))


def test_mla_decode_into_given_outputs():
    cache, table, lengths = paged_cache([300, 5])
    q = torch.randn(2, 1, 16, 576, dtype=bf16, device="cuda")
    args = (q, cache, table.cuda(), lengths.cuda(), table, lengths, SCALE)
    out, lse = kjit.mla.decode(*args)
    given, given_lse = torch.full_like(out, float("nan")), torch.full_like(lse, float("nan"))
    assert kjit.mla.decode(*args, out=given, lse=given_lse) == (given, given_lse)
    assert torch.equal(given, out) and torch.equal(given_lse, lse)
    torch.library.opcheck(torch.ops.kjit.mla_decode_out.default, (*args[:6], given, given_lse, SCALE))


def test_mla_decode_under_cuda_graphs():
    capacity = 1024
    cache, table, _ = paged_cache([capacity] * 3)
    q = torch.randn(3, 1, 32, 576, dtype=bf16, device="cuda")
    lengths = torch.full((3,), capacity, dtype=i32, device="cuda")
    device_table = table.cuda()
    # Captured with host lengths at the capacity: the plan covers every length the replays use.
    host_capacity = torch.full((3,), capacity, dtype=i32)
    graph, (out, lse) = capture(lambda: kjit.mla.decode(q, cache, device_table, lengths, table, host_capacity, SCALE))
    for step_lengths in ([1, 500, 1024], [900, 64, 2], [0, 1023, 777]):
        q.copy_(torch.randn_like(q))
        lengths.copy_(torch.tensor(step_lengths, dtype=i32))
        graph.replay()
        eager_out, eager_lse = kjit.mla.decode(
            q, cache, device_table, lengths, table, torch.tensor(step_lengths, dtype=i32), SCALE
        )
        ref_out, _ = ref.mla_decode(q, cache, table, torch.tensor(step_lengths), SCALE)
        low_out, _ = ref.mla_decode(q, cache, table, torch.tensor(step_lengths), SCALE, dtype=bf16)
        ref.fa_bound(out, ref_out, low_out)
        torch.testing.assert_close(out, eager_out, atol=1e-2, rtol=1e-2)
        torch.testing.assert_close(lse, eager_lse, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("weights", ["bf16", "nvfp4"])
def test_moe_layer_at_decode_sizes_under_cuda_graphs(weights):
    layer = kjit.moe.MoELayer(1024, 16, 256, shared_intermediate_size=256, device="cuda").requires_grad_(False)
    if weights != "bf16":
        layer.to_fp4(weights)
    x = torch.randn(4, 1024, dtype=bf16, device="cuda")
    graph, out = capture(lambda: layer(x))
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.testing.assert_close(out, layer(x))


def test_helix_decode_at_one_rank_is_mla_decode():
    """W = 1 through a real communicator (NCCL on this GPU, bootstrapped through a one-rank gloo
    group): the helix step's merge of one part is the plain decode."""
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        comm = kjit.comm.Communicator.from_torch_distributed(device=torch.cuda.current_device())
        cache, table, host_lengths = paged_cache([700, 65, 1])
        q = torch.randn(3, 1, 20, 576, dtype=bf16, device="cuda")
        args = (q, cache, table.cuda(), host_lengths.cuda(), table, host_lengths, SCALE)
        out, lse = kjit.mla.helix_decode(comm, *args)
        plain_out, plain_lse = kjit.mla.decode(*args)
        torch.testing.assert_close(out, plain_out, atol=1e-2, rtol=1e-2)
        torch.testing.assert_close(lse, plain_lse, atol=1e-4, rtol=1e-5)
        comm.close()
    finally:
        dist.destroy_process_group()
