"""The fake implementations on the CPU machine: every op's outputs have the right shapes and
dtypes under FakeTensorMode on a (fake) CUDA device, torch.compile traces a model using kjit's ops
in one graph, and autograd through kjit's attention traces to kjit's backward."""

import types

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx

import kjit

bf16, f32, i32, u8 = torch.bfloat16, torch.float32, torch.int32, torch.uint8


def cuda(*shape, dtype=bf16):
    return torch.empty(shape, dtype=dtype, device="cuda")


def host(*shape):
    return torch.empty(shape, dtype=i32)


def spec(t):
    return tuple(t.shape), t.dtype, t.device.type


def test_attention_shapes():
    with FakeTensorMode():
        q, k = cuda(2, 100, 16, 128), cuda(2, 300, 4, 128)
        out, lse = kjit.attention.forward(q, k, k, causal=True)
        assert spec(out) == ((2, 100, 16, 128), bf16, "cuda") and spec(lse) == ((2, 16, 100), f32, "cuda")
        dq, dk, dv = kjit.attention.backward(out, q, k, k, out, lse)
        assert spec(dq) == spec(q) and spec(dk) == spec(k) and spec(dv) == spec(k)

        q, k, cu = cuda(300, 16, 64, dtype=torch.float16), cuda(500, 2, 64, dtype=torch.float16), cuda(4, dtype=i32)
        out, lse = kjit.attention.forward_varlen(q, k, k, cu, cu, host(4), host(4))
        assert spec(out) == ((300, 16, 64), torch.float16, "cuda") and spec(lse) == ((16, 300), f32, "cuda")
        grads = kjit.attention.backward_varlen(out, q, k, k, out, lse, cu, cu, host(4), host(4), deterministic=True)
        assert [spec(g) for g in grads] == [spec(q), spec(k), spec(k)]

        groups = [
            kjit.attention.QueryGroup(cuda(n, 16, 64), cuda(3, dtype=i32), cuda(2, 2, dtype=i32), host(3), host(2, 2))
            for n in (40, 70)
        ]
        k = cuda(200, 4, 64)
        outs, lses = kjit.attention.grouped_forward(groups, k, k, cuda(3, dtype=i32), host(3), causal=True)
        assert [spec(o) for o in outs] == [((40, 16, 64), bf16, "cuda"), ((70, 16, 64), bf16, "cuda")]
        assert [spec(l) for l in lses] == [((16, 40), f32, "cuda"), ((16, 70), f32, "cuda")]
        dqs, dk, dv = kjit.attention.grouped_backward(groups, outs, outs, lses, k, k, cuda(3, dtype=i32), host(3))
        assert [spec(d) for d in dqs] == [spec(o) for o in outs] and spec(dk) == spec(k) == spec(dv)

        out, lse = kjit.attention.merge_states(cuda(3, 10, 8, 128, dtype=f32), cuda(3, 10, 8, dtype=f32))
        assert spec(out) == ((10, 8, 128), f32, "cuda") and spec(lse) == ((10, 8), f32, "cuda")

        out, lse = kjit.mla.decode(
            cuda(4, 2, 20, 576), cuda(64, 64, 576), cuda(4, 16, dtype=i32), cuda(4, dtype=i32), host(4, 16), host(4)
        )
        assert spec(out) == ((4, 2, 20, 512), bf16, "cuda") and spec(lse) == ((4, 2, 20), f32, "cuda")

        rank_1_of_3 = types.SimpleNamespace(handle=0, rank=1, size=3)  # heads [6, 13) of 20
        out, lse = kjit.mla.helix_decode(
            rank_1_of_3,
            cuda(4, 1, 20, 576),
            cuda(64, 64, 576),
            cuda(4, 16, dtype=i32),
            cuda(4, dtype=i32),
            host(4, 16),
            host(4),
        )
        assert spec(out) == ((4, 1, 7, 512), bf16, "cuda") and spec(lse) == ((4, 1, 7), f32, "cuda")


