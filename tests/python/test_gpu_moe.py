"""The MoE ops and MoELayer on the GPU through the torch ops, against torch: the router, the op chain
(align, permute, the grouped GEMMs, unpermute) against a dense per-expert reference, the masked
GEMM, FP4 weights against their dequantisation, and the module against an eager torch MoE."""

import pytest
import torch

import kjit
import references as ref

pytestmark = pytest.mark.gpu
bf16, f32, i32 = torch.bfloat16, torch.float32, torch.int32


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def randn(*shape, dtype=bf16, std=1.0):
    return torch.randn(shape, dtype=dtype, device="cuda") * std


def bound(ours, exact, low):
    """The attention tests' bound for the GEMM chain: kjit within twice torch's own low-precision
    error of the fp64 reference."""
    return ref.fa_bound(ours, exact, low)


@pytest.mark.parametrize("router", [kjit.moe.GLM_4_7_FLASH, kjit.moe.Router(top_k=8, renormalize=False)])
def test_router_topk(router):
    logits, bias = randn(100, 64, dtype=f32), randn(64, dtype=f32, std=0.1)
    ids, weights = kjit.moe.router_topk(logits, router, bias)
    ref_ids, ref_weights = ref.route(logits, router, bias)
    ours, theirs = ids.sort(dim=1), ref_ids.sort(dim=1)
    assert torch.equal(ours.values, theirs.values)
    torch.testing.assert_close(weights.gather(1, ours.indices), ref_weights.gather(1, theirs.indices))


def test_router_and_layer_into_given_outputs():
    """out= writes what the allocating calls return, bit for bit (the router's ids and weights, the
    fused layer's output)."""
    router, experts, hidden, inter = kjit.moe.GLM_4_7_FLASH, 16, 512, 256
    logits, bias = randn(40, experts, dtype=f32), randn(experts, dtype=f32, std=0.1)
    ids, weights = kjit.moe.router_topk(logits, router, bias)
    given = torch.full_like(ids, -1), torch.full_like(weights, float("nan"))
    assert kjit.moe.router_topk(logits, router, bias, out=given) == given
    assert torch.equal(given[0], ids) and torch.equal(given[1], weights)
    torch.library.opcheck(torch.ops.kjit.moe_router_topk_out.default, (logits, bias, *given, *router.op_args()))
    x = randn(40, hidden)
    gate_up, down = randn(experts, 2 * inter, hidden, std=hidden**-0.5), randn(experts, hidden, inter, std=inter**-0.5)
    args = (x, logits, gate_up, down, router, bias, None, 64)
    out = kjit.moe.layer(*args)
    given_out = torch.full_like(out, float("nan"))
    assert kjit.moe.layer(*args, out=given_out) is given_out
    assert torch.equal(given_out, out)


@pytest.mark.parametrize("tokens,block", [(3, 64), (200, 128)])
def test_op_chain_against_a_dense_reference(tokens, block):
    experts, hidden, inter, router = 16, 512, 256, kjit.moe.GLM_4_7_FLASH
    x, logits = randn(tokens, hidden), randn(tokens, experts, dtype=f32)
    gate_up, down = randn(experts, 2 * inter, hidden, std=hidden**-0.5), randn(experts, hidden, inter, std=inter**-0.5)
    ids, weights = kjit.moe.router_topk(logits, router)
    sorted_, block_expert, counts, offsets, invalid = kjit.moe.align(ids, experts, block)
    assert int(invalid) == 0 and torch.equal(counts.long(), torch.bincount(ids.flatten().long(), minlength=experts))
    x_sorted, positions = kjit.moe.permute(x, sorted_, router.top_k)
    h = kjit.moe.grouped_gemm(x_sorted, block_expert, block, gate_up, "swiglu")
    y = kjit.moe.grouped_gemm(h, block_expert, block, down, "routing_weights", sorted_, weights)
    out = kjit.moe.unpermute(y, positions, router.top_k)
    bound(out, ref.moe(x, ids, weights, gate_up, down, torch.float64), ref.moe(x, ids, weights, gate_up, down, bf16))
    fused = kjit.moe.layer(x, logits, gate_up, down, router, block=block)
    bound(fused, ref.moe(x, ids, weights, gate_up, down, torch.float64), ref.moe(x, ids, weights, gate_up, down, bf16))


def test_masked_gemm_against_torch():
    experts, rows, k, n = 8, 32, 256, 384
    x, w = randn(experts, rows, k), randn(experts, n, k, std=k**-0.5)
    masked_m = torch.tensor([0, 1, 5, 32, 17, 40, 3, 8], dtype=i32, device="cuda")  # 40 counts as 32
    y = kjit.moe.grouped_gemm_masked(x, masked_m, w, expected_m=8)
    for e in range(experts):
        m = min(int(masked_m[e]), rows)
        exact, low = x[e, :m].double() @ w[e].double().t(), x[e, :m] @ w[e].t()
        if m:
            bound(y[e, :m], exact, low)


