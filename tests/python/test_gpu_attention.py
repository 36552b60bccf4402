"""kjit's attention through the torch ops on the GPU, against torch references in fp64 with
FlashAttention's bound: forward (batched, GQA, bottom-right causal, empty rows), packed, grouped,
merge_states; autograd through flash_attn_func against the reference's autograd; opcheck of the
ops; torch.compile of a small model with no graph break, against eager."""

import pytest
import torch

import kjit
import references as ref

pytestmark = pytest.mark.gpu
bf16, fp16, i32 = torch.bfloat16, torch.float16, torch.int32


def randn(*shape, dtype=bf16, grad=False):
    return torch.randn(shape, dtype=dtype, device="cuda").requires_grad_(grad)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


FORWARD_CASES = [  # (batch, sq, sk, hq, hk, dim, causal, dtype)
    (2, 128, 128, 8, 8, 64, False, bf16),
    (2, 113, 203, 8, 2, 128, True, bf16),
    (1, 300, 77, 4, 1, 96, True, fp16),  # sq > sk, causal: the first rows see no key
    (3, 64, 512, 6, 3, 192, False, fp16),
    (1, 256, 256, 2, 2, 256, True, bf16),
]


@pytest.mark.parametrize("batch,sq,sk,hq,hk,dim,causal,dtype", FORWARD_CASES)
def test_forward(batch, sq, sk, hq, hk, dim, causal, dtype):
    q, k, v = (
        randn(batch, sq, hq, dim, dtype=dtype),
        randn(batch, sk, hk, dim, dtype=dtype),
        randn(batch, sk, hk, dim, dtype=dtype),
    )
    out, lse = kjit.attention.forward(q, k, v, causal=causal)
    ref_out, ref_lse = ref.attention(q, k, v, causal)
    low_out, _ = ref.attention(q, k, v, causal, dtype=dtype)
    ref.fa_bound(out, ref_out, low_out)
    seen = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), seen)
    torch.testing.assert_close(lse[seen], ref_lse[seen], atol=1e-3, rtol=1e-4)


def test_forward_reads_strided_views_without_a_copy():
    qkv = randn(2, 100, 3, 8, 64)  # a fused projection's output, q/k/v strided views of it
    q, k, v = qkv.unbind(2)
    out, _ = kjit.attention.forward(q, k, v, causal=True)
    ref_out, _ = ref.attention(q, k, v, True)
    ref.fa_bound(out, ref_out, ref.attention(q, k, v, True, dtype=bf16)[0])


def pack(lengths, heads, dim, dtype=bf16):
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=i32)
    return randn(int(cu[-1]), heads, dim, dtype=dtype), cu


@pytest.mark.parametrize("causal", [False, True])
def test_forward_varlen_matches_each_sequence(causal):
    q, cu_q = pack([17, 0, 130, 64], 8, 128)
    k, cu_k = pack([40, 5, 130, 1], 2, 128)
    v = torch.randn_like(k)
    out, lse = kjit.attention.forward_varlen(q, k, v, cu_q.cuda(), cu_k.cuda(), cu_q, cu_k, causal=causal)
    assert lse.shape == (8, q.shape[0])
    for b in range(4):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        if cu_q[b] == cu_q[b + 1]:
            continue
        ref_out, ref_lse = ref.attention(q[None, qs], k[None, ks], v[None, ks], causal)
        low_out, _ = ref.attention(q[None, qs], k[None, ks], v[None, ks], causal, dtype=bf16)
        ref.fa_bound(out[None, qs], ref_out, low_out)
        seen = torch.isfinite(ref_lse[0])
        torch.testing.assert_close(lse[:, qs][seen], ref_lse[0][seen], atol=1e-3, rtol=1e-4)


def test_grouped_forward_matches_varlen_over_each_window():
    k, cu_k = pack([96, 160], 2, 64)
    v = torch.randn_like(k)
    groups = []
    for lengths, windows in (([32, 48], [[0, 64], [0, 160]]), ([16, 0], [[30, 96], [0, 0]])):
        q, cu_q = pack(lengths, 8, 64)
        w = torch.tensor(windows, dtype=i32)
        groups.append(kjit.attention.QueryGroup(q, cu_q.cuda(), w.cuda(), cu_q, w))
    outs, lses = kjit.attention.grouped_forward(groups, k, v, cu_k.cuda(), cu_k, causal=True)
    for g, group in enumerate(groups):
        for b in range(2):
            qs = slice(group.host_cu_seqlens_q[b], group.host_cu_seqlens_q[b + 1])
            begin, end = (int(cu_k[b]) + int(x) for x in group.host_windows[b])
            if qs.start == qs.stop:
                continue
            ref_out, _ = ref.attention(group.q[None, qs], k[None, begin:end], v[None, begin:end], True)
            low_out, _ = ref.attention(group.q[None, qs], k[None, begin:end], v[None, begin:end], True, dtype=bf16)
            ref.fa_bound(outs[g][None, qs], ref_out, low_out)


