"""kjit's public ops on the GPU over seeded random shapes, against the torch references of
references.py with the sibling tests' tolerances. test_gpu_*.py check the shapes we chose; callers
will bring others (any head count, length, expert count or hidden size the validation takes), so
each case here draws one: attention (batched, packed, grouped; forward and backward), merge_states,
MLA decode, the MoE router, dispatch, grouped GEMMs and layer. Every drawn shape is one the API
documents as valid (the C++ check enforcing it is named where it is drawn); a few invalid ones
must be refused with InvalidArgumentError before any device work.

One seed drives every draw: KJIT_TEST_SEED=<seed> replays a run, or one case of it (the seed is
printed when the module loads, which pytest -s shows, and every failure names it with the case)."""

import contextlib
import itertools
import math
import os
import random
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import kjit
import references as ref

pytestmark = pytest.mark.gpu
bf16, fp16, f32, f64, i32 = torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int32

SEED = int(os.environ.get("KJIT_TEST_SEED") or random.SystemRandom().randrange(2**31))
print(f"test_gpu_random_shapes: seed {SEED} (KJIT_TEST_SEED={SEED} replays this run)")


def case_rng(family, index):
    """Case `index` of `family`'s own stream of the seed (a case replays alone), and torch's."""
    rng = random.Random(f"{SEED}/{family}/{index}")
    torch.manual_seed(rng.randrange(2**63))
    return rng


@contextlib.contextmanager
def replayable(family, index, case):
    """Any failure (a wrong value, or a refusal or fault on a shape the API documents) names the
    case and the seed that replays it."""
    try:
        yield
    except Exception as error:
        raise AssertionError(
            f"{family}[{index}] {case} (KJIT_TEST_SEED={SEED} replays it): {type(error).__name__}: {error}"
        ) from error


@contextlib.contextmanager
def named(what):
    """Prefixes a failed check's message with what it checked."""
    try:
        yield
    except AssertionError as error:
        raise AssertionError(f"{what}: {error}") from error


def randn(*shape, dtype=bf16, std=1.0):
    """N(0, std^2) of `shape` on the GPU in `dtype`."""
    return torch.randn(shape, device="cuda").mul_(std).to(dtype)


def cumulative(lengths):
    """cu_seqlens of `lengths`: int32 [B + 1] on the host."""
    return torch.tensor([0, *itertools.accumulate(lengths)], dtype=i32)


def sequence_slices(cu):
    """Each sequence's rows of a packed tensor, from its (host) cu_seqlens."""
    bounds = cu.tolist()
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


# ---- attention ---------------------------------------------------------------------------------

HEAD_DIMS = (64, 96, 128, 192, 256)  # FlashForward::kHeadDims, checked at flash_forward.cpp:128
# Around the tiles' edges (64 to 192 query rows, 64 to 176 keys), off every multiple, and long enough
# for the main loops' steady state.
LENGTHS = (1, 2, 7, 31, 63, 64, 65, 80, 100, 127, 128, 129, 176, 177, 200, 255, 257, 333, 640, 1000, 2049)
# "Any batch/seq/head strides, head dim contiguous, rows 16-byte aligned" (kjit/attention.hpp):
# contiguous, heads outside the sequence (a [.., H, S, D] tensor's transpose), or every other
# head of a tensor of twice as many (each offset a multiple of D x 2 bytes).
LAYOUTS = ("contiguous", "heads_outer", "heads_sliced")
SCORES = 1 << 24  # B Hq Sq Sk of an fp64 forward reference's scores: 128 MiB
GRAD_SCORES = 1 << 22  # the backward's, whose autograd keeps several of them


def attention_input(shape, layout, dtype, grad=False):
    """randn [..., S, H, D] in `layout`; a leaf that requires grad with `grad`."""
    *outer, seq, heads, dim = shape
    if layout == "heads_outer":
        t = randn(*outer, heads, seq, dim, dtype=dtype).transpose(-3, -2)
    elif layout == "heads_sliced":
        t = randn(*outer, seq, 2 * heads, dim, dtype=dtype)[..., 1::2, :]
    else:
        t = randn(*shape, dtype=dtype)
    return t.detach().requires_grad_(grad)


def key_values(case, rows, grad=False):
    """k and v [*rows, Hk, D] of the case's dtype and layout."""
    return [attention_input((*rows, case.heads_k, case.dim), case.layout, case.dtype, grad) for _ in range(2)]


def attention_inputs(case, rows_q, rows_k, grad=False):
    """q [*rows_q, Hq, D], k and v [*rows_k, Hk, D] of the case's dtype and layout."""
    return (
        attention_input((*rows_q, case.heads_q, case.dim), case.layout, case.dtype, grad),
        *key_values(case, rows_k, grad),
    )


def packed_attention_inputs(case, grad=False):
    """A packed case's host cu_seqlens, then q, k and v over their summed lengths."""
    cu_q, cu_k = cumulative(case.lengths_q), cumulative(case.lengths_k)
    return (cu_q, cu_k, *attention_inputs(case, (int(cu_q[-1]),), (int(cu_k[-1]),), grad))


def draw_attention(rng):
    """What every attention case draws: dtype, head dim, heads (GQA/MQA), causal, scale, layout."""
    heads_k = rng.choice((1, 1, 2, 3, 4, 8))
    return SimpleNamespace(
        dtype=rng.choice((bf16, fp16)),  # attention_inputs.cpp:27
        dim=rng.choice(HEAD_DIMS),
        heads_q=heads_k * rng.choice((1, 1, 2, 3, 4, 8)),  # GQA/MQA: any multiple (flash_forward.cpp:131)
        heads_k=heads_k,
        causal=rng.random() < 0.5,
        scale=rng.choice((None, round(rng.uniform(0.02, 0.3), 4))),  # None: 1 / sqrt(D) for both
        layout=rng.choice(LAYOUTS),
    )


def draw_batched(rng, budget):
    """B, Sq, Sk (Sk 0 too: flash_forward.cpp:136 takes it, every row then sees no key)."""
    while True:
        case = draw_attention(rng)
        case.batch, case.seq_q, case.seq_k = rng.randint(1, 3), rng.choice(LENGTHS), rng.choice(LENGTHS + (0,))
        if case.batch * case.heads_q * case.seq_q * max(case.seq_k, 1) <= budget:
            return case


def draw_packed(rng, budget):
    """Sequences of any lengths, 0 on either side too (attention_inputs.cpp:79-90: cu_seqlens from 0,
    non-decreasing, ending at the tokens)."""
    while True:
        case = draw_attention(rng)
        count = rng.randint(1, 6)
        case.lengths_q = [rng.choice(LENGTHS + (0, 0)) for _ in range(count)]
        case.lengths_k = [rng.choice(LENGTHS + (0, 0)) for _ in range(count)]
        if case.heads_q * sum(q * max(k, 1) for q, k in zip(case.lengths_q, case.lengths_k)) <= budget:
            return case


