"""Torch references for the GPU tests: attention (batched, GQA, bottom-right causal), MLA decode
over a paged cache, the MoE layer's math, FP4 dequantisation, and FlashAttention's error bound."""

import torch
import torch.nn.functional as F


def attention(q, k, v, causal, scale=None, dtype=torch.float64):
    """(out [B, Sq, Hq, D], lse [B, Hq, Sq]) of q [B, Sq, Hq, D], k/v [B, Sk, Hk, D], computed in
    `dtype` (the input dtype gives the low-precision reference of FlashAttention's bound). A row
    that sees no key gives out 0, lse -inf."""
    batch, sq, hq, dim = q.shape
    sk, hk = k.shape[1], k.shape[2]
    scale = dim**-0.5 if scale is None else scale
    qq = q.to(dtype).transpose(1, 2)
    kk = k.to(dtype).repeat_interleave(hq // hk, dim=2).transpose(1, 2)
    vv = v.to(dtype).repeat_interleave(hq // hk, dim=2).transpose(1, 2)
    s = (qq @ kk.transpose(-1, -2)) * scale
    if causal:  # bottom-right: row i sees keys j <= i + sk - sq
        rows = torch.arange(sq, device=q.device)[:, None]
        cols = torch.arange(sk, device=q.device)[None, :]
        s = s.masked_fill(cols > rows + sk - sq, float("-inf"))
    wide = s.to(torch.float64) if dtype == torch.float64 else s.float()
    lse = torch.logsumexp(wide, dim=-1)
    p = torch.softmax(wide, dim=-1).nan_to_num(0.0).to(dtype)
    return (p @ vv).transpose(1, 2).contiguous(), lse.float()


def fa_bound(ours, ref, lowprec):
    """FlashAttention's test: |ours - ref| <= 2 |lowprec - ref| + the reference's own rounding, of
    tensors of one shape (an empty one passes: no element to err)."""
    assert ours.shape == ref.shape, f"shape {list(ours.shape)}, expected {list(ref.shape)}"
    if ref.numel() == 0:
        return 0.0, 0.0
    ours, ref, lowprec = ours.double(), ref.double(), lowprec.double()
    atol = 2 * ((ref + 0.3 - 0.3) - ref).abs().max().item() + 1e-5
    err, allowed = (ours - ref).abs().max().item(), 2 * (lowprec - ref).abs().max().item() + atol
    assert err <= allowed, f"max error {err:.3g} > bound {allowed:.3g}"
    return err, allowed


def mla_decode(q, cache, block_table, lengths, scale, dtype=torch.float64):
    """(out [B, s_q, H, 512], lse [B, s_q, H]) computed in `dtype` (softmax in fp32 at least): the
    last s_q tokens of each sequence, causal among themselves."""
    batch, s_q, heads, _ = q.shape
    block_size = cache.shape[1]
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    outs, lses = [], []
    for b in range(batch):
        length = int(lengths[b])
        rows = [cache[block_table[b, t // block_size], t % block_size] for t in range(length)]
        keys = (torch.stack(rows) if rows else cache.new_zeros((0, cache.shape[2]))).to(dtype)
        s = torch.einsum("shd,td->sht", q[b].to(dtype), keys).to(wide) * scale
        positions = torch.arange(length, device=q.device)
        for i in range(s_q):  # query i sits at position length - s_q + i
            s[i, :, positions > length - s_q + i] = float("-inf")
        lse = torch.logsumexp(s, dim=-1)
        p = torch.softmax(s, dim=-1).nan_to_num(0.0).to(dtype)
        outs.append(torch.einsum("sht,td->shd", p, keys[:, :512]))
        lses.append(lse)
    return torch.stack(outs), torch.stack(lses)


def route(logits, router, bias=None):
    """(ids [T, k], weights [T, k]) as kjit's router (no groups): scores by softmax or sigmoid,
    the bias steering the choice only, renormalised and scaled."""
    scores = torch.sigmoid(logits.float()) if router.sigmoid else torch.softmax(logits.float(), dim=-1)
    choice = scores + bias if bias is not None else scores
    ids = choice.topk(router.top_k, dim=-1).indices
    weights = scores.gather(1, ids)
    if router.renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return ids.int(), weights * router.scaling


def moe(x, ids, weights, gate_up, down, dtype):
    """sum_j weights[t, j] down_e(silu(gate_e x) up_e x) with gate_up's rows interleaved,
    computed in `dtype` (the intermediate rounded to x's dtype, as the GEMMs store it)."""
    out = torch.zeros(x.shape, dtype=dtype, device=x.device)
    for e in ids.unique().tolist():
        token, slot = (ids == e).nonzero(as_tuple=True)
        h = x[token].to(dtype) @ gate_up[e].to(dtype).t()
        act = (F.silu(h[:, 0::2].float()) * h[:, 1::2].float()).to(x.dtype).to(dtype)
        y = (act @ down[e].to(dtype).t()).to(x.dtype).to(dtype)
        out.index_add_(0, token, y * weights[token, slot, None].to(dtype))
    return out


_E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def dequantize_fp4(codes, scales, tensor_scale, format):
    """FP4 weights [..., N, K / 2] back to fp32 [..., N, K]: e2m1(code) x scale x tensor_scale."""
    table = _E2M1.to(codes.device)
    values = torch.stack([table[(codes & 0xF).long()], table[(codes >> 4).long()]], dim=-1).flatten(-2)
    if format == "nvfp4":
        block_scales = scales.view(torch.float8_e4m3fn).float()
    else:
        block_scales = torch.exp2(scales.float() - 127)
    block = values.shape[-1] // scales.shape[-1]
    values = values * block_scales.repeat_interleave(block, dim=-1)
    if tensor_scale is not None:  # one for all, or one per expert (dim 0)
        per = tensor_scale.float().reshape(-1)
        values = values * (per[0] if per.numel() == 1 else per.reshape(-1, *[1] * (values.dim() - 1)))
    return values
