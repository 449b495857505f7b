"""FLOPs and bytes moved per step: the one place where seqarena decides what counts.

The convention, for every model and every path:

- FLOPs are matmul FLOPs, two per multiply-add (PaLM's MFU, Chowdhery et al. 2022, appendix B):
  linear layers, the recurrences' weight products, attention's q k^T and att v. Elementwise work
  (gates, activations, norms, softmax, the scans' a_t * h_{t-1} + b_t) counts zero, for every
  model alike; its cost shows on the second roof, memory bandwidth, through the bytes it moves.
- A forward is what torch's FlopCounterMode sees while it runs, plus what the model declares in
  `uncounted_flops(batch, seq_len)`: the matmuls inside kernels the counter cannot look into
  (oneDNN's fused LSTM, cuDNN's RNNs). Each declared count is built from the formulas below.
- Training = 3 x forward (the backward computes two matmuls per forward matmul: the gradients of
  the input and of the weight), for every model, whatever the backward kernels are.
- Causal attention through a kernel told `is_causal` counts half the L x L square, as
  FlashAttention's benchmarks count it: the kernel skips the key blocks above the diagonal. The
  textbook path computes the whole square and is counted as it runs.
- A triangular solve (the delta rule's chunks) counts its substitution's multiply-adds, n (n - 1)
  FLOPs per right-hand side of an n x n triangle, like the matmul it replaces.

Bytes moved are counted like FLOPs, by a dispatch mode that sees every aten op: each op reads its
tensor inputs and writes its outputs once (views move nothing). A fused kernel is one op, so its
internal traffic is not seen; its inputs and outputs are, which is the least it must move.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten

TRAIN_FACTOR = 3.0  # training FLOPs per forward FLOP: forward, input gradient, weight gradient
RNN_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}  # torch.nn.RNNBase.mode -> G


def _sdpa(is_causal_at: int) -> Callable[..., int]:
    """A FlopCounterMode formula for an SDPA op whose `is_causal` is positional argument i."""
    def formula(query, key, value, *args, out_shape=None, **kwargs) -> int:
        causal = kwargs.get("is_causal", args[is_causal_at - 3] if len(args) > is_causal_at - 3
                            else False)
        full = sdpa_flop_count(query, key, value)
        return full // 2 if causal else full
    return formula


def _triangular_solve(a, b, *args, out_shape=None, **kwargs) -> int:
    """Substitution through an n x n triangle: n (n - 1) / 2 multiply-adds per right-hand
    side, n (n - 1) FLOPs; the n divisions (none when unitriangular) are elementwise and count
    zero. Every one of the output's numel / n right-hand sides (rows or columns) pays it."""
    n = a[-1]
    return math.prod(out_shape) * (n - 1)


# torch 2.13 has formulas for the CUDA kernels, counted in full even when causal, and none for
# the CPU flash kernel, where attention would count zero; none for the triangular solve either
FORMULAS = {
    aten._scaled_dot_product_flash_attention: _sdpa(4),
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa(4),
    aten._scaled_dot_product_efficient_attention: _sdpa(6),
    aten._scaled_dot_product_cudnn_attention: _sdpa(6),
    aten.linalg_solve_triangular: _triangular_solve,
}


def flop_counter() -> FlopCounterMode:
    """torch's counter with seqarena's formulas (see the module docstring)."""
    return FlopCounterMode(display=False, custom_mapping=FORMULAS)


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs the counter sees while fn() runs."""
    with flop_counter() as counter:
        fn()
    return float(counter.get_total_flops())


def total_flops(counted: float, uncounted: float | None) -> float | None:
    """counted + uncounted, or None ("not counted") when neither saw any work."""
    total = counted + (uncounted or 0.0)
    return total if total > 0 else None


def training_flops(forward: float | None) -> float | None:
    return None if forward is None else TRAIN_FACTOR * forward


# --- analytic counts, for the work the counter cannot see -------------------------------------

def rnn_matmul_flops(gates: int, d_in: int, hidden: int, layers: int, directions: int,
                     tokens: int) -> float:
    """Forward matmul FLOPs of a stacked RNN: per layer, direction and token 2 G H (D_in + H),
    both projections of G gates; D_in is the input width for layer 0, directions * H above."""
    per_token = sum(directions * 2 * gates * hidden * ((d_in if k == 0 else directions * hidden)
                                                       + hidden) for k in range(layers))
    return float(per_token * tokens)


def torch_rnn_flops(rnn: nn.RNNBase, tokens: int) -> float:
    """rnn_matmul_flops of a torch.nn.RNN / LSTM / GRU."""
    return rnn_matmul_flops(RNN_GATES[rnn.mode], rnn.input_size, rnn.hidden_size, rnn.num_layers,
                            2 if rnn.bidirectional else 1, tokens)


def hidden_rnn_flops(rnn: nn.RNNBase, run_one_token: Callable[[], object], tokens: int) -> float:
    """The RNN's matmul FLOPs less what the counter sees of them on this device and dtype.

    Whether a kernel hides its matmuls depends on the device and dtype: on CPU torch.nn.LSTM is
    one oneDNN call (hidden), GRU and RNN decompose into visible matmuls, cuDNN hides them all.
    So run one token under the counter (`run_one_token`) and subtract what it saw; every matmul
    here scales with B * L. Call it outside any counter of your own.
    """
    visible = count_flops(run_one_token) * tokens
    return max(0.0, torch_rnn_flops(rnn, tokens) - visible)


def attention_flops(batch: int, q_len: int, k_len: int, d_model: int, causal: bool) -> float:
    """q k^T and att v over all heads: 2 matmuls of 2 B Lq Lk D FLOPs, half when causal."""
    full = 4.0 * batch * q_len * k_len * d_model
    return full / 2 if causal else full


# --- bytes moved ---------------------------------------------------------------------------------

def _tensor_bytes(tree: Any) -> int:
    leaves, _ = tree_flatten(tree)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


class ByteCounterMode(TorchDispatchMode):
    """Bytes every aten op reads (its tensor arguments) and writes (its outputs); views and
    metadata ops move nothing and are skipped."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not (func.is_view or func in _NO_TRAFFIC):
            self.bytes += _tensor_bytes((args, kwargs)) + _tensor_bytes(out)
        return out


_NO_TRAFFIC = {aten.detach.default, aten.empty.memory_format, aten.empty_like.default,
               aten.empty_strided.default, aten.lift_fresh.default}


def count_bytes(fn: Callable[[], object]) -> float:
    """Bytes moved while fn() runs, as ByteCounterMode sees them."""
    with ByteCounterMode() as counter:
        fn()
    return float(counter.bytes)
