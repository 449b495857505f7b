"""FLOPs per step: what torch's FlopCounterMode sees, plus what the model says it cannot see.

FlopCounterMode counts matmuls, convolutions and the attention kernels it has formulas for, two
FLOPs per multiply-add. It counts zero for work inside kernels it has no formula for: oneDNN's and
cuDNN's fused RNNs, the CPU flash-attention kernel, elementwise scans. A backbone that runs such
kernels declares `uncounted_flops(batch, seq_len)`, the forward FLOPs the counter misses on its
current device and dtype; backward work is counted as twice the forward, the usual convention
(Kaplan et al. 2020, "Scaling Laws for Neural Language Models", section 2.1).

Reported FLOPs are never zero for work that was done: if neither source sees any, the figure is
None ("not counted") and no MFU is derived from it.
"""

from __future__ import annotations

from typing import Callable

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

BACKWARD_FACTOR = 2.0  # backward FLOPs per forward FLOP: gradients for inputs and for weights


def counted_flops(fn: Callable[[], object]) -> float:
    """FLOPs FlopCounterMode sees while fn() runs (forward, and backward if fn runs it)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def uncounted_flops(model: nn.Module, batch: int, seq_len: int) -> float | None:
    """The model's own figure for forward work the counter misses; None if it declares none.

    Call it outside any FlopCounterMode: a model may probe the counter to learn what it sees.
    """
    declared = model.uncounted_flops(batch, seq_len)
    return None if declared is None else float(declared)


def total_flops(counted: float, uncounted: float | None) -> float | None:
    """counted + uncounted, or None when neither saw any work."""
    total = counted + (uncounted or 0.0)
    return total if total > 0 else None


def rnn_matmul_flops(rnn: nn.RNNBase, batch: int, seq_len: int) -> float:
    """Forward matmul FLOPs of a torch.nn.RNN/LSTM/GRU: per layer and direction, per token,
    2 * G * H * (D_in + H) with G gates (RNN 1, GRU 3, LSTM 4); D_in is the input width for
    the first layer and directions * H above it."""
    gates = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}[rnn.mode]
    H, directions = rnn.hidden_size, 2 if rnn.bidirectional else 1
    per_token = 0
    for k in range(rnn.num_layers):
        d_in = rnn.input_size if k == 0 else directions * H
        per_token += directions * 2 * gates * H * (d_in + H)
    return float(per_token * batch * seq_len)