def test_merge_states_of_two_halves_is_the_whole():
    q, k, v = randn(1, 64, 4, 128), randn(1, 200, 4, 128), randn(1, 200, 4, 128)
    halves = [ref.attention(q, k[:, s], v[:, s], False, dtype=torch.float32) for s in (slice(0, 90), slice(90, 200))]
    parts = torch.stack([h[0][0] for h in halves])  # [2, T, H, D]
    parts_lse = torch.stack([h[1][0].transpose(0, 1) for h in halves]).contiguous()  # [2, T, H]
    out, lse = kjit.attention.merge_states(parts, parts_lse)
    whole, whole_lse = ref.attention(q, k, v, False)
    torch.testing.assert_close(out.double(), whole[0], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(lse, whole_lse[0].transpose(0, 1), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("causal,deterministic", [(False, False), (True, True)])
def test_autograd_against_the_references_autograd(causal, deterministic):
    q, k, v = randn(2, 96, 8, 64, grad=True), randn(2, 150, 4, 64, grad=True), randn(2, 150, 4, 64, grad=True)
    dout = randn(2, 96, 8, 64)
    out = kjit.flash_attn_func(q, k, v, causal=causal, deterministic=deterministic)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref_in = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref_grads = torch.autograd.grad(ref.attention(*ref_in, causal)[0], ref_in, dout.double())
    low_in = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    low_grads = torch.autograd.grad(ref.attention(*low_in, causal, dtype=bf16)[0], low_in, dout)
    for ours, exact, low in zip(grads, ref_grads, low_grads):
        ref.fa_bound(ours, exact, low)
    if deterministic:
        again = torch.autograd.grad(kjit.flash_attn_func(q, k, v, causal=causal, deterministic=True), (q, k, v), dout)
        assert all(torch.equal(a, b) for a, b in zip(grads, again))


def test_varlen_autograd_against_the_references_autograd():
    q, cu = pack([64, 64], 4, 128)  # two sequences of 64: the reference sees them as a batch
    k, v = torch.randn_like(q), torch.randn_like(q)
    packed = [t.clone().requires_grad_() for t in (q, k, v)]
    dout = randn(128, 4, 128)
    out = kjit.flash_attn_varlen_func(
        *packed, cu.cuda(), cu.cuda(), 64, 64, causal=True, host_cu_seqlens_q=cu, host_cu_seqlens_k=cu
    )
    grads = torch.autograd.grad(out, packed, dout)
    batched = lambda t, dtype: t.detach().view(2, 64, 4, 128).to(dtype).requires_grad_()  # noqa: E731
    ref_in, low_in = [batched(t, torch.float64) for t in (q, k, v)], [batched(t, bf16) for t in (q, k, v)]
    ref_grads = torch.autograd.grad(ref.attention(*ref_in, True)[0], ref_in, dout.view(2, 64, 4, 128).double())
    low_grads = torch.autograd.grad(ref.attention(*low_in, True, dtype=bf16)[0], low_in, dout.view(2, 64, 4, 128))
    for ours, exact, low in zip(grads, ref_grads, low_grads):
        ref.fa_bound(ours.view(exact.shape), exact, low)


def test_opcheck():
    q, k = randn(1, 64, 4, 64), randn(1, 80, 2, 64)
    torch.library.opcheck(torch.ops.kjit.attention_forward.default, (q, k, k, 0.0, True, False))
    out, lse = torch.empty_like(q), torch.empty(1, 4, 64, device="cuda")
    torch.library.opcheck(torch.ops.kjit.attention_forward_out.default, (q, k, k, out, lse, 0.0, True))
    parts, lse = randn(2, 10, 4, 64, dtype=torch.float32), randn(2, 10, 4, dtype=torch.float32)
    torch.library.opcheck(torch.ops.kjit.merge_states.default, (parts, lse))
    merged, merged_lse = parts.new_empty(parts.shape[1:]), lse.new_empty(lse.shape[1:])
    torch.library.opcheck(torch.ops.kjit.merge_states_out.default, (parts, lse, merged, merged_lse))


def test_outputs_given_are_written_as_the_allocated_ones():
    """out= writes what the allocating call returns, bit for bit, bumps the outputs' versions (as
    the dispatcher does for a mutated argument) and allocates nothing."""
    q, k, v = randn(2, 100, 8, 64), randn(2, 130, 2, 64), randn(2, 130, 2, 64)
    out, lse = kjit.attention.forward(q, k, v, causal=True)
    given, given_lse = torch.full_like(out, float("nan")), torch.full_like(lse, float("nan"))
    versions = given._version, given_lse._version
    assert kjit.attention.forward(q, k, v, causal=True, out=given, lse=given_lse) == (given, given_lse)
    assert torch.equal(given, out) and torch.equal(given_lse, lse)
    assert (given._version, given_lse._version) > versions
    only_out = torch.full_like(out, float("nan"))
    assert kjit.attention.forward(q, k, v, causal=True, out=only_out)[1] is None and torch.equal(only_out, out)
    with pytest.raises(kjit.InvalidArgumentError, match="record no autograd"):
        kjit.attention.forward(q.requires_grad_(), k, v, out=given)
    parts, parts_lse = randn(3, 20, 4, 128), randn(3, 20, 4, dtype=torch.float32)
    merged, merged_lse = kjit.attention.merge_states(parts, parts_lse)
    given, given_lse = torch.full_like(merged, float("nan")), torch.full_like(merged_lse, float("nan"))
    kjit.attention.merge_states(parts, parts_lse, out=given, out_lse=given_lse)
    assert torch.equal(given, merged) and torch.equal(given_lse, merged_lse)


class TinyAttentionModel(torch.nn.Module):
    def __init__(self, dim=256, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim, bias=False, dtype=bf16, device="cuda")
        self.proj = torch.nn.Linear(dim, dim, bias=False, dtype=bf16, device="cuda")

    def forward(self, x):
        batch, seq, dim = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.heads, dim // self.heads).unbind(2)
        return self.proj(kjit.flash_attn_func(q, k, v, causal=True).reshape(batch, seq, dim))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_of_a_small_model(backend):
    torch._dynamo.reset()
    model = TinyAttentionModel()
    x = randn(2, 128, 256)
    eager_out = model(x)
    eager_grads = torch.autograd.grad(eager_out.float().square().mean(), list(model.parameters()))
    compiled = torch.compile(model, backend=backend, fullgraph=True)  # a graph break raises
    out = compiled(x)
    grads = torch.autograd.grad(out.float().square().mean(), list(model.parameters()))
    torch.testing.assert_close(out, eager_out, atol=2e-2, rtol=2e-2)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=5e-2)


class PassThrough(torch.utils._python_dispatch.TorchDispatchMode):
    """A dispatch mode that changes nothing but records the ops: under it the ops go through
    torch's dispatcher."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_direct_call_matches_the_dispatched_one():
    from kjit import _native
    from kjit._launch import _QUERIES

    def direct(args):
        return _native.direct(_QUERIES, torch.is_grad_enabled, args)

    q, k = randn(1, 100, 8, 64), randn(1, 100, 2, 64)
    assert direct((q, k)) and not direct((q.requires_grad_(),)) and not direct((q.detach().cpu(),))
    q = q.detach()
    out, lse = kjit.attention.forward(q, k, k, causal=True)
    given, given_lse = torch.empty_like(out), torch.empty_like(lse)
    versions = given._version, given_lse._version
    kjit.attention.forward(q, k, k, causal=True, out=given, lse=given_lse)
    assert (given._version, given_lse._version) == (versions[0] + 1, versions[1] + 1)  # bumped as dispatched
    with PassThrough() as mode:
        assert not direct((q,))
        dispatched_out, dispatched_lse = kjit.attention.forward(q, k, k, causal=True)
    assert "kjit.attention_forward.default" in mode.seen
    assert torch.equal(out, dispatched_out) and torch.equal(lse, dispatched_lse)
    assert torch.equal(out, given) and torch.equal(lse, given_lse)


def test_grouped_autograd_against_the_references_autograd():
    k, cu_k = pack([96, 160], 2, 64)
    v = torch.randn_like(k)
    layouts = (([32, 48], [[0, 64], [0, 160]]), ([16, 40], [[30, 96], [100, 160]]))  # windows overlap
    groups, douts = [], []
    for lengths, windows in layouts:
        q, cu_q = pack(lengths, 8, 64)
        w = torch.tensor(windows, dtype=i32)
        groups.append(kjit.attention.QueryGroup(q.requires_grad_(), cu_q.cuda(), w.cuda(), cu_q, w))
        douts.append(torch.randn_like(q))
    k.requires_grad_(), v.requires_grad_()
    outs, _ = kjit.attention.grouped_forward(groups, k, v, cu_k.cuda(), cu_k, causal=True)
    grads = torch.autograd.grad(outs, [g.q for g in groups] + [k, v], douts)

    def reference(dtype):
        qs = [g.q.detach().to(dtype).requires_grad_() for g in groups]
        kr, vr = (t.detach().to(dtype).requires_grad_() for t in (k, v))
        loss = 0
        for g, group in enumerate(groups):
            for b in range(2):
                rows = slice(int(group.host_cu_seqlens_q[b]), int(group.host_cu_seqlens_q[b + 1]))
                begin, end = (int(cu_k[b]) + int(x) for x in group.host_windows[b])
                out, _ = ref.attention(qs[g][None, rows], kr[None, begin:end], vr[None, begin:end], True, dtype=dtype)
                loss = loss + (out[0].double() * douts[g][rows].double()).sum()
        return torch.autograd.grad(loss, qs + [kr, vr])

    for ours, exact, low in zip(grads, reference(torch.float64), reference(bf16)):
        ref.fa_bound(ours, exact, low)