def check_attention(out, lse, ref_out, ref_lse, low_out):
    """test_gpu_attention.py's checks: out within FlashAttention's bound, lse finite exactly where
    the reference's is and within 1e-3 of it there; a row that sees no key has out 0 and lse -inf
    (kjit/attention.hpp). lse is [..., Hq, S] for out [..., S, Hq, D]."""
    ref.fa_bound(out, ref_out, low_out)
    seen = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), seen), "lse is finite where the reference's is not, or the other way"
    assert (lse[~seen] == float("-inf")).all(), "a row that sees no key has an lse other than -inf"
    assert (out[(~seen).transpose(-1, -2)] == 0).all(), "a row that sees no key has an output other than 0"
    torch.testing.assert_close(lse[seen], ref_lse[seen], atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("index", range(6))
def test_attention_forward(index):
    rng = case_rng("attention_forward", index)
    case = draw_batched(rng, SCORES)
    with replayable("attention_forward", index, case):
        q, k, v = attention_inputs(case, (case.batch, case.seq_q), (case.batch, case.seq_k))
        out, lse = kjit.attention.forward(q, k, v, case.scale, case.causal)
        ref_out, ref_lse = ref.attention(q, k, v, case.causal, case.scale)
        low_out, _ = ref.attention(q, k, v, case.causal, case.scale, dtype=case.dtype)
        check_attention(out, lse, ref_out, ref_lse, low_out)


@pytest.mark.parametrize("index", range(5))
def test_attention_forward_varlen(index):
    rng = case_rng("attention_forward_varlen", index)
    case = draw_packed(rng, SCORES)
    with replayable("attention_forward_varlen", index, case):
        cu_q, cu_k, q, k, v = packed_attention_inputs(case)
        out, lse = kjit.attention.forward_varlen(q, k, v, cu_q.cuda(), cu_k.cuda(), cu_q, cu_k, case.scale, case.causal)
        assert out.shape == q.shape and lse.shape == (case.heads_q, q.shape[0])
        for b, (qs, ks) in enumerate(zip(sequence_slices(cu_q), sequence_slices(cu_k))):
            ref_out, ref_lse = ref.attention(q[None, qs], k[None, ks], v[None, ks], case.causal, case.scale)
            low_out, _ = ref.attention(q[None, qs], k[None, ks], v[None, ks], case.causal, case.scale, dtype=case.dtype)
            check_attention(out[None, qs], lse[None, :, qs], ref_out, ref_lse, low_out)


@pytest.mark.parametrize("index", range(4))
def test_attention_backward(index):
    """Autograd through flash_attn_func against the reference's, as test_gpu_attention.py; the
    deterministic backward also gives the same bits twice (kjit/attention.hpp)."""
    rng = case_rng("attention_backward", index)
    case = draw_batched(rng, GRAD_SCORES)
    case.deterministic = rng.random() < 0.5
    with replayable("attention_backward", index, case):
        q, k, v = attention_inputs(case, (case.batch, case.seq_q), (case.batch, case.seq_k), grad=True)
        dout = randn(*q.shape, dtype=case.dtype)

        def grads():
            out = kjit.flash_attn_func(
                q, k, v, softmax_scale=case.scale, causal=case.causal, deterministic=case.deterministic
            )
            return torch.autograd.grad(out, (q, k, v), dout)

        def reference(dtype):
            inputs = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
            out, _ = ref.attention(*inputs, case.causal, case.scale, dtype=dtype)
            return torch.autograd.grad(out, inputs, dout.to(dtype))

        ours = grads()
        for name, got, exact, low in zip(("dq", "dk", "dv"), ours, reference(f64), reference(case.dtype)):
            with named(name):
                ref.fa_bound(got, exact, low)
        if case.deterministic:
            assert all(torch.equal(a, b) for a, b in zip(ours, grads())), "deterministic backward differs run to run"


@pytest.mark.parametrize("index", range(3))
def test_attention_backward_varlen(index):
    rng = case_rng("attention_backward_varlen", index)
    case = draw_packed(rng, GRAD_SCORES)
    with replayable("attention_backward_varlen", index, case):
        cu_q, cu_k, q, k, v = packed_attention_inputs(case, grad=True)
        dout = randn(*q.shape, dtype=case.dtype)
        out = kjit.flash_attn_varlen_func(
            q,
            k,
            v,
            cu_q.cuda(),
            cu_k.cuda(),
            max(case.lengths_q),
            max(case.lengths_k),
            softmax_scale=case.scale,
            causal=case.causal,
            host_cu_seqlens_q=cu_q,
            host_cu_seqlens_k=cu_k,
        )
        ours = torch.autograd.grad(out, (q, k, v), dout)

        def reference(dtype):
            """The grads of sum_b <attention(q_b, k_b, v_b), dout_b>, sequence by sequence."""
            inputs = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
            loss = 0
            for qs, ks in zip(sequence_slices(cu_q), sequence_slices(cu_k)):
                rows = [inputs[0][None, qs], inputs[1][None, ks], inputs[2][None, ks]]
                out, _ = ref.attention(*rows, case.causal, case.scale, dtype=dtype)
                loss = loss + (out[0].double() * dout[qs].double()).sum()
            return torch.autograd.grad(loss, inputs)

        for name, got, exact, low in zip(("dq", "dk", "dv"), ours, reference(f64), reference(case.dtype)):
            with named(name):
                ref.fa_bound(got, exact, low)


def draw_grouped(rng):
    """1 to 4 query groups (kMaxGroups 16, grouped_inputs.cpp:58) over 1 to 3 sequences of keys,
    each group's window in each sequence any range inside its keys (grouped_inputs.cpp:33), empty
    or a prefix too."""
    while True:
        case = draw_attention(rng)
        case.lengths_k = [rng.choice(LENGTHS + (0,)) for _ in range(rng.randint(1, 3))]
        case.groups = []
        for _ in range(rng.randint(1, 4)):
            lengths_q = [rng.choice((0, 1, 7, 64, 65, 130, 300)) for _ in case.lengths_k]
            windows = []
            for keys in case.lengths_k:
                begin = 0 if rng.random() < 0.3 else rng.randint(0, keys)
                windows.append([begin, rng.randint(begin, keys)])
            case.groups.append((lengths_q, windows))
        cost = case.heads_q * sum(n * max(e - b, 1) for qs, ws in case.groups for n, (b, e) in zip(qs, ws))
        if cost <= GRAD_SCORES:
            return case


@pytest.mark.parametrize("index", range(3))
def test_attention_grouped(index):
    """Each group's rows are forward_varlen's over its windows (kjit/attention.hpp), forward and,
    through autograd, backward (dk and dv summed over the groups)."""
    rng = case_rng("attention_grouped", index)
    case = draw_grouped(rng)
    with replayable("attention_grouped", index, case):
        cu_k = cumulative(case.lengths_k)
        k, v = key_values(case, (int(cu_k[-1]),), grad=True)
        groups = []
        for lengths_q, windows in case.groups:
            cu_q, w = cumulative(lengths_q), torch.tensor(windows, dtype=i32)
            q = attention_input((int(cu_q[-1]), case.heads_q, case.dim), case.layout, case.dtype, grad=True)
            groups.append(kjit.attention.QueryGroup(q, cu_q.cuda(), w.cuda(), cu_q, w))
        outs, lses = kjit.attention.grouped_forward(groups, k, v, cu_k.cuda(), cu_k, case.scale, case.causal)
        douts = [torch.randn_like(o) for o in outs]
        ours = torch.autograd.grad(outs, [g.q for g in groups] + [k, v], douts)
        # (group, its rows of sequence b, sequence b's keys in its window) for every pair
        segments = []
        for g, group in enumerate(groups):
            for b, rows in enumerate(sequence_slices(group.host_cu_seqlens_q)):
                begin, end = (int(cu_k[b]) + int(x) for x in group.host_windows[b])
                segments.append((g, rows, slice(begin, end)))

        def attend(q, keys, values, dtype):
            return ref.attention(q[None], keys[None], values[None], case.causal, case.scale, dtype=dtype)

        with torch.no_grad():
            for g, rows, window in segments:
                q = groups[g].q[rows]
                with named(f"group {g} rows {rows.start}:{rows.stop}"):
                    exact_out, exact_lse = attend(q, k[window], v[window], f64)
                    low_out, _ = attend(q, k[window], v[window], case.dtype)
                    check_attention(outs[g][None, rows], lses[g][None, :, rows], exact_out, exact_lse, low_out)

        def reference(dtype):
            """The grads of sum over the segments of <attention, dout>, in `dtype`."""
            inputs = [t.detach().to(dtype).requires_grad_() for t in [g.q for g in groups] + [k, v]]
            keys, values = inputs[-2:]
            loss = 0
            for g, rows, window in segments:
                out, _ = attend(inputs[g][rows], keys[window], values[window], dtype)
                loss = loss + (out[0].double() * douts[g][rows].double()).sum()
            return torch.autograd.grad(loss, inputs)

        names = [f"dq of group {g}" for g in range(len(groups))] + ["dk", "dv"]
        for name, got, exact, low in zip(names, ours, reference(f64), reference(case.dtype)):
            with named(name):
                ref.fa_bound(got, exact, low)


# ---- merge_states ------------------------------------------------------------------------------


def merge_reference(parts, parts_lse):
    """(out [T, H, D], lse [T, H]) in fp64: the parts' softmax-weighted average; a row -inf in
    every part gives out 0, lse -inf (kjit/merge_states.hpp)."""
    lse = parts_lse.double()
    top = lse.amax(0)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weights = torch.exp(lse - top)
    total = weights.sum(0)
    out = (weights[..., None] * parts.double()).sum(0) / total.clamp(min=1e-300)[..., None]
    return out, top + torch.log(total)


@pytest.mark.parametrize("index", range(5))
def test_merge_states(index):
    rng = case_rng("merge_states", index)
    while True:
        case = SimpleNamespace(
            parts=rng.choice((1, 2, 3, 4, 7, 16, 64)),  # 1..64 (merge_states.cpp:20)
            tokens=rng.choice((1, 5, 64, 100, 257)),
            heads=rng.choice((1, 2, 8, 20, 32)),
            dim=rng.choice((64, 72, 128, 200, 256, 512, 576, 1000, 1024)),  # 8k, 64..1024 (merge_states.cpp:24)
            dtype=rng.choice((bf16, fp16, f32)),  # merge_states.cpp:129
            parts_inner=rng.random() < 0.5,  # "any strides for N, T, H" (kjit/merge_states.hpp)
            empty=rng.random() < 0.5,
        )
        if case.parts * case.tokens * case.heads * case.dim <= 1 << 23:
            break
    with replayable("merge_states", index, case):
        n, t, h, d = case.parts, case.tokens, case.heads, case.dim
        if case.parts_inner:
            parts = randn(t, n, h, d, dtype=case.dtype).transpose(0, 1)
        else:
            parts = randn(n, t, h, d, dtype=case.dtype)
        parts_lse = randn(n, t, h, dtype=f32, std=3.0)
        if case.empty:  # parts that saw no key, and rows that none saw
            parts_lse[torch.rand(n, t, h, device="cuda") < 0.3] = float("-inf")
            parts_lse[:, torch.rand(t, device="cuda") < 0.2] = float("-inf")
        out, lse = kjit.attention.merge_states(parts, parts_lse)
        exact, exact_lse = merge_reference(parts, parts_lse)
        empty = torch.isinf(exact_lse)
        assert (out[empty] == 0).all() and (lse[empty] == float("-inf")).all(), "a row no part saw is not 0, -inf"
        if case.dtype == f32:  # test_gpu_attention.py's merge tolerances
            torch.testing.assert_close(out.double(), exact, atol=2e-5, rtol=1e-4)
        else:  # computed in fp32 and rounded once: FlashAttention's bound over that rounding
            ref.fa_bound(out, exact, exact.to(case.dtype))
        torch.testing.assert_close(lse, exact_lse.float(), atol=1e-4, rtol=1e-5)


# ---- MLA decode --------------------------------------------------------------------------------


def draw_mla(rng):
    """s_q 1..4 (mla_inputs.cpp:65), H >= 1 (:67; 64-row tiles, so one, two and partial ones),
    blocks of 32 or 64 (:68), lengths 0 to a few thousand: 0, shorter than s_q (rows that see no
    key, as tests/gpu/mla_decode_test.cpp), around a block, anything."""
    while True:
        s_q, block = rng.randint(1, 4), rng.choice((32, 64))
        edges = (0, 1, max(s_q - 1, 1), block - 1, block, block + 1, 3 * block + 5)
        case = SimpleNamespace(
            dtype=rng.choice((bf16, fp16)),  # mla_inputs.cpp:49
            s_q=s_q,
            heads=rng.choice((1, 16, 20, 64, 128, rng.randint(1, 128))),
            block_size=block,
            lengths=[
                rng.choice(edges) if rng.random() < 0.5 else rng.randint(1, 3000) for _ in range(rng.randint(1, 6))
            ],
            scale=rng.choice((None, 0.0625, round(rng.uniform(0.02, 0.1), 4))),
            layout=rng.choice(("contiguous", "heads_outer")),  # q: any strides, rows 16-byte aligned
        )
        if sum(case.lengths) <= 6000:  # the reference gathers keys one by one
            return case


def paged_cache(lengths, block_size, dtype):
    """test_gpu_decode.py's cache (each sequence's blocks scattered among spare ones) with what no
    call may read poisoned, as tests/gpu/mla_decode_test.cpp: NaN in a last block past the length,
    table entries past a sequence's blocks outside the cache (only the entries in use are checked,
    kjit/mla.hpp)."""
    max_blocks = max(1, max(math.ceil(n / block_size) for n in lengths))
    blocks = len(lengths) * max_blocks + 3
    cache = randn(blocks, block_size, 576, dtype=dtype)
    table = torch.randperm(blocks, dtype=i32)[: len(lengths) * max_blocks].view(len(lengths), max_blocks)
    for b, n in enumerate(lengths):
        used = math.ceil(n / block_size)
        if n % block_size:
            cache[int(table[b, used - 1]), n % block_size :] = float("nan")
        table[b, used:] = 1 << 30
    return cache, table, torch.tensor(lengths, dtype=i32)


@pytest.mark.parametrize("index", range(6))
def test_mla_decode(index):
    rng = case_rng("mla_decode", index)
    case = draw_mla(rng)
    with replayable("mla_decode", index, case):
        cache, table, lengths = paged_cache(case.lengths, case.block_size, case.dtype)
        batch = len(case.lengths)
        if case.layout == "heads_outer":
            q = randn(batch, case.heads, case.s_q, 576, dtype=case.dtype).transpose(1, 2)
        else:
            q = randn(batch, case.s_q, case.heads, 576, dtype=case.dtype)
        out, lse = kjit.mla.decode(q, cache, table.cuda(), lengths.cuda(), table, lengths, case.scale)
        scale = 576**-0.5 if case.scale is None else case.scale  # kjit/mla.hpp's default
        ref_out, ref_lse = ref.mla_decode(q, cache, table, lengths, scale)
        low_out, _ = ref.mla_decode(q, cache, table, lengths, scale, dtype=case.dtype)
        ref.fa_bound(out, ref_out, low_out)
        seen = torch.isfinite(ref_lse)  # test_gpu_decode.py's checks, and O = 0, LSE = -inf unseen
        assert torch.equal(torch.isfinite(lse), seen), "lse is finite where the reference's is not, or the other way"
        assert (lse[~seen] == float("-inf")).all() and (out[~seen] == 0).all(), "a row that sees no key is not 0, -inf"
        torch.testing.assert_close(lse[seen].double(), ref_lse[seen], atol=1e-3, rtol=1e-4)


# ---- MoE: router -------------------------------------------------------------------------------

EXPERT_COUNTS = (1, 2, 3, 7, 8, 16, 20, 60, 64, 96, 128, 160, 256, 384, 512, 1000, 1024)  # router.cpp:20
# Two choices closer than this (relative, plus the bias's scale) may rank either way: kjit scores in
# fp32 with __expf (a few ulp), the reference in fp64. Such tokens are checked for a valid choice.
NEAR_TIE = 1e-5


def draw_router(rng, experts, most_top_k=32):
    """Any router kjit takes for `experts` (router.cpp:23-32): groups dividing E, at most 32;
    topk_groups 1..groups; top_k 1..min(32, the kept groups' experts)."""
    groups = 1
    if rng.random() < 0.4:
        groups = rng.choice([g for g in range(1, min(32, experts) + 1) if experts % g == 0])
    topk_groups = rng.randint(1, groups)
    return kjit.moe.Router(
        top_k=rng.randint(1, min(most_top_k, topk_groups * (experts // groups))),
        sigmoid=rng.random() < 0.5,
        groups=groups,
        topk_groups=topk_groups,
        renormalize=rng.random() < 0.5,
        scaling=rng.choice((1.0, 1.8, 2.5)),
    )


def route_reference(logits, router, bias):
    """(scores, ids [T, k], near_tie [T]) in fp64 by kjit's rules (kjit/moe.hpp, vLLM's
    grouped_topk): the bias only chooses; a group's score is its two best choices summed with a
    bias, its best without one; ties to the lower id (a stable sort); near_tie where the k-th and
    the next choice, or the kept groups' last and the next group, are within NEAR_TIE."""
    wide = logits.double()
    scores = torch.sigmoid(wide) if router.sigmoid else torch.softmax(wide, dim=-1)
    choice = scores + bias.double() if bias is not None else scores
    slack = bias.abs().max().item() if bias is not None and bias.numel() else 0.0

    def near(ranked, n):
        """Whether the n-th and (n + 1)-th of each row of `ranked` (descending) are near a tie."""
        if ranked.shape[1] <= n:
            return torch.zeros(ranked.shape[0], dtype=torch.bool, device=ranked.device)
        a, b = ranked[:, n - 1], ranked[:, n]
        return torch.isfinite(b) & ((a - b) <= NEAR_TIE * (a.abs() + b.abs() + slack))

    near_tie = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    if router.groups > 1:
        grouped = choice.unflatten(1, (router.groups, -1))
        best = 2 if bias is not None and grouped.shape[-1] >= 2 else 1
        ranked = grouped.topk(best, dim=-1).values.sum(-1).sort(dim=1, descending=True, stable=True)
        kept = torch.zeros_like(ranked.values, dtype=torch.bool).scatter_(
            1, ranked.indices[:, : router.topk_groups], True
        )
        choice = choice.masked_fill(~kept.repeat_interleave(grouped.shape[-1], dim=1), float("-inf"))
        near_tie |= near(ranked.values, router.topk_groups)
    ranked = choice.sort(dim=1, descending=True, stable=True)
    near_tie |= near(ranked.values, router.top_k)
    return scores, ranked.indices[:, : router.top_k], near_tie


def check_routing(ids, weights, logits, router, bias, exact_ties=False):
    """kjit's choice is the reference's (as a set, as test_gpu_moe.py compares it) wherever no
    near tie makes it ambiguous (exact_ties: ties are exact, so everywhere); every token's k ids
    are distinct experts; the weights are the reference's for kjit's ids (torch's fp32 tolerances,
    as test_gpu_moe.py)."""
    tokens, experts = logits.shape
    scores, ref_ids, near_tie = route_reference(logits, router, bias)
    assert ids.shape == (tokens, router.top_k) and weights.shape == (tokens, router.top_k)
    ours = ids.long().sort(dim=1).values
    assert ((ours >= 0) & (ours < experts)).all() and (ours.diff(dim=1) > 0).all(), "ids out of range or repeated"
    clear = torch.ones_like(near_tie) if exact_ties else ~near_tie
    differ = (ours != ref_ids.sort(dim=1).values).any(dim=1) & clear
    assert not differ.any(), f"tokens {differ.nonzero().flatten()[:8].tolist()} chose other experts"
    expected = scores.gather(1, ids.long())
    if router.renormalize:
        expected = expected / expected.sum(dim=-1, keepdim=True)
    torch.testing.assert_close(weights, (expected * router.scaling).float())


@pytest.mark.parametrize("index", range(6))
def test_router_topk(index):
    rng = case_rng("router_topk", index)
    experts = rng.choice(EXPERT_COUNTS)
    case = SimpleNamespace(
        tokens=rng.choice((0, 1, 2, 31, 100, 257, 1000)),
        experts=experts,
        router=draw_router(rng, experts),
        dtype=rng.choice((f32, f32, bf16, fp16)),  # router.cpp:101
        std=rng.choice((1.0, 3.0)),
        row_padding=rng.choice((0, 0, 3, 64)),  # logits rows any stride, experts contiguous (kjit/moe.hpp)
        bias_std=rng.choice((None, 0.01, 0.1, 1.0)),  # None: no correction bias
    )
    with replayable("router_topk", index, case):
        logits = randn(case.tokens, experts + case.row_padding, dtype=case.dtype, std=case.std)[:, :experts]
        bias = randn(experts, dtype=f32, std=case.bias_std) if case.bias_std else None
        ids, weights = kjit.moe.router_topk(logits, case.router, bias)
        check_routing(ids, weights, logits, case.router, bias)


@pytest.mark.parametrize("index", range(3))
def test_router_topk_ties_go_to_the_lower_id(index):
    """Logits of a few values tie often; with no bias a group's score is its best one, so groups tie
    exactly too: both rankings must break ties to the lower id (kjit/moe.hpp)."""
    rng = case_rng("router_ties", index)
    experts = rng.choice(EXPERT_COUNTS)
    case = SimpleNamespace(
        tokens=rng.choice((1, 7, 100, 300)),
        experts=experts,
        router=draw_router(rng, experts),
        dtype=rng.choice((f32, bf16)),
    )
    with replayable("router_ties", index, case):
        logits = (torch.randint(-3, 4, (case.tokens, experts), device="cuda") * 0.5).to(case.dtype)
        ids, weights = kjit.moe.router_topk(logits, case.router)
        check_routing(ids, weights, logits, case.router, None, exact_ties=True)


# ---- MoE: dispatch -----------------------------------------------------------------------------


def align_reference(ids, experts, block):
    """align's layout by its definition (kjit/moe.hpp): each expert's pairs in pair order, its run
    padded to whole blocks with T k, block_expert -1 and sorted T k past the padded total; ids
    outside [0, E) not placed, counted as invalid."""
    flat = ids.flatten().tolist()
    pairs = len(flat)
    runs = [[] for _ in range(experts)]
    for pair, expert in enumerate(flat):
        if 0 <= expert < experts:
            runs[expert].append(pair)
    rows = int(kjit.moe.align_capacity(pairs, experts, block))
    sorted_, block_expert, offsets = [], [], [0]
    for expert, run in enumerate(runs):
        padded = -(-len(run) // block) * block
        sorted_ += run + [pairs] * (padded - len(run))
        block_expert += [expert] * (padded // block)
        offsets.append(offsets[-1] + padded)
    sorted_ += [pairs] * (rows - len(sorted_))
    block_expert += [-1] * (rows // block - len(block_expert))
    counts = [len(run) for run in runs]
    return [torch.tensor(v, dtype=i32) for v in (sorted_, block_expert, counts, offsets, [pairs - sum(counts)])]


@pytest.mark.parametrize("index", range(4))
def test_align_permute_unpermute(index):
    """The dispatch layout exactly, the tokens' trip into it bit for bit, and back (summed in fp32,
    rounded once: FlashAttention's bound over that rounding)."""
    rng = case_rng("dispatch", index)
    while True:
        case = SimpleNamespace(
            experts=rng.choice(EXPERT_COUNTS),  # align.cpp:19
            block=rng.choice((1, 2, 16, 33, 64, 128, 200, 1024)),  # align.cpp:21
            tokens=rng.choice((0, 1, 3, 64, 257, 1000)),
            top_k=rng.choice((1, 2, 4, 8, rng.randint(1, 32))),  # permute.cpp:35
            hidden=8 * rng.randint(1, 64),  # permute.cpp:33
            dtype=rng.choice((bf16, fp16)),  # permute.cpp:31
            invalid_ids=rng.random() < 0.4,
            weights=rng.random() < 0.7,
            shared=rng.random() < 0.5,
        )
        rows = int(kjit.moe.align_capacity(case.tokens * case.top_k, case.experts, case.block))
        if rows * case.hidden <= 1 << 24:
            break
    with replayable("dispatch", index, case):
        pairs = case.tokens * case.top_k
        ids = torch.randint(0, case.experts, (case.tokens, case.top_k), dtype=i32)
        if case.invalid_ids:  # documented: not placed, counted in invalid, positions -1
            outside = torch.tensor([-1, case.experts, case.experts + 5], dtype=i32)
            ids = torch.where(torch.rand(ids.shape) < 0.1, outside[torch.randint(0, 3, ids.shape)], ids)
        layout = kjit.moe.align(ids.cuda(), case.experts, case.block)
        for name, got, want in zip(
            ("sorted", "block_expert", "counts", "offsets", "invalid"),
            layout,
            align_reference(ids, case.experts, case.block),
        ):
            assert torch.equal(got.cpu(), want), f"align's {name} differs from its definition"
        sorted_ = layout[0]
        x = randn(case.tokens, case.hidden, dtype=case.dtype)
        x_sorted, positions = kjit.moe.permute(x, sorted_, case.top_k)
        pair = sorted_.long()
        holds = pair < pairs
        expected = torch.zeros(rows, case.hidden, dtype=case.dtype, device="cuda")
        expected[holds] = x[pair[holds] // case.top_k]
        expected_positions = torch.full((pairs,), -1, dtype=i32, device="cuda")
        expected_positions[pair[holds]] = torch.arange(rows, dtype=i32, device="cuda")[holds]
        assert torch.equal(x_sorted, expected), "permute's rows differ from x[sorted / k] (zeros for padding)"
        assert torch.equal(positions, expected_positions), "permute's positions differ from each pair's row"
        weights = torch.rand(case.tokens, case.top_k, device="cuda") if case.weights else None
        shared = randn(case.tokens, case.hidden, dtype=case.dtype) if case.shared else None
        out = kjit.moe.unpermute(x_sorted, positions, case.top_k, weights, shared)
        exact = torch.zeros(case.tokens, case.hidden, dtype=f64, device="cuda")
        if shared is not None:
            exact += shared.double()
        slots = positions.view(case.tokens, case.top_k).long()
        for j in range(case.top_k):
            placed = slots[:, j] >= 0
            scale = weights[placed, j, None].double() if weights is not None else 1.0
            exact[placed] += scale * x_sorted[slots[placed, j]].double()
        ref.fa_bound(out, exact, exact.to(case.dtype))


# ---- MoE: grouped GEMMs ------------------------------------------------------------------------

WEIGHTS = ("bf16", "fp16", "nvfp4", "mxfp4")


def expert_weights(kind, experts, rows, columns):
    """(w for kjit, its dense values for the references): randn [E, rows, columns] / sqrt(columns),
    16-bit or quantised to FP4 by kjit (test_gpu_moe.py checks the quantiser)."""
    w = randn(experts, rows, columns, dtype=fp16 if kind == "fp16" else bf16, std=columns**-0.5)
    if kind in ("bf16", "fp16"):
        return w, w
    fp4 = kjit.moe.quantize_experts_fp4(w, kind)
    return fp4, ref.dequantize_fp4(fp4.codes, fp4.scales, fp4.tensor_scale, kind)


def activation_dtype(kind):
    return fp16 if kind == "fp16" else bf16  # FP4 weights take bf16 (grouped_gemm.cpp:129)


def expert_products(x, dense, dtype, epilogue, row_weights=None):
    """(exact in fp64, low in `dtype`) of x [rows, K] through one expert's dense [N, K] and the
    epilogue, as test_gpu_moe.py's references: SwiGLU on interleaved gate and up columns, then the
    rows' routing weights."""
    exact, low = x.double() @ dense.double().t(), x @ dense.to(dtype).t()
    if epilogue == "swiglu":
        exact = F.silu(exact[:, 0::2]) * exact[:, 1::2]
        low = (F.silu(low[:, 0::2].float()) * low[:, 1::2].float()).to(dtype)
    if row_weights is not None:
        exact, low = exact * row_weights.double()[:, None], (low.float() * row_weights[:, None]).to(dtype)
    return exact, low


@pytest.mark.parametrize("index", range(5))
def test_grouped_gemm(index):
    """align's layout through the contiguous grouped GEMM, any N and K that are multiples of 64
    (grouped_gemm.cpp, MoeGemm::check), blocks of 64 or 128 (and 256 with FP4 weights over N a
    multiple of 128), every epilogue, 16-bit or FP4 weights; sorted and the pair weights passed
    with the other epilogues too (optional there)."""
    rng = case_rng("grouped_gemm", index)
    while True:
        case = SimpleNamespace(
            weights=rng.choice(WEIGHTS),
            experts=rng.choice((1, 2, 3, 8, 16, 64)),
            n=64 * rng.randint(1, 24),
            k=64 * rng.randint(1, 32),
            block=rng.choice((64, 128)),
            tokens=rng.choice((1, 2, 5, 40, 200, 600)),
            top_k=rng.randint(1, 8),
            epilogue=rng.choice(("plain", "swiglu", "routing_weights")),
            pass_pairs=rng.random() < 0.5,
        )
        if case.experts * case.n * case.k <= 1 << 24:
            break
    if case.weights in ("nvfp4", "mxfp4") and case.n % 128 == 0 and rng.random() < 0.3:
        case.block = 256
    with replayable("grouped_gemm", index, case):
        dtype, pairs = activation_dtype(case.weights), case.tokens * case.top_k
        w, dense = expert_weights(case.weights, case.experts, case.n, case.k)
        ids = torch.randint(0, case.experts, (case.tokens, case.top_k), dtype=i32, device="cuda")
        sorted_, block_expert, *_ = kjit.moe.align(ids, case.experts, case.block)
        x_sorted, _ = kjit.moe.permute(randn(case.tokens, case.k, dtype=dtype), sorted_, case.top_k)
        pair_weights = torch.rand(case.tokens, case.top_k, device="cuda")
        given = (sorted_, pair_weights) if case.epilogue == "routing_weights" or case.pass_pairs else (None, None)
        gemm = kjit.moe.grouped_gemm if case.weights in ("bf16", "fp16") else kjit.moe.expert_gemm_fp4
        y = gemm(x_sorted, block_expert, case.block, w, case.epilogue, *given)
        pair = sorted_.long()
        row_weights = torch.where(pair < pairs, pair_weights.flatten()[pair.clamp(max=pairs - 1)], 0.0)
        block_of_row = block_expert.repeat_interleave(case.block)
        for e in block_expert.unique().tolist():
            if e < 0:  # blocks past the padded total: not written
                continue
            rows = (block_of_row == e).nonzero().flatten()
            weighted = row_weights[rows] if case.epilogue == "routing_weights" else None
            with named(f"expert {e}"):
                ref.fa_bound(y[rows], *expert_products(x_sorted[rows], dense[e], dtype, case.epilogue, weighted))


@pytest.mark.parametrize("index", range(4))
def test_grouped_gemm_masked(index):
    """The masked layout: any rows an expert, masked_m 0 to past M (which counts as M), any
    expected_m, plain or SwiGLU (grouped_gemm.cpp:109), 16-bit or FP4 weights."""
    rng = case_rng("grouped_gemm_masked", index)
    while True:
        rows = rng.choice((1, 3, 8, 17, 64, 65, 128, 200))
        case = SimpleNamespace(
            weights=rng.choice(WEIGHTS),
            experts=rng.choice((1, 2, 5, 8, 16)),
            rows=rows,
            n=64 * rng.randint(1, 16),
            k=64 * rng.randint(1, 24),
            epilogue=rng.choice(("plain", "swiglu")),
            expected_m=rng.choice((0, rng.randint(1, rows))),
        )
        if case.experts * case.n * case.k <= 1 << 24:
            break
    with replayable("grouped_gemm_masked", index, case):
        dtype = activation_dtype(case.weights)
        w, dense = expert_weights(case.weights, case.experts, case.n, case.k)
        x = randn(case.experts, case.rows, case.k, dtype=dtype)
        masked_m = torch.randint(0, case.rows + 9, (case.experts,), dtype=i32)
        if case.weights in ("bf16", "fp16"):
            y = kjit.moe.grouped_gemm_masked(x, masked_m.cuda(), w, case.epilogue, case.expected_m)
        else:
            y = kjit.moe.expert_gemm_fp4_masked(x, masked_m.cuda(), w, case.epilogue, case.expected_m)
        for e, m in enumerate(masked_m.clamp(max=case.rows).tolist()):
            with named(f"expert {e}"):
                ref.fa_bound(y[e, :m], *expert_products(x[e, :m], dense[e], dtype, case.epilogue))


# ---- MoE: the op chain and the fused layer -----------------------------------------------------

HIDDEN = (64, 128, 192, 256, 320, 512, 704, 1024, 2048)  # multiples of 64 (layer.cpp:55)
INTERMEDIATE = (64, 128, 192, 256, 320, 448, 768, 1536)  # multiples of 64 (layer.cpp:55)


def draw_moe(rng, weights):
    """Any layer kjit takes (layer.cpp:23-62): H and I multiples of 64, E and the router as the
    router takes them, T from 0; the weights within 32 MiB, the pairs within a few thousand."""
    while True:
        experts = rng.choice((1, 2, 4, 7, 8, 16, 33, 64, 128, 256))
        case = SimpleNamespace(
            weights=weights,
            tokens=rng.choice((0, 1, 2, 3, 17, 64, 100, 300)),
            hidden=rng.choice(HIDDEN),
            experts=experts,
            inter=rng.choice(INTERMEDIATE),
            router=draw_router(rng, experts, most_top_k=8),
            bias_std=rng.choice((None, 0.01, 0.1, 1.0)),  # None: no correction bias
            block=rng.choice((0, 64, 128)),  # the layer's: 64, 128 or 0 (its choice); FP4: 256
            shared=rng.random() < 0.5,
        )
        if experts * 3 * case.inter * case.hidden <= 1 << 24:
            if weights in ("nvfp4", "mxfp4") and case.hidden % 128 == 0 and rng.random() < 0.25:
                case.block = 256
            return case


def moe_inputs(case):
    """(dtype, x, router logits, correction bias, shared expert's output) of a drawn layer."""
    dtype = activation_dtype(case.weights)
    x, logits = randn(case.tokens, case.hidden, dtype=dtype), randn(case.tokens, case.experts, dtype=f32)
    bias = randn(case.experts, dtype=f32, std=case.bias_std) if case.bias_std else None
    shared = randn(case.tokens, case.hidden, dtype=dtype) if case.shared else None
    return dtype, x, logits, bias, shared


@pytest.mark.parametrize("index", range(4))
def test_moe_op_chain(index):
    """router_topk, align, permute, the two grouped GEMMs and unpermute against a dense
    per-expert reference of kjit's routing (test_gpu_moe.py's op chain), and the fused layer."""
    rng = case_rng("moe_op_chain", index)
    case = draw_moe(rng, rng.choice(("bf16", "fp16")))
    case.chain_block = rng.choice((64, 128))
    with replayable("moe_op_chain", index, case):
        dtype, x, logits, bias, shared = moe_inputs(case)
        gate_up, _ = expert_weights(case.weights, case.experts, 2 * case.inter, case.hidden)
        down, _ = expert_weights(case.weights, case.experts, case.hidden, case.inter)
        ids, weights = kjit.moe.router_topk(logits, case.router, bias)
        sorted_, block_expert, counts, _, invalid = kjit.moe.align(ids, case.experts, case.chain_block)
        assert int(invalid) == 0
        assert torch.equal(counts.long(), torch.bincount(ids.flatten().long(), minlength=case.experts))
        x_sorted, positions = kjit.moe.permute(x, sorted_, case.router.top_k)
        h = kjit.moe.grouped_gemm(x_sorted, block_expert, case.chain_block, gate_up, "swiglu")
        y = kjit.moe.grouped_gemm(h, block_expert, case.chain_block, down, "routing_weights", sorted_, weights)
        chained = kjit.moe.unpermute(y, positions, case.router.top_k, shared=shared)
        exact, low = ref.moe(x, ids, weights, gate_up, down, f64), ref.moe(x, ids, weights, gate_up, down, dtype)
        if shared is not None:
            exact, low = exact + shared.double(), low + shared
        with named("the op chain"):
            ref.fa_bound(chained, exact, low)
        fused = kjit.moe.layer(x, logits, gate_up, down, case.router, bias, shared, case.block)
        with named("the fused layer"):
            ref.fa_bound(fused, exact, low)


@pytest.mark.parametrize("index", range(6))
def test_moe_layer(index):
    """The fused layer with 16-bit or FP4 experts against test_gpu_moe.py's reference (the dense
    or dequantised weights, kjit's routing), plus a shared expert's output."""
    rng = case_rng("moe_layer", index)
    case = draw_moe(rng, rng.choice(WEIGHTS))
    with replayable("moe_layer", index, case):
        dtype, x, logits, bias, shared = moe_inputs(case)
        gate_up, dense_gate_up = expert_weights(case.weights, case.experts, 2 * case.inter, case.hidden)
        down, dense_down = expert_weights(case.weights, case.experts, case.hidden, case.inter)
        layer = kjit.moe.layer if case.weights in ("bf16", "fp16") else kjit.moe.layer_fp4
        out = layer(x, logits, gate_up, down, case.router, bias, shared, case.block)
        ids, weights = kjit.moe.router_topk(logits, case.router, bias)
        exact = ref.moe(x, ids, weights, dense_gate_up, dense_down, f64)
        low = ref.moe(x, ids, weights, dense_gate_up, dense_down, dtype)
        if shared is not None:
            exact, low = exact + shared.double(), low + shared
        ref.fa_bound(out, exact, low)


# ---- what the validation refuses ---------------------------------------------------------------


def mla_decode_of(s_q=1, heads=16, block_size=64, lengths=(100,), blocks_per_sequence=2, width=576, entry=None):
    """kjit.mla.decode over a small paged cache, one part of it changed."""
    batch = len(lengths)
    cache = randn(batch * blocks_per_sequence, block_size, width)
    table = torch.arange(batch * blocks_per_sequence, dtype=i32).view(batch, -1)
    if entry is not None:
        table[0, 0] = entry
    lengths = torch.tensor(lengths, dtype=i32)
    return kjit.mla.decode(randn(batch, s_q, heads, width), cache, table.cuda(), lengths.cuda(), table, lengths)


def layer_of(hidden=128, inter=128, experts=4, top_k=2, dtype=bf16, fp4=None):
    """kjit.moe.layer (layer_fp4 with fp4 = its format) of 8 tokens, one part of it changed."""
    x, logits = randn(8, hidden, dtype=dtype), randn(8, experts, dtype=f32)
    gate_up, down = randn(experts, 2 * inter, hidden), randn(experts, hidden, inter)
    router = kjit.moe.Router(top_k=top_k)
    if fp4:
        fp4_up, fp4_down = (kjit.moe.quantize_experts_fp4(w, fp4) for w in (gate_up, down))
        return kjit.moe.layer_fp4(x, logits, fp4_up, fp4_down, router)
    return kjit.moe.layer(x, logits, gate_up.to(dtype), down.to(dtype), router)


def gemm_of(n=128, k=128, block=64):
    """kjit.moe.grouped_gemm over align's layout of 8 tokens, one part of it changed."""
    ids = torch.randint(0, 4, (8, 2), dtype=i32, device="cuda")
    sorted_, block_expert, *_ = kjit.moe.align(ids, 4, block)
    x_sorted = randn(sorted_.numel(), k)
    return kjit.moe.grouped_gemm(x_sorted, block_expert, block, randn(4, n, k))


def attention_of(dim=64, heads_q=4, heads_k=2, dtype=bf16, batch_k=1):
    """kjit.attention.forward of 33 queries over 40 keys, one part of it changed."""
    q, k = randn(1, 33, heads_q, dim, dtype=dtype), randn(batch_k, 40, heads_k, dim, dtype=dtype)
    return kjit.attention.forward(q, k, k)


def varlen_of(cu_seqlens, tokens=10):
    """kjit.attention.forward_varlen of `tokens` packed tokens described by cu_seqlens."""
    q, cu = randn(tokens, 2, 64), torch.tensor(cu_seqlens, dtype=i32)
    return kjit.attention.forward_varlen(q, q, q, cu.cuda(), cu.cuda(), cu, cu)


def router_of(experts=64, **router):
    """kjit.moe.router_topk of 10 tokens over `experts` with the router's fields given."""
    return kjit.moe.router_topk(randn(10, experts, dtype=f32), kjit.moe.Router(**router))


REFUSALS = {  # name: (call, what kjit's message says)
    "attention head dim 80": (lambda: attention_of(dim=80), "head dim 80 is not one of 64, 96, 128, 192, 256"),
    "attention head dim 32": (lambda: attention_of(dim=32), "head dim 32 is not one of"),
    "attention Hq 6 over Hk 4": (
        lambda: attention_of(heads_q=6, heads_k=4),
        "must be a positive multiple of key/value heads",
    ),
    "attention fp32": (lambda: attention_of(dtype=f32), "q must be fp16 or bf16"),
    "attention batches disagree": (lambda: attention_of(batch_k=2), "q, k and v must have the same batch size"),
    "varlen cu_seqlens past the tokens": (lambda: varlen_of([0, 4, 12]), "= 12 but the tensor holds 10 tokens"),
    "mla s_q 5": (lambda: mla_decode_of(s_q=5), "s_q (new tokens per sequence) must be 1 to 4, got 5"),
    "mla no heads": (lambda: mla_decode_of(heads=0), "q has 0 heads"),
    "mla blocks of 16": (lambda: mla_decode_of(block_size=16, lengths=(20,)), "cache blocks must hold 32 or 64 tokens"),
    "mla rows of 512": (lambda: mla_decode_of(width=512), "must be 576 wide"),
    "mla length past the table": (lambda: mla_decode_of(lengths=(129,)), "is outside the block table's 128 tokens"),
    "mla entry past the cache": (lambda: mla_decode_of(entry=2), "is outside the cache's 2 blocks"),
    "router 1025 experts": (lambda: router_of(experts=1025, top_k=4), "must be 1 to 1024, got 1025"),
    "router top 33": (lambda: router_of(top_k=33), "top_k must be 1 to min(32, E = 64), got 33"),
    "router top 0": (lambda: router_of(top_k=0), "top_k must be 1 to min(32, E = 64), got 0"),
    "router 5 groups of 64": (lambda: router_of(top_k=4, groups=5), "groups (5) must divide E (64)"),
    "router 64 groups": (lambda: router_of(experts=128, top_k=4, groups=64), "be at most 32"),
    "router top 9 of one kept group of 8": (
        lambda: router_of(top_k=9, groups=8, topk_groups=1),
        "top_k 9 is more than the 8 experts of the 1 kept groups",
    ),
    "align blocks of 2000": (
        lambda: kjit.moe.align(torch.zeros(4, 2, dtype=i32, device="cuda"), 8, 2000),
        "block must be 1 to 1024 rows",
    ),
    "permute hidden 20": (
        lambda: kjit.moe.permute(randn(4, 20), torch.zeros(64, dtype=i32, device="cuda"), 1),
        "the hidden size must be a multiple of 8",
    ),
    "gemm N 96": (lambda: gemm_of(n=96), "N must be a positive multiple of 64, got 96"),
    "gemm K 96": (lambda: gemm_of(k=96), "K must be a positive multiple of 64, got 96"),
    "gemm blocks of 32": (lambda: gemm_of(block=32), "block (align's) must be 64 or 128 rows, or 256 with FP4 weights, got 32"),
    "layer hidden 96": (lambda: layer_of(hidden=96), "H 96 and I 128 must be multiples of 64"),
    "layer intermediate 96": (lambda: layer_of(inter=96), "H 128 and I 96 must be multiples of 64"),
    "layer FP4 with fp16 x": (lambda: layer_of(dtype=fp16, fp4="nvfp4"), "FP4 weights take bf16 x"),
    "quantize 24 columns": (lambda: kjit.moe.quantize_fp4(randn(4, 24)), "w's 24 columns must be whole blocks of 16"),
    "merge 65 parts": (
        lambda: kjit.attention.merge_states(randn(65, 2, 2, 64), randn(65, 2, 2, dtype=f32)),
        "the number of parts (parts dim 0) must be in 1..64, got 65",
    ),
    "merge head dim 60": (
        lambda: kjit.attention.merge_states(randn(2, 2, 2, 60), randn(2, 2, 2, dtype=f32)),
        "head dim (parts dim 3) must be a multiple of 8 in 64..1024, got 60",
    ),
    "merge head dim 1032": (
        lambda: kjit.attention.merge_states(randn(2, 2, 2, 1032), randn(2, 2, 2, dtype=f32)),
        "head dim (parts dim 3) must be a multiple of 8 in 64..1024, got 1032",
    ),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_invalid_shapes_are_refused(name):
    """kjit's validation refuses the shape by name before any device work: nothing launched
    faults later, and the next call runs."""
    call, says = REFUSALS[name]
    with pytest.raises(kjit.InvalidArgumentError, match=re.escape(says)):
        call()
    torch.cuda.synchronize()
    out, _ = kjit.attention.forward(randn(1, 8, 2, 64), randn(1, 8, 2, 64), randn(1, 8, 2, 64))
    assert torch.isfinite(out).all()
