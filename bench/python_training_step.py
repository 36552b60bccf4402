"""A small Llama-style training step through autograd with each attention implementation: one
Llama 3 8B decoder layer (RMSNorm, q/k/v/o projections with GQA 32/8 at head dim 128, causal
attention, SwiGLU MLP 14336) at B x S tokens, forward and backward, and the attention alone
(forward and backward of q, k, v). kjit.flash_attn_func beside torch SDPA's flash and cuDNN
backends and FlashAttention-4 (flash_attn.cute, where installed: ../shared/peers-kit/). Median
of CUDA-event-timed steps (bench/torch_timing.py).

    python3 bench/python_training_step.py [B S ...]   (default 1 8192, 2 4096, 8 1024)
"""

import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import kjit
from torch_timing import median_ms, peer

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, MLP = 4096, 32, 8, 128, 14336


def sdpa(backend):
    def attend(q, k, v):
        with sdpa_kernel(backend):
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
            )
        return out.transpose(1, 2)

    return attend


def implementations():
    yield "kjit", lambda q, k, v: kjit.flash_attn_func(q, k, v, causal=True)
    yield "sdpa-flash", sdpa(SDPBackend.FLASH_ATTENTION)
    yield "sdpa-cudnn", sdpa(SDPBackend.CUDNN_ATTENTION)
    fa4 = peer("flash_attn.cute", "FlashAttention-4")
    if fa4 is not None:
        yield "fa4", lambda q, k, v: fa4.flash_attn_func(q, k, v, causal=True)[0]


class Layer(torch.nn.Module):
    def __init__(self, attend):
        super().__init__()
        make = lambda i, o: torch.nn.Linear(i, o, bias=False, dtype=torch.bfloat16, device="cuda")  # noqa: E731
        self.attend = attend
        self.qkv = make(HIDDEN, (HEADS + 2 * KV_HEADS) * HEAD_DIM)
        self.o = make(HEADS * HEAD_DIM, HIDDEN)
        self.gate_up, self.down = make(HIDDEN, 2 * MLP), make(MLP, HIDDEN)
        self.norm1 = torch.nn.RMSNorm(HIDDEN, dtype=torch.bfloat16, device="cuda")
        self.norm2 = torch.nn.RMSNorm(HIDDEN, dtype=torch.bfloat16, device="cuda")

    def forward(self, x):
        batch, seq, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).split([HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], -1)
        attn = self.attend(
            q.view(batch, seq, HEADS, HEAD_DIM),
            k.view(batch, seq, KV_HEADS, HEAD_DIM),
            v.view(batch, seq, KV_HEADS, HEAD_DIM),
        )
        x = x + self.o(attn.reshape(batch, seq, -1))
        gate, up = self.gate_up(self.norm2(x)).chunk(2, -1)
        return x + self.down(F.silu(gate) * up)


def attention_step(attend, batch, seq):
    """The step (forward and backward of q, k, v) and its forward's output, on inputs the same for
    every implementation (so each can be checked against kjit's)."""
    torch.manual_seed(0)
    q = torch.randn(batch, seq, HEADS, HEAD_DIM, dtype=torch.bfloat16, device="cuda", requires_grad=True)
    k, v = (
        torch.randn(batch, seq, KV_HEADS, HEAD_DIM, dtype=torch.bfloat16, device="cuda", requires_grad=True)
        for _ in range(2)
    )
    dout = torch.randn_like(q)
    with torch.no_grad():
        out = attend(q, k, v)
    return (lambda: torch.autograd.grad(attend(q, k, v), (q, k, v), dout)), out


def layer_step(attend, batch, seq):
    torch.manual_seed(0)
    layer = Layer(attend)
    x = torch.randn(batch, seq, HIDDEN, dtype=torch.bfloat16, device="cuda", requires_grad=True)

    def step():
        layer.zero_grad(set_to_none=True)
        layer(x).float().square().mean().backward()

    return step


def main():
    args = [int(a) for a in sys.argv[1:]] or [1, 8192, 2, 4096, 8, 1024]
    shapes = list(zip(args[0::2], args[1::2]))
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, Llama 3 8B layer (GQA 32/8, d 128), causal"
    )
    print(
        f"{'B x S':>10} {'impl':<11} {'attn fwd+bwd ms':>16} {'TFLOP/s':>8} {'layer step ms':>14} {'peer/kjit':>13}"
        f" {'max|out - kjit|':>16}"
    )
    for batch, seq in shapes:
        flops = 3.5 * 4 * batch * HEADS * seq * seq * HEAD_DIM / 2  # fwd 2 GEMMs + bwd 5, causal half
        times, outputs = {}, {}
        for name, attend in implementations():
            try:
                attn_step, outputs[name] = attention_step(attend, batch, seq)
                attn_ms = median_ms(attn_step)
                step_ms = median_ms(layer_step(attend, batch, seq))
            except Exception as error:  # a backend that refuses the shape, or fails to compile it
                print(f"{batch:>4} x {seq:<5} {name:<11} refused: {str(error).splitlines()[0][:80]}", flush=True)
                continue
            times[name] = (attn_ms, step_ms)
            diff = "" if "kjit" not in outputs else f"{(outputs[name] - outputs['kjit']).abs().max().item():.2e}"
            ratio = (
                ""
                if name == "kjit" or "kjit" not in times
                else f"{attn_ms / times['kjit'][0]:.2f}x / {step_ms / times['kjit'][1]:.2f}x"
            )
            print(
                f"{batch:>4} x {seq:<5} {name:<11} {attn_ms:16.3f} {flops / attn_ms / 1e9:8.0f} {step_ms:14.3f} {ratio:>13}"
                f" {diff:>16}",
                flush=True,
            )
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