@pytest.mark.parametrize("format", ["nvfp4", "mxfp4"])
def test_fp4_gemm_against_the_dequantised_weights(format):
    experts, hidden, n, block = 8, 512, 256, 64
    w = randn(experts, n, hidden, std=hidden**-0.5)
    fp4 = kjit.moe.quantize_experts_fp4(w, format)
    dense = ref.dequantize_fp4(fp4.codes, fp4.scales, fp4.tensor_scale, format)
    # Rounding to e2m1 loses at most one code step of the block's scale: amax / 6 x (1 + E4M3's
    # 1/16) for NVFP4, amax / 4 for MXFP4 (power-of-two scales). A swapped nibble or a misplaced
    # scale errs by about the block's amax.
    size, most = (16, 0.2) if format == "nvfp4" else (32, 0.2501)
    blockwise_max = w.float().abs().unflatten(-1, (-1, size)).amax(-1)
    error = (dense - w.float()).abs().unflatten(-1, (-1, size)).amax(-1)
    assert (error <= most * blockwise_max + 1e-6).all(), "codes or scales out of the documented layout"
    ids = torch.randint(0, experts, (40, 4), dtype=i32, device="cuda")
    sorted_, block_expert, *_ = kjit.moe.align(ids, experts, block)
    x_sorted, _ = kjit.moe.permute(randn(40, hidden), sorted_, 4)
    y = kjit.moe.expert_gemm_fp4(x_sorted, block_expert, block, fp4)
    for b, e in enumerate(block_expert.tolist()):
        if e < 0:
            continue
        rows = slice(b * block, (b + 1) * block)
        exact = x_sorted[rows].double() @ dense[e].double().t()
        low = x_sorted[rows] @ dense[e].to(bf16).t()
        bound(y[rows], exact, low)


def eager_moe(layer, x):
    """MoELayer's forward in plain torch: its own weights, torch's top-k and matmuls."""
    logits = x.float() @ layer.gate.weight.t()
    ids, weights = ref.route(logits, layer.router, layer.e_score_correction_bias)
    if layer.fp4 is None:
        gate_up, down = layer.gate_up, layer.down
    else:
        gate_up, down = (ref.dequantize_fp4(w.codes, w.scales, w.tensor_scale, w.format) for w in layer.fp4)
    out = ref.moe(x, ids, weights, gate_up, down, torch.float64)
    low = ref.moe(x, ids, weights, gate_up, down, bf16)
    shared = layer.shared_expert(x)
    return out + shared.double(), low + shared


@pytest.mark.parametrize("weights", ["bf16", "nvfp4", "mxfp4"])
@pytest.mark.parametrize("tokens", [1, 16, 300])
def test_moe_layer_module_against_eager_torch(weights, tokens):
    layer = kjit.moe.MoELayer(
        2048, 64, 1536, shared_intermediate_size=1536, device="cuda", track_stats=True
    )  # GLM-4.7-Flash
    with torch.no_grad():
        layer.e_score_correction_bias.copy_(torch.randn(64, device="cuda") * 0.05)
        if weights != "bf16":
            layer.to_fp4(weights)
        x = randn(tokens, 2048)
        out = layer(x)
        exact, low = eager_moe(layer, x)
    bound(out, exact, low)
    stats = layer.last_stats
    assert int(stats.counts.sum()) == tokens * 4
    assert torch.equal(stats.counts.long(), torch.bincount(stats.ids.flatten().long(), minlength=64))


@pytest.mark.parametrize("slots,prefetch", [(4, 0), (8, 4), (16, 0)])
def test_offloaded_moe_matches_the_resident_layers_bit_for_bit(slots, prefetch):
    # Three layers of 16 experts in page-locked host memory against kjit.moe.layer with every
    # expert on the GPU, over several steps of 8 tokens (passes where a step needs more experts
    # than the slots hold); the statistics against the routing.
    layers, experts, hidden, inter, tokens = 3, 16, 128, 128, 8
    ups = [randn(experts, 2 * inter, hidden, std=hidden**-0.5) for _ in range(layers)]
    downs = [randn(experts, hidden, inter, std=inter**-0.5) for _ in range(layers)]
    stack = kjit.moe.OffloadedMoE(
        [w.cpu().pin_memory() for w in ups], [w.cpu().pin_memory() for w in downs], slots=slots, prefetch=prefetch
    )
    distinct = 0
    for step in range(4):
        for i in range(layers):
            x, logits = randn(tokens, hidden), randn(tokens, experts, dtype=f32)
            expected = kjit.moe.layer(x, logits, ups[i], downs[i], kjit.moe.GLM_4_7_FLASH)
            got = stack.layer(i, x, logits)
            assert torch.equal(got, expected), f"step {step} layer {i}"
            ids, _ = kjit.moe.router_topk(logits, kjit.moe.GLM_4_7_FLASH)
            distinct += ids.unique().numel()
    stats = stack.stats()
    assert stats["hits"] + stats["misses"] == distinct
    assert stats["tokens"] == 4 * tokens
    assert stats["bytes_on_demand"] == stats["misses"] * (3 * inter * hidden * 2)
    stack.close()
