"""DeltaNet and Gated DeltaNet: linear attention whose state is edited by the delta rule.

References:
- S. Yang, B. Wang, Y. Zhang, Y. Shen, Y. Kim, "Parallelizing Linear Transformers with the Delta
  Rule over Sequence Length", NeurIPS 2024, arXiv:2406.06484: the delta rule as a recurrence
  (section 2), its chunked form through the WY/UT representation of a product of Householder-like
  matrices (section 3), L2-normalised q and k, short convolutions.
- S. Yang, J. Kautz, A. Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule",
  ICLR 2025, arXiv:2412.06464: the gate a_t in front of the delta rule (eq. 10) and its chunked
  form with the decays folded in (section 3.3).
- R. Grazzi, J. Siems, et al., "Unlocking State-Tracking in Linear RNNs Through Negative
  Eigenvalues", 2024, arXiv:2411.12537: b_t in [0, 2], so I - b_t k_t k_t^T may reflect.
- flash-linear-attention: fla/layers/gated_deltanet.py (`GatedDeltaNet`: the projections, the
  decay g_t = -exp(A_log) softplus(W_a x_t + dt_bias) and its initialisation, the short
  convolutions with SiLU, q scaled by 1/sqrt(Dk), the gated RMSNorm before W_o), fla/ops/
  delta_rule/naive.py and fla/ops/gated_delta_rule naive (the recurrence, the chunked form).

Per head, with q_t, k_t L2-normalised, b_t = sigmoid(W_b x_t) (times 2 with negative_eigen) and
a_t = exp(g_t) (a_t = 1 for DeltaNet), the paper's recurrence is

    S_t = a_t S_{t-1} (I - b_t k_t k_t^T) + b_t v_t k_t^T,    o_t = S_t q_t / sqrt(Dk):

S reads what it holds at key k_t, S k_t, and moves it a fraction b_t of the way towards v_t. We
keep S transposed, (Dk, Dv), so tokens are rows: S_t = a_t S_{t-1} + b_t k_t (v_t - a_t S_{t-1}^T
k_t)^T. Three paths on the same weights: "recurrent" (that loop, the reference), "chunked" (the
fast path) and step() (the loop's body, for decoding).

Blocks are pre-norm residual branches as our Transformer's, with its LayerNorm and feed-forward
reused by import (fla's blocks use RMSNorm and a SwiGLU MLP; ours keep the comparison on the
mixer). No positional encoding: the convolutions and the recurrence see order, as in fla.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqarena.config import check_fields
from seqarena.errors import ConfigError
from seqarena.models.base import Backbone
from seqarena.models.linear_attention import widened
from seqarena.models.registry import ModelConfig, register_model
from seqarena.models.transformer import ACTIVATIONS, FeedForward

# B batch, L length, D model width, H heads, Dk key head width (D / H), Dv value head width
# (expand_v * Dk), P projected channels, X convolved channels (q, k, v: 2 H Dk + H Dv),
# K convolution width, C chunk length, N chunks

IMPLS = ("chunked", "recurrent")
L2_EPS = 1e-6  # in the L2 norm of q and k, as fla's l2norm: keeps a zero vector finite
NORM_EPS = 1e-5  # in the gated RMSNorm of the output, fla's norm_eps


@dataclass(frozen=True)
class GatedDeltaNetConfig(ModelConfig):
    heads: int = 4  # heads H; d_model must divide by it. Dk = D / H = 16 at d_model 64
    expand_v: int = 1  # Dv = expand_v * Dk; the state is H (Dk, Dv) matrices. fla uses 2 at
    #                    scale; 1 keeps the state D^2 / H, as linear attention's
    conv_size: int = 4  # K of the causal depthwise convolutions on q, k and v, as fla's
    chunk: int = 64  # C of impl="chunked": a triangular solve within a chunk, the state across
    #                  chunks; 64, as fla's chunk kernels
    gated: bool = True  # True: Gated DeltaNet's decay a_t; False: DeltaNet, a_t = 1
    negative_eigen: bool = False  # True: b_t = 2 sigmoid(.) in [0, 2], so I - b_t k_t k_t^T has
    #                               eigenvalues in [-1, 1] (Grazzi et al.; fla's allow_neg_eigval)
    d_ff: int = 0  # feed-forward width F; 0 means 4 * d_model, as in our Transformer blocks
    activation: str = "gelu"  # feed-forward nonlinearity, "gelu" or "relu", as the Transformer's
    impl: str = "chunked"  # "chunked": the fast path; "recurrent": the paper's equation token by
    #                        token, O(L) steps, the reference it is checked against

    def validate(self) -> None:
        check_fields(self, positive={"d_model", "layers", "heads", "expand_v", "conv_size",
                                     "chunk"})
        name = type(self).__name__
        if not self.dropout < 1.0:
            raise ConfigError(f"{name}.dropout must be in [0, 1), got {self.dropout}")
        if self.d_model % self.heads != 0:
            raise ConfigError(f"{name}: d_model={self.d_model} is not divisible by "
                              f"heads={self.heads}; make d_model a multiple of heads")
        for field, choices in (("activation", tuple(ACTIVATIONS)), ("impl", IMPLS)):
            if getattr(self, field) not in choices:
                raise ConfigError(f"{name}.{field} must be one of {', '.join(choices)}, "
                                  f"got {getattr(self, field)!r}")

    @property
    def ff_width(self) -> int:  # what FeedForward reads
        return self.d_ff or 4 * self.d_model


@dataclass(frozen=True)
class DeltaNetConfig(GatedDeltaNetConfig):
    gated: bool = False  # DeltaNet: a_t = 1, the state forgets only by the delta rule's erasure


def delta_step(S, q, k, v, b, a):
    """One token of the delta rule: S (..., Dk, Dv), q, k (..., Dk), v (..., Dv), b, a (...) ->
    the new S and the output q^T S (..., Dv)."""
    S = a[..., None, None] * S  # a_t S_{t-1}
    v_old = (k.unsqueeze(-2) @ S).squeeze(-2)  # (..., Dv): what S holds at key k_t
    S = S + k.unsqueeze(-1) * (b[..., None] * (v - v_old)).unsqueeze(-2)  # (..., Dk, Dv)
    return S, (q.unsqueeze(-2) @ S).squeeze(-2)


def delta_rule_recurrent(q, k, v, b, g):
    """The reference: q, k (B, H, L, Dk), v (B, H, L, Dv), b and log-decays g (B, H, L) ->
    outputs (B, H, L, Dv), one token at a time."""
    S = q.new_zeros(*k.shape[:2], k.shape[-1], v.shape[-1])  # (B, H, Dk, Dv)
    outputs = []
    for q_t, k_t, v_t, b_t, a_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), b.unbind(2),
                                       g.exp().unbind(2)):  # unbind: one backward node each
        S, o_t = delta_step(S, q_t, k_t, v_t, b_t, a_t)
        outputs.append(o_t)
    return torch.stack(outputs, dim=2)


def delta_rule_chunked(q, k, v, b, g, chunk: int):
    """The same outputs in chunks of C. Within a chunk, unrolling the recurrence from the state
    S0 at its start gives every token's write u_i - w_i S0 through one unit lower-triangular
    solve, (I + tril(diag(b) (K K^T * D), -1)) [W U] = diag(b) [Gamma K, V] with decays
    D_ij = a_{j+1} ... a_i and Gamma_i = a_1 ... a_i (the WY/UT form); the chunks are then joined
    by S_end = Gamma_C S0 + sum_i (Gamma_C / Gamma_i) k_i (u_i - w_i S0)^T, a short loop."""
    B, H, L, Dk = k.shape
    Dv = v.shape[-1]
    C = min(chunk, L)
    pad = -L % C
    if pad:  # b = 0 writes nothing and g = 0 keeps the state; the padded outputs are cut off
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))  # (B, H, N * C, Dk or Dv)
        b, g = (F.pad(t, (0, pad)) for t in (b, g))  # (B, H, N * C)
    q, k, v = (t.reshape(B, H, -1, C, t.shape[-1]) for t in (q, k, v))  # (B, H, N, C, Dk or Dv)
    b, g = (t.reshape(B, H, -1, C) for t in (b, g))  # (B, H, N, C)
    gamma = g.cumsum(-1)  # (B, H, N, C): log Gamma_i; every exponent below is <= 0
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    D = (gamma[..., :, None] - gamma[..., None, :]).masked_fill(~causal, -math.inf).exp()
    kb = k * b[..., None]  # (B, H, N, C, Dk)
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    T_inv = (kb @ k.transpose(-1, -2) * D).tril(-1) + eye  # (B, H, N, C, C)
    wu = torch.linalg.solve_triangular(
        T_inv, torch.cat((kb * gamma.exp()[..., None], v * b[..., None]), dim=-1),
        upper=False, unitriangular=True)  # (B, H, N, C, Dk + Dv)
    w, u = wu.split((Dk, Dv), dim=-1)
    attn = q @ k.transpose(-1, -2) * D  # (B, H, N, C, C): q_i^T k_j D_ij, j <= i
    q_state = q * gamma.exp()[..., None] - attn @ w  # (B, H, N, C, Dk): how each query reads S0
    o_local = attn @ u  # (B, H, N, C, Dv): what the chunk's own writes give
    last = gamma[..., -1:]  # (B, H, N, 1)
    k_end = (k * (last - gamma).exp()[..., None]).transpose(-1, -2)  # (B, H, N, Dk, C)
    # S_end = M S0 + U: one (Dk, Dk) matmul per chunk left for the loop
    M = last.exp()[..., None] * torch.eye(Dk, dtype=q.dtype, device=q.device) - k_end @ w
    U = k_end @ u  # (B, H, N, Dk, Dv)
    S, starts = q.new_zeros(B, H, Dk, Dv), []
    for M_n, U_n in zip(M.unbind(2), U.unbind(2)):
        starts.append(S)
        S = M_n @ S + U_n
    o = q_state @ torch.stack(starts, dim=2) + o_local  # (B, H, N, C, Dv)
    return o.reshape(B, H, -1, Dv)[:, :, :L]


class DeltaRule(nn.Module):
    """The mixer, as fla's GatedDeltaNet: projections, short convolutions + SiLU on q, k, v, the
    delta rule per head, a SiLU-gated RMSNorm, W_o."""

    def __init__(self, config: GatedDeltaNetConfig):
        super().__init__()
        H, D = config.heads, config.d_model
        self.heads, self.Dk, self.Dv = H, D // H, config.expand_v * (D // H)
        self.gated, self.negative_eigen = config.gated, config.negative_eigen
        self.chunk, self.impl = config.chunk, config.impl
        self.conv_channels = H * (2 * self.Dk + self.Dv)  # q, k, v
        # W_q, W_k, W_v, the output gate's W_g, W_b, then W_a if gated; no biases, as fla's
        self.in_proj = nn.Linear(D, self.conv_channels + H * self.Dv + H * (1 + self.gated),
                                 bias=False)
        # depthwise: one short causal filter per channel, fla's ShortConvolution (no bias)
        self.conv = nn.Conv1d(self.conv_channels, self.conv_channels, config.conv_size,
                              groups=self.conv_channels, bias=False)
        if self.gated:  # fla's initialisation: A ~ U(0, 16), dt log-uniform in [1e-3, 0.1]
            self.A_log = nn.Parameter(torch.empty(H).uniform_(0, 16).log())
            dt = torch.exp(torch.rand(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.norm_weight = nn.Parameter(torch.ones(self.Dv))  # the RMSNorm's, shared by heads
        self.out_proj = nn.Linear(H * self.Dv, D, bias=False)  # W_o, mixes the heads

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D), mask (B, L) True at real tokens -> (B, L, D)."""
        proj = self.in_proj(x)  # (B, L, P); bf16 under autocast, like every matmul
        with torch.autocast(x.device.type, enabled=False):  # the state's sums stay in float32
            proj = widened(proj)
            if mask is not None:  # a padded token feeds the convolutions 0s, as a start does
                proj = proj * mask[..., None].to(proj.dtype)
            xc, rest = proj.split((self.conv_channels, proj.shape[-1] - self.conv_channels), -1)
            xc = F.pad(xc.transpose(1, 2), (self.conv.kernel_size[0] - 1, 0))  # (B, X, K - 1 + L)
            xc = F.conv1d(xc, self.conv.weight.to(xc.dtype), groups=self.conv_channels)
            q, k, v, b, g, gate = self._heads(xc.transpose(1, 2), rest)  # (B, H, L, .)
            if mask is not None:  # b = 0 writes nothing, g = 0 (a = 1) keeps the state
                keep = mask[:, None, :].to(b.dtype)  # (B, 1, L)
                b, g = b * keep, g * keep
            if self.impl == "recurrent":
                o = delta_rule_recurrent(q, k, v, b, g)
            else:
                o = delta_rule_chunked(q, k, v, b, g, self.chunk)
            return self._out(o, gate, x.dtype)

    def init_state(self, batch_size: int):
        """S (B, H, Dk, Dv) and the convolutions' last K - 1 inputs (B, K - 1, X), float32 0s."""
        w = self.out_proj.weight
        dtype = torch.promote_types(w.dtype, torch.float32)
        return (w.new_zeros(batch_size, self.heads, self.Dk, self.Dv, dtype=dtype),
                w.new_zeros(batch_size, self.conv.kernel_size[0] - 1, self.conv_channels,
                            dtype=dtype))

    def step(self, x_t: torch.Tensor, S: torch.Tensor, window: torch.Tensor):
        """One token x_t (B, 1, D) -> (B, 1, D), the next S and convolution window: flat in t."""
        proj = self.in_proj(x_t)  # (B, 1, P)
        with torch.autocast(x_t.device.type, enabled=False):
            xc, rest = widened(proj).split((self.conv_channels, proj.shape[-1] -
                                            self.conv_channels), -1)
            seen = torch.cat((window, xc), dim=1)  # (B, K, X): oldest first, as conv1d's taps
            xc = (seen * self.conv.weight[:, 0].t().to(seen.dtype)).sum(1, keepdim=True)
            q, k, v, b, g, gate = self._heads(xc, rest)  # (B, H, 1, .)
            S, o = delta_step(S, q[:, :, 0], k[:, :, 0], v[:, :, 0], b[:, :, 0],
                              g[:, :, 0].exp())  # (B, H, Dv)
            return self._out(o[:, :, None], gate, x_t.dtype), S, seen[:, 1:]

    def _heads(self, xc: torch.Tensor, rest: torch.Tensor):
        """Convolved (B, L, X) and the rest of the projection (B, L, P - X) -> q, k (B, H, L, Dk)
        normalised, q scaled; v (B, H, L, Dv); b and log-decay g (B, H, L); gate (B, L, H, Dv)."""
        B, L, _ = xc.shape
        H, Dk, Dv = self.heads, self.Dk, self.Dv
        q, k, v = F.silu(xc).split((H * Dk, H * Dk, H * Dv), dim=-1)
        q, k, v = (t.reshape(B, L, H, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, L, .)
        # unit keys make I - b k k^T a projection (b = 1) or a reflection (b = 2), never a blow-up
        q, k = (t * torch.rsqrt((t * t).sum(-1, keepdim=True) + L2_EPS) for t in (q, k))
        q = q * Dk ** -0.5  # as fla's kernels (scale = Dk^-1/2)
        gate, b, a = rest.split((H * Dv, H, H * self.gated), dim=-1)
        b = torch.sigmoid(b).transpose(1, 2) * (2.0 if self.negative_eigen else 1.0)  # (B, H, L)
        if self.gated:  # log a_t <= 0: a_t in (0, 1], a data-dependent forgetting like Mamba-2's
            g = -self.A_log.to(a.dtype).exp() * F.softplus(a + self.dt_bias.to(a.dtype))
            g = g.transpose(1, 2)  # (B, H, L)
        else:
            g = torch.zeros_like(b)
        return q, k, v, b, g, gate.reshape(B, L, H, Dv)

    def _out(self, o: torch.Tensor, gate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """o (B, H, L, Dv) -> RMSNorm(o) * SiLU(gate) per head, heads joined, W_o: (B, L, D)."""
        B, H, L, Dv = o.shape
        o = F.rms_norm(o.transpose(1, 2), (Dv,), self.norm_weight.to(o.dtype), NORM_EPS)
        o = (o * F.silu(gate)).reshape(B, L, H * Dv)  # (B, L, H Dv)
        return self.out_proj(o.to(dtype))


class Block(nn.Module):
    """Pre-norm residual branches, as our Transformer's: x + mix(norm(x)), then x + ff(norm(x))."""

    def __init__(self, config: GatedDeltaNetConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.mix = DeltaRule(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.ff = FeedForward(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.mix(self.norm1(x), mask))  # (B, L, D)
        return x + self.drop(self.ff(self.norm2(x)))

    def step(self, x_t: torch.Tensor, S: torch.Tensor, window: torch.Tensor):
        y, S, window = self.mix.step(self.norm1(x_t), S, window)  # (B, 1, D)
        x_t = x_t + self.drop(y)
        return x_t + self.drop(self.ff(self.norm2(x_t))), S, window


@dataclass
class State:
    """What step() carries from token to token: the same size at every position."""

    S: list[torch.Tensor]  # per layer (B, H, Dk, Dv): the delta rule's memory
    window: list[torch.Tensor]  # per layer (B, K - 1, X): the convolutions' last inputs


COST = dict(train_cost="O(L C D + L D^2 / H), chunks of C in parallel", decode_cost="O(1)")


@register_model("deltanet", DeltaNetConfig,
                "DeltaNet (Yang et al. 2024): linear attention whose (Dk x Dv) state per head "
                "is edited by the delta rule", **COST)
@register_model("gated-deltanet", GatedDeltaNetConfig,
                "Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024): the delta rule behind a "
                "Mamba-2-style decay gate", **COST)
class DeltaNet(Backbone):
    """`layers` pre-norm blocks of the delta-rule mixer and a feed-forward, a final LayerNorm."""

    family = "delta-rule"
    causal = True
    references = {"chunked": "recurrent"}  # the chunked form is checked against the loop

    def __init__(self, config: GatedDeltaNetConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)  # (B, L, D)
        return self.norm(x)

    def init_state(self, batch_size: int) -> State:
        S, window = zip(*(b.mix.init_state(batch_size) for b in self.blocks))
        return State(list(S), list(window))

    def step(self, state: State, x_t: torch.Tensor) -> tuple[torch.Tensor, State]:
        """x_t (B, D) -> (B, D) and a new State (the old one is left as it was)."""
        x, S, windows = x_t[:, None, :], [], []  # (B, 1, D)
        for block, S_l, window in zip(self.blocks, state.S, state.window):
            x, S_l, window = block.step(x, S_l, window)
            S.append(S_l)
            windows.append(window)
        return self.norm(x)[:, 0], State(S, windows)

    def state_size(self, n_tokens: int) -> int:
        """H Dk Dv for S plus (K - 1)(2 H Dk + H Dv) buffered convolution inputs, whatever n."""
        mix = self.blocks[0].mix
        return mix.heads * mix.Dk * mix.Dv + (self.config.conv_size - 1) * mix.conv_channels
