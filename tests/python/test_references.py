"""The GPU tests' torch references, checked on the CPU against torch's own ops: a wrong reference
would pass or fail kjit for the wrong reason."""

import torch
import torch.nn.functional as F

import kjit
import references as ref


def test_attention_reference_is_sdpa_with_gqa_and_bottom_right_causal():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 4, 16), torch.randn(2, 9, 2, 16), torch.randn(2, 9, 2, 16)
    out, lse = ref.attention(q, k, v, causal=True)
    mask = torch.ones(5, 9, dtype=torch.bool).tril(diagonal=9 - 5)  # bottom-right aligned
    expect = F.scaled_dot_product_attention(
        q.double().transpose(1, 2),
        k.double().repeat_interleave(2, 2).transpose(1, 2),
        v.double().repeat_interleave(2, 2).transpose(1, 2),
        attn_mask=mask,
    )
    torch.testing.assert_close(out, expect.transpose(1, 2))
    scores = q.double().transpose(1, 2) @ k.double().repeat_interleave(2, 2).permute(0, 2, 3, 1) / 4
    torch.testing.assert_close(lse, scores.masked_fill(~mask, float("-inf")).logsumexp(-1).float())
    out, lse = ref.attention(torch.randn(1, 6, 2, 16), k[:1, :3], v[:1, :3], causal=True)  # rows 0-2 see no key
    assert torch.equal(out[0, :3], torch.zeros(3, 2, 16, dtype=out.dtype)) and torch.isinf(lse[0, :, :3]).all()


def test_mla_reference_is_attention_over_the_gathered_cache():
    torch.manual_seed(0)
    cache = torch.randn(6, 4, 576)
    table = torch.tensor([[5, 0, 3], [1, 2, 4]], dtype=torch.int32)
    lengths = torch.tensor([10, 3])
    q = torch.randn(2, 2, 3, 576)
    out, lse = ref.mla_decode(q, cache, table, lengths, 0.1)
    for b in range(2):
        keys = cache[table[b].long()].reshape(-1, 576)[: lengths[b]]
        expect, expect_lse = ref.attention(
            q[b : b + 1], keys[None, :, None], keys[None, :, None, :512].contiguous(), True, 0.1
        )
        torch.testing.assert_close(out[b], expect[0][..., :512])
        torch.testing.assert_close(lse[b].float(), expect_lse[0].transpose(0, 1))


def test_route_and_moe_references():
    torch.manual_seed(0)
    logits, bias = torch.randn(5, 8), torch.randn(8) * 0.1
    ids, weights = ref.route(logits, kjit.moe.GLM_4_7_FLASH, bias)
    for t in range(5):
        scores = torch.sigmoid(logits[t])
        chosen = (scores + bias).topk(4).indices
        assert torch.equal(ids[t].long(), chosen)
        torch.testing.assert_close(weights[t], scores[chosen] / scores[chosen].sum() * 1.8)
    x, gate_up, down = torch.randn(5, 16), torch.randn(8, 12, 16), torch.randn(8, 16, 6)
    out = ref.moe(x, ids, weights, gate_up, down, torch.float64)
    for t in range(5):
        expect = sum(
            weights[t, j].double()
            * (
                down[e].double()
                @ (F.silu(gate_up[e, 0::2].double() @ x[t].double()) * (gate_up[e, 1::2].double() @ x[t].double()))
            )
            for j, e in enumerate(ids[t].tolist())
        )
        torch.testing.assert_close(out[t], expect, rtol=1e-5, atol=1e-5)  # the reference rounds h to x's fp32


def test_fp4_dequantisation_reference():
    codes = torch.tensor([[0x71, 0xF8]], dtype=torch.uint8)  # elements 1, 6 | -0, -6 (low nibble first)
    scales = torch.tensor([[0x38]], dtype=torch.uint8)  # E4M3 0x38 = 1.0
    values = ref.dequantize_fp4(codes, scales, torch.tensor([0.5]), "nvfp4")
    assert values.tolist() == [[0.25, 3.0, -0.0, -3.0]]
    values = ref.dequantize_fp4(codes, torch.tensor([[128]], dtype=torch.uint8), None, "mxfp4")  # 2^1
    assert values.tolist() == [[1.0, 12.0, -0.0, -12.0]]
