"""Recurrent networks: Elman RNN, LSTM and GRU, as readable cells and as fused torch kernels.

Each model owns one torch.nn.RNN / LSTM / GRU. The fused path calls it; the from-scratch path reads
the same weight tensors (weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}, with a
"_reverse" suffix for the backward direction) and applies the equations one time step at a time.
So both paths have one set of parameters, and the tests prove they agree, gradients included.

References:
- J. L. Elman, "Finding Structure in Time", Cognitive Science 1990 (the simple recurrent network).
- S. Hochreiter, J. Schmidhuber, "Long Short-Term Memory", Neural Computation 1997; the forget
  gate is from F. Gers, J. Schmidhuber, F. Cummins, "Learning to Forget", 2000.
- K. Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder for Statistical
  Machine Translation", EMNLP 2014 (the gated recurrent unit).
- PyTorch docs of torch.nn.RNN, torch.nn.LSTM and torch.nn.GRU: the gate order inside the stacked
  weights (LSTM: i, f, g, o; GRU: r, z, n) and the GRU's reset gate applied after the hidden
  matmul, r_t * (W_hn h + b_hn), which differs slightly from Cho et al.'s r_t * h inside the matmul.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqarena.errors import ConfigError
from seqarena.flops import hidden_rnn_flops
from seqarena.models.base import Backbone, StepNotSupported
from seqarena.models.registry import ModelConfig, register_model

# B batch, L length, D model width (input and output), H hidden units per direction,
# G gates per unit (RNN 1, LSTM 4, GRU 3), K layers

# torch's state layout: h, or (h, c) for the LSTM, each (K * directions, B, H)
State = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class RecurrentConfig(ModelConfig):
    bidirectional: bool = False  # True: a second layer reads right to left; not causal, no step()
    nonlinearity: str = "tanh"  # the Elman RNN's activation (model "rnn" only): "tanh", "relu",
    #                             or "identity" (a linear RNN), scratch only: torch's kernel lacks it
    impl: str = "fused"  # "fused": torch's RNN kernels; "scratch": the cells below, step by step
    spectral_radius: float = 0.0  # model "rnn": each initial W_hh rescaled to this largest
    #                               |eigenvalue|, as echo-state networks do; 0: torch's init as is

    def validate(self) -> None:
        super().validate()
        if self.nonlinearity not in ("tanh", "relu", "identity"):
            raise ConfigError(f"RecurrentConfig.nonlinearity must be 'tanh', 'relu' or "
                              f"'identity', got {self.nonlinearity!r}")
        if self.impl not in ("fused", "scratch"):
            raise ConfigError(f"RecurrentConfig.impl must be 'fused' or 'scratch', "
                              f"got {self.impl!r}")
        if self.nonlinearity == "identity" and self.impl == "fused":
            raise ConfigError("RecurrentConfig.nonlinearity='identity' needs impl='scratch': "
                              "torch's fused RNN has only tanh and relu")
        if not self.spectral_radius >= 0:
            raise ConfigError(f"RecurrentConfig.spectral_radius must be >= 0 (0 = torch's "
                              f"init), got {self.spectral_radius}")
        if self.bidirectional and self.d_model % 2:
            raise ConfigError(f"RecurrentConfig.d_model must be even when bidirectional (each "
                              f"direction gets d_model/2 units), got {self.d_model}")


# --- the cells: one time step, the equations as written in the papers ----------------------------
# Each takes x_t (B, D_in), the state as a tuple, (h,) or (h, c), each (B, H), and the layer's
# weights: w_ih (G*H, D_in), w_hh (G*H, H), b_ih and b_hh (G*H,). It returns the next state tuple.

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda x: x}


def rnn_cell(x_t, state, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    """Elman: h_t = act(W_ih x_t + b_ih + W_hh h + b_hh)."""
    (h,) = state
    h_t = ACTIVATIONS[nonlinearity](F.linear(x_t, w_ih, b_ih) + F.linear(h, w_hh, b_hh))
    return (h_t,)


def lstm_cell(x_t, state, w_ih, w_hh, b_ih, b_hh):
    """LSTM with a forget gate: c_t is a gated running sum, so gradients survive long spans."""
    h, c = state
    gates = F.linear(x_t, w_ih, b_ih) + F.linear(h, w_hh, b_hh)  # (B, 4H)
    i_t, f_t, g_t, o_t = gates.chunk(4, dim=-1)  # each (B, H), torch's order
    i_t, f_t, g_t, o_t = torch.sigmoid(i_t), torch.sigmoid(f_t), torch.tanh(g_t), torch.sigmoid(o_t)
    c_t = f_t * c + i_t * g_t  # forget some of the old cell, write some of the candidate g_t
    h_t = o_t * torch.tanh(c_t)  # expose some of the cell
    return h_t, c_t


def gru_cell(x_t, state, w_ih, w_hh, b_ih, b_hh):
    """GRU: an update gate z_t interpolates between the old state and a candidate n_t."""
    (h,) = state
    r_x, z_x, n_x = F.linear(x_t, w_ih, b_ih).chunk(3, dim=-1)  # each (B, H), torch's order
    r_h, z_h, n_h = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r_t = torch.sigmoid(r_x + r_h)  # reset: how much of the old state the candidate may read
    z_t = torch.sigmoid(z_x + z_h)  # update: how much of the old state to keep
    n_t = torch.tanh(n_x + r_t * n_h)  # reset after the matmul, as torch does (see the docstring)
    h_t = (1 - z_t) * n_t + z_t * h
    return (h_t,)


# --- the models ----------------------------------------------------------------------------------

class Recurrent(Backbone):
    """A stack of K recurrent layers, (B, L, D) -> (B, L, D). Subclasses fix the cell."""

    family = "recurrent"
    references = {"fused": "scratch"}  # torch's kernel is checked against the cells above

    gates: int  # G: blocks of H rows stacked in each weight matrix
    n_states: int = 1  # tensors in the state: h, or h and c for the LSTM

    def __init__(self, config: RecurrentConfig):
        super().__init__(config)
        self.causal = not config.bidirectional  # the backward direction reads the future
        self.directions = 2 if config.bidirectional else 1
        self.hidden = config.d_model // self.directions  # H, so the concatenated output is D wide
        self.rnn = self.make_torch_module(
            config.d_model, self.hidden, num_layers=config.layers, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
            bidirectional=config.bidirectional)

    def make_torch_module(self, d_in: int, hidden: int, **kwargs) -> nn.Module:
        raise NotImplementedError

    def cell(self, x_t, state, w_ih, w_hh, b_ih, b_hh):
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D). A causal model ignores the mask: padding sits at the end, after
        every real token, so it cannot reach one. A bidirectional model skips padding exactly."""
        return self.run(x, mask=mask)[0]

    def run(self, x: torch.Tensor, state: State | None = None,
            mask: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """(B, L, D) and an optional start state -> (B, L, D) and the final state.

        The recurrence runs in the weights' dtype with autocast off: under bf16 autocast a
        product of L bf16 gates (8 bits of mantissa) would lose the signal within a few steps.
        """
        dtype = self.rnn.weight_hh_l0.dtype
        if state is not None:
            state = tuple(s.to(dtype) for s in state) if self.n_states == 2 else state.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            if self.config.impl == "fused":
                return self._run_fused(x.to(dtype), state, mask)
            return self._run_scratch(x.to(dtype), state, mask)

    def state_size(self, n_tokens: int) -> int:
        """h (and c for the LSTM) of each direction: n_states * D floats, whatever n_tokens."""
        return self.n_states * self.directions * self.hidden

    def init_state(self, batch_size: int) -> State:
        w = self.rnn.weight_hh_l0
        zeros = [w.new_zeros(self.config.layers * self.directions, batch_size, self.hidden)
                 for _ in range(self.n_states)]  # each (K * directions, B, H)
        return tuple(zeros) if self.n_states == 2 else zeros[0]

    def step(self, state: State, x_t: torch.Tensor) -> tuple[torch.Tensor, State]:
        """One token (B, D) -> output (B, D) and the next state: O(1) work per token."""
        if not self.causal:
            raise StepNotSupported(f"{type(self).__name__} is bidirectional: its outputs depend "
                                   f"on future tokens, so it cannot decode step by step")
        y, state = self.run(x_t.unsqueeze(1), state)  # (B, 1, D)
        return y.squeeze(1), state

    # --- fused path: torch's kernel (cuDNN on GPU, oneDNN or ATen on CPU) ----------------------

    def _run_fused(self, x, state, mask):
        if mask is None or self.causal:
            return self.rnn(x, state)
        # Packing makes the backward direction start at each sequence's last real token.
        lengths = _lengths_of_prefix_mask(mask)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        y, state = self.rnn(packed, state)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])  # (B, L, D)
        return y, state

    # --- from-scratch path: the cells above, one time step at a time ----------------------------

    def _run_scratch(self, x, state, mask):
        if state is None:
            state = self.init_state(x.shape[0])
        state = state if self.n_states == 2 else (state,)  # tuple of (K * directions, B, H)
        if self.causal:
            mask = None  # padding sits after every real token (see forward)
        elif mask is not None:
            _lengths_of_prefix_mask(mask)  # the same check as the fused path
        finals = []
        for k in range(self.config.layers):
            outputs = []
            for d in range(self.directions):
                s = tuple(part[k * self.directions + d] for part in state)  # each (B, H)
                y, s = self._scan(x, s, self._weights(k, d), reverse=d == 1, mask=mask)
                outputs.append(y)
                finals.append(s)
            x = torch.cat(outputs, dim=-1)  # (B, L, directions * H) = (B, L, D)
            if k < self.config.layers - 1:
                x = F.dropout(x, self.config.dropout, self.training)
        final = tuple(torch.stack(parts) for parts in zip(*finals))  # each (K * directions, B, H)
        return x, final if self.n_states == 2 else final[0]

    def _weights(self, k: int, d: int) -> tuple[torch.Tensor, ...]:
        """Layer k, direction d's parameters, read from the fused module: one set, two paths."""
        suffix = f"l{k}_reverse" if d == 1 else f"l{k}"
        return tuple(getattr(self.rnn, f"{name}_{suffix}")
                     for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def _scan(self, x, state, weights, reverse, mask):
        """Run one layer and direction over time: (B, L, D_in) -> (B, L, H) and the final state."""
        steps = range(x.shape[1])
        outputs = [None] * x.shape[1]
        for t in reversed(steps) if reverse else steps:
            new = self.cell(x[:, t], state, *weights)
            if mask is not None:  # at padding keep the state and output zeros, as packing does
                m_t = mask[:, t, None]  # (B, 1)
                new = tuple(torch.where(m_t, n, s) for n, s in zip(new, state))
                outputs[t] = torch.where(m_t, new[0], 0.0)
            else:
                outputs[t] = new[0]
            state = new
        return torch.stack(outputs, dim=1), state  # (B, L, H)

    # --- FLOPs (the convention: seqarena.flops) ------------------------------------------------

    def uncounted_flops(self, batch: int, seq_len: int) -> float:
        """Forward matmul FLOPs that the counter does not see where the kernel hides them (the
        scratch cells show all of theirs). Call it outside any counter of your own."""
        def one_token():
            was_training = self.training
            self.eval()  # so the probe draws no dropout randomness
            try:
                self.run(self.rnn.weight_hh_l0.new_zeros(1, 1, self.config.d_model))
            finally:
                self.train(was_training)

        return hidden_rnn_flops(self.rnn, one_token, batch * seq_len)


def _lengths_of_prefix_mask(mask: torch.Tensor) -> torch.Tensor:
    """Lengths (B,) on the CPU, as packing wants them, of a mask whose real tokens come first."""
    lengths = mask.sum(dim=1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, positions < lengths[:, None]):
        raise ValueError("a recurrent model's mask must mark real tokens first, padding at the end")
    return lengths.clamp(min=1).cpu()  # an all-padding row still needs one step to pack


@register_model("rnn", RecurrentConfig, "Elman RNN (tanh, relu or identity), from-scratch cell "
                "+ fused", train_cost="O(L) sequential", decode_cost="O(1)")
class RNN(Recurrent):
    gates = 1

    def __init__(self, config: RecurrentConfig):
        super().__init__(config)
        if config.spectral_radius > 0:
            # gradients through h are multiplied by W_hh^T each step, so at initialisation
            # their norm grows or decays like rho^distance (exactly so for a linear RNN)
            with torch.no_grad():
                for name, w in self.rnn.named_parameters():
                    if name.startswith("weight_hh"):
                        rho = torch.linalg.eigvals(w.double()).abs().max()
                        w.mul_(config.spectral_radius / rho.item())

    def make_torch_module(self, d_in, hidden, **kwargs):
        # identity runs only on the scratch cells (see RecurrentConfig); the module still holds
        # the weights, in the layout of its tanh twin
        act = "tanh" if self.config.nonlinearity == "identity" else self.config.nonlinearity
        return nn.RNN(d_in, hidden, nonlinearity=act, **kwargs)

    def cell(self, x_t, state, w_ih, w_hh, b_ih, b_hh):
        return rnn_cell(x_t, state, w_ih, w_hh, b_ih, b_hh, self.config.nonlinearity)


class _GatedRecurrent(Recurrent):
    """LSTM and GRU: their activations are fixed by the gate equations."""

    def __init__(self, config: RecurrentConfig):
        if config.nonlinearity != "tanh":
            raise ConfigError(f"RecurrentConfig.nonlinearity applies only to model 'rnn'; "
                              f"{type(self).__name__} gates are fixed, so leave it 'tanh'")
        if config.spectral_radius:
            raise ConfigError(f"RecurrentConfig.spectral_radius applies only to model 'rnn'; "
                              f"leave it 0 for {type(self).__name__}")
        super().__init__(config)


@register_model("lstm", RecurrentConfig, "LSTM, from-scratch cell + fused torch.nn.LSTM",
                train_cost="O(L) sequential", decode_cost="O(1)")
class LSTM(_GatedRecurrent):
    gates = 4
    n_states = 2

    def make_torch_module(self, d_in, hidden, **kwargs):
        return nn.LSTM(d_in, hidden, **kwargs)

    def cell(self, x_t, state, w_ih, w_hh, b_ih, b_hh):
        return lstm_cell(x_t, state, w_ih, w_hh, b_ih, b_hh)


@register_model("gru", RecurrentConfig, "GRU, from-scratch cell + fused torch.nn.GRU",
                train_cost="O(L) sequential", decode_cost="O(1)")
class GRU(_GatedRecurrent):
    gates = 3

    def make_torch_module(self, d_in, hidden, **kwargs):
        return nn.GRU(d_in, hidden, **kwargs)

    def cell(self, x_t, state, w_ih, w_hh, b_ih, b_hh):
        return gru_cell(x_t, state, w_ih, w_hh, b_ih, b_hh)