def test_moe_shapes():
    tokens, experts, hidden, inter, block = 37, 64, 256, 128, 64
    router = kjit.moe.GLM_4_7_FLASH
    with FakeTensorMode():
        x, logits = cuda(tokens, hidden), cuda(tokens, experts, dtype=f32)
        ids, weights = kjit.moe.router_topk(logits, router, cuda(experts, dtype=f32))
        assert spec(ids) == ((tokens, 4), i32, "cuda") and spec(weights) == ((tokens, 4), f32, "cuda")
        sorted_, block_expert, counts, offsets, invalid = kjit.moe.align(ids, experts, block)
        rows = kjit.moe.align_capacity(tokens * 4, experts, block)
        assert [spec(t) for t in (sorted_, block_expert, counts, offsets, invalid)] == [
            ((rows,), i32, "cuda"),
            ((rows // block,), i32, "cuda"),
            ((experts,), i32, "cuda"),
            ((experts + 1,), i32, "cuda"),
            ((1,), i32, "cuda"),
        ]
        x_sorted, positions = kjit.moe.permute(x, sorted_, 4)
        assert spec(x_sorted) == ((rows, hidden), bf16, "cuda") and spec(positions) == ((tokens * 4,), i32, "cuda")
        gate_up, down = cuda(experts, 2 * inter, hidden), cuda(experts, hidden, inter)
        h = kjit.moe.grouped_gemm(x_sorted, block_expert, block, gate_up, "swiglu")
        assert spec(h) == ((rows, inter), bf16, "cuda")
        y = kjit.moe.grouped_gemm(h, block_expert, block, down, "routing_weights", sorted_, weights)
        assert spec(y) == ((rows, hidden), bf16, "cuda")
        assert spec(kjit.moe.unpermute(y, positions, 4)) == ((tokens, hidden), bf16, "cuda")

        codes, scales, tensor_scale = kjit.moe.quantize_fp4(cuda(2 * inter, hidden), "mxfp4")
        assert spec(codes) == ((2 * inter, hidden // 2), u8, "cuda") and spec(scales) == (
            (2 * inter, hidden // 32),
            u8,
            "cuda",
        )
        fp4 = kjit.moe.Fp4Weights(
            "nvfp4",
            cuda(experts, 2 * inter, hidden // 2, dtype=u8),
            cuda(experts, 2 * inter, hidden // 16, dtype=u8),
            cuda(experts, dtype=f32),
        )
        assert spec(kjit.moe.expert_gemm_fp4(x_sorted, block_expert, block, fp4, "swiglu")) == (
            (rows, inter),
            bf16,
            "cuda",
        )
        masked_x, masked_m = cuda(experts, 8, hidden), cuda(experts, dtype=i32)
        assert spec(kjit.moe.grouped_gemm_masked(masked_x, masked_m, gate_up)) == (
            (experts, 8, 2 * inter),
            bf16,
            "cuda",
        )
        assert spec(kjit.moe.expert_gemm_fp4_masked(masked_x, masked_m, fp4, "swiglu")) == (
            (experts, 8, inter),
            bf16,
            "cuda",
        )

        stats = kjit.moe.balance(ids, cuda(tokens, experts, dtype=f32), logits)
        assert [spec(t) for t in stats] == [((experts,), i32, "cuda")] + [((experts,), f32, "cuda")] * 2 + [
            ((4,), f32, "cuda")
        ]
        out = kjit.moe.layer(x, logits, gate_up, down, router, shared=x)
        assert spec(out) == spec(x)


class GraphRecorder:
    """A torch.compile backend that keeps the graphs dynamo hands it and runs none of them: the
    outputs are zeros of the traced shapes (the kernels need a GPU; tracing does not)."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake_outputs = gm(*[mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in example_inputs])

        def run(*args):
            return type(fake_outputs)(torch.zeros(o.shape, dtype=o.dtype) for o in fake_outputs)

        return run

    def ops(self):
        return [str(n.target) for gm in self.graphs for n in gm.graph.nodes if n.op == "call_function"]


class TinyBlock(torch.nn.Module):
    """Attention with kjit, then the MoE ops: what a model's block calls."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(64, 3 * 64, bias=False)

    def forward(self, x, cu, host_cu):
        q, k, v = self.qkv(x).view(-1, 3, 1, 64).unbind(1)
        out = kjit.flash_attn_varlen_func(
            q, k, v, cu, cu, 0, 0, causal=True, host_cu_seqlens_q=host_cu, host_cu_seqlens_k=host_cu
        )
        ids, weights = kjit.moe.router_topk(out.view(-1, 64).float(), kjit.moe.Router(top_k=2))
        return out.sum() + weights.sum()


def test_torch_compile_traces_kjit_ops_in_one_graph():
    recorder = GraphRecorder()
    block = TinyBlock()
    compiled = torch.compile(block, backend=recorder, fullgraph=True)  # a graph break raises
    x = torch.randn(24, 64)
    cu = torch.tensor([0, 10, 24], dtype=i32)
    compiled(x, cu, cu.clone())
    assert len(recorder.graphs) == 1
    ops = recorder.ops()
    for op in ("kjit.attention_forward_varlen", "kjit.moe_router_topk"):
        assert any(traced.startswith(op) for traced in ops), ops


def test_torch_compile_traces_the_out_variants_in_one_graph():
    def step(q, k, v, out, logits, ids, weights):
        kjit.attention.forward(q, k, v, causal=True, out=out)
        kjit.moe.router_topk(logits, kjit.moe.GLM_4_7_FLASH, out=(ids, weights))
        return out.sum() + weights.sum()

    recorder = GraphRecorder()
    compiled = torch.compile(step, backend=recorder, fullgraph=True)  # a graph break raises
    q, logits = torch.randn(1, 16, 4, 64, dtype=bf16), torch.randn(8, 64)
    args = (q, q, q, torch.empty_like(q), logits, torch.empty(8, 4, dtype=i32), torch.empty(8, 4))
    compiled(*args)
    assert len(recorder.graphs) == 1
    ops = recorder.ops()
    for op in ("kjit.attention_forward_out", "kjit.moe_router_topk_out"):
        assert any(traced.startswith(op) for traced in ops), ops


def test_autograd_traces_to_kjits_backward():
    def loss_and_grads(q, k, v):
        out = kjit.flash_attn_func(q, k, v, causal=True, deterministic=True)
        return torch.autograd.grad(out.float().square().sum(), (q, k, v))

    q, k = torch.randn(1, 32, 4, 64, dtype=bf16), torch.randn(1, 48, 2, 64, dtype=bf16)
    traced = make_fx(loss_and_grads, tracing_mode="fake")(
        q.requires_grad_(), k.requires_grad_(), k.clone().requires_grad_()
    )
    calls = {str(n.target): n for n in traced.graph.nodes if n.op == "call_function"}
    assert "kjit.attention_forward.default" in calls and "kjit.attention_backward.default" in calls, list(calls)
    backward = calls["kjit.attention_backward.default"]
    assert backward.args[-2:] == (True, True)  # causal and deterministic reach the backward


def test_torch_compile_traces_the_moe_module_in_one_graph():
    recorder = GraphRecorder()
    layer = kjit.moe.MoELayer(
        128,
        8,
        64,
        router=kjit.moe.Router(top_k=2, sigmoid=True, renormalize=True),
        shared_intermediate_size=64,
        track_stats=True,
    )
    with torch.no_grad():
        torch.compile(layer, backend=recorder, fullgraph=True)(torch.randn(5, 128, dtype=bf16))
    assert len(recorder.graphs) == 1
    ops = recorder.ops()
    for op in ("kjit.moe_layer", "kjit.moe_router_topk", "kjit.moe_balance"):
        assert any(traced.startswith(op) for traced in ops), ops


def test_moe_module_keeps_its_fp32_tensors_and_saves_fp4_experts():
    # On the meta device (the fakes serve it too): FakeTensorMode cannot swap a module's
    # parameters, which .half() does.
    meta = lambda *shape: torch.empty(shape, dtype=bf16, device="meta")  # noqa: E731
    layer = kjit.moe.MoELayer(256, 8, 128, shared_intermediate_size=128, device="meta")
    with pytest.raises(kjit.InvalidArgumentError, match="inference only"):
        layer(meta(3, 256))  # its parameters require grad: autograd would record the call
    layer.requires_grad_(False)
    assert spec(layer(meta(3, 256))) == ((3, 256), bf16, "meta")
    layer.to_fp4("nvfp4")
    with pytest.raises(kjit.InvalidArgumentError, match="already nvfp4"):
        layer.to_fp4("mxfp4")
    layer.half()  # the router, its bias and the tensor scales stay fp32
    assert layer.gate.weight.dtype == f32 and layer.e_score_correction_bias.dtype == f32
    assert layer.shared_expert.gate_proj.weight.dtype == torch.float16
    gate_up, down = layer.fp4
    assert spec(gate_up.codes) == ((8, 256, 128), u8, "meta") and spec(down.scales) == ((8, 256, 8), u8, "meta")
    assert spec(gate_up.tensor_scale) == ((8,), f32, "meta") and down.tensor_scale.dtype == f32
    assert {"gate_up_codes", "gate_up_scales", "gate_up_tensor_scale", "down_codes"} <= set(layer.state_dict())
    assert "gate_up" not in layer.state_dict()


def test_grouped_autograd_traces_to_the_grouped_backward():
    def grads(q0, q1, k, v):
        cu, windows = torch.tensor([0, 16], dtype=i32), torch.tensor([[0, 24]], dtype=i32)
        groups = [kjit.attention.QueryGroup(q, cu, windows, cu, windows) for q in (q0, q1)]
        outs, _ = kjit.attention.grouped_forward(groups, k, v, torch.tensor([0, 24], dtype=i32), causal=True)
        return torch.autograd.grad(sum(o.float().sum() for o in outs), (q0, q1, k, v))

    q0, q1 = (torch.randn(16, 4, 64, dtype=bf16, requires_grad=True) for _ in range(2))
    k, v = (torch.randn(24, 2, 64, dtype=bf16, requires_grad=True) for _ in range(2))
    traced = make_fx(grads, tracing_mode="fake")(q0, q1, k, v)
    targets = [str(n.target) for n in traced.graph.nodes if n.op == "call_function"]
    assert "kjit.attention_forward_grouped.default" in targets, targets
    assert "kjit.attention_backward_grouped.default" in targets, targets
    shapes = [tuple(n.meta["val"].shape) for n in traced.graph.nodes if n.op == "output" for n in n.args[0]]
    assert shapes == [(16, 4, 64), (16, 4, 64), (24, 2, 64), (24, 2, 64)]


def test_zigzag_shapes_and_autograd():
    rank_1_of_4 = types.SimpleNamespace(handle=0, rank=1, size=4)
    with FakeTensorMode():
        # 2304 global tokens over W = 4: 576 local ones, chunks of 288 tokens in all.
        cu, gathered = cuda(4, dtype=i32), cuda(2304, 8, 128)
        assert spec(kjit.zigzag.extract_kv_slice(gathered, cu, 4, 0, 5, host(4))) == ((1440, 8, 128), bf16, "cuda")
        grad = cuda(1440, 8, 128)
        every = kjit.zigzag.scatter_grad_to_zigzag(grad, cu, 4, 0, 5, host_cu_seqlens=host(4))
        assert spec(every) == ((2304, 8, 128), bf16, "cuda")
        assert spec(kjit.zigzag.shard(gathered, cu, 4, 2, host(4))) == ((576, 8, 128), bf16, "cuda")
        assert spec(kjit.zigzag.unshard(gathered, cu, 4, host(4))) == ((2304, 8, 128), bf16, "cuda")
        q, k = cuda(576, 32, 128), cuda(576, 8, 128)
        out, lse = kjit.zigzag.forward(rank_1_of_4, q, k, k, cu, host(4), heads_k_stride=2)
        assert spec(out) == ((576, 32, 128), bf16, "cuda") and spec(lse) == ((32, 576), f32, "cuda")
        grads = kjit.zigzag.backward(rank_1_of_4, out, q, k, k, out, lse, cu, host(4))
        assert [spec(g) for g in grads] == [spec(q), spec(k), spec(k)]

    def grads(q, k, v):
        cu = torch.tensor([0, 32], dtype=i32)
        out = kjit.zigzag.attention(rank_1_of_4, q, k, v, cu, cu, heads_k_stride=1)
        return torch.autograd.grad(out.float().sum(), (q, k, v))

    q, k = torch.randn(8, 4, 64, dtype=bf16, requires_grad=True), torch.randn(8, 2, 64, dtype=bf16)
    traced = make_fx(grads, tracing_mode="fake")(q, k.requires_grad_(), k.clone().requires_grad_())
    calls = {str(n.target): n for n in traced.graph.nodes if n.op == "call_function"}
    assert "kjit.zigzag_forward.default" in calls and "kjit.zigzag_backward.default" in calls, list(calls)
    assert calls["kjit.zigzag_backward.default"].args[-1] == 1  # heads_k_stride reaches the backward
    # Collectives stay in a compiled graph even where their outputs go unused.
    for name in ("zigzag_forward", "zigzag_backward"):
        assert getattr(torch.ops.kjit, name).default in torch.fx.node._side_effectful_functions
