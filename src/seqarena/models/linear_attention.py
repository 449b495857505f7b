"""Causal linear attention: softmax replaced by a feature map, which makes attention a recurrence.

References:
- A. Katharopoulos, A. Vyas, N. Pappas, F. Fleuret, "Transformers are RNNs: Fast Autoregressive
  Transformers with Linear Attention", ICML 2020, arXiv:2006.16236: linearised attention and the
  feature map phi(x) = elu(x) + 1 (section 3.2), causal masking (3.3), the RNN view (3.4).
- idiap/fast-transformers, `CausalLinearAttention` (fast_transformers/attention/
  causal_linear_attention.py): the authors' implementation; eps is added to the normaliser.
- flash-linear-attention, fla/ops/linear_attn (`naive_chunk_linear_attn`): the chunked form,
  quadratic inside a chunk of 64, the running state between chunks.

With sim(q, k) = phi(q)^T phi(k) in place of exp(q^T k / sqrt(Dh)), causal attention becomes

    y_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps),  S_i = sum_{j<=i} phi(k_j) v_j^T,
                                                    z_i = sum_{j<=i} phi(k_j),

so S_t = S_{t-1} + phi(k_t) v_t^T and z_t = z_{t-1} + phi(k_t): an RNN whose state is one
(Dh, Dh) matrix and one Dh vector per head, whatever the position. The same numbers come out of
three paths on the same weights: "parallel" (the masked L x L quadratic, the reference),
"chunked" (the fast path) and step() (the recurrence, for decoding).

Blocks are our Transformer's (models/transformer.py), attention swapped: pre-norm residual
branches, its feed-forward and its positions, reused by import.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqarena.config import check_fields
from seqarena.errors import ConfigError
from seqarena.models.base import Backbone
from seqarena.models.registry import ModelConfig, register_model
from seqarena.models.transformer import FeedForward, Positions, check_block_fields

# B batch, L length, D model width, H heads, Dh head width (D / H), C chunk length, N chunks

IMPLS = ("chunked", "parallel")


@dataclass(frozen=True)
class LinearAttentionConfig(ModelConfig):
    heads: int = 4  # heads H; d_model must divide by it. The state is H (Dh, Dh) matrices:
    #                 D^2 / H numbers per layer, so more heads, a smaller state
    d_ff: int = 0  # feed-forward width F; 0 means 4 * d_model, as in our Transformer blocks
    activation: str = "gelu"  # feed-forward nonlinearity, "gelu" or "relu", as the Transformer's
    positions: str = "sinusoidal"  # "sinusoidal", "learned" or "none", the Transformer's Positions
    max_len: int = 4096  # learned positions: the longest sequence; sinusoids: rows precomputed
    chunk: int = 64  # C of impl="chunked": quadratic within a chunk, the state across chunks;
    #                  64, as flash-linear-attention's chunk form
    eps: float = 1e-6  # added to the normaliser phi(q)^T z, as fast-transformers does: it is
    #                    positive anyway, eps only keeps an underflowed one from dividing by 0
    impl: str = "chunked"  # "chunked": the fast path; "parallel": the masked quadratic of
    #                        section 3.3 written out, O(L^2), the reference it is checked against

    def validate(self) -> None:
        # types and signs, as every config's: d_ff = 0 (4 * d_model) and max_len = 0 may be 0
        check_fields(self, positive={"d_model", "layers", "heads", "chunk"})
        name = type(self).__name__
        if not self.dropout < 1.0:
            raise ConfigError(f"{name}.dropout must be in [0, 1), got {self.dropout}")
        check_block_fields(self, IMPLS)

    @property
    def ff_width(self) -> int:  # what FeedForward reads
        return self.d_ff or 4 * self.d_model


def phi(x: torch.Tensor) -> torch.Tensor:
    """The paper's feature map elu(x) + 1: positive, so every normaliser is > 0."""
    return F.elu(x) + 1.0


def quadratic(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """sum_{j<=i} phi(q_i)^T phi(k_j) v_j and sum_{j<=i} phi(q_i)^T phi(k_j), for all i at once.

    q, k (after phi), v (..., L, Dh) -> (..., L, Dh) and (..., L, 1)."""
    # the causal mask zeroes j > i: with positive scores, 0 is "no weight", where softmax needs -inf
    A = (q @ k.transpose(-2, -1)).tril()  # (..., L, L)
    return A @ v, A.sum(-1, keepdim=True)


def attend_parallel(q, k, v, eps: float) -> torch.Tensor:
    """The reference: the masked quadratic normalised by its row sums, (B, H, L, Dh)."""
    numerator, normaliser = quadratic(q, k, v)
    return numerator / (normaliser + eps)


def before_each(x: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sums over chunks (dim 2): the sum of the chunks before each one."""
    return torch.cat((torch.zeros_like(x[:, :, :1]), x.cumsum(2)[:, :, :-1]), dim=2)


def attend_chunked(q, k, v, chunk: int, eps: float) -> torch.Tensor:
    """The same (B, H, L, Dh) in O(L C Dh + L Dh^2) per head: the quadratic inside each chunk,
    plus what the chunks before it left in S and z."""
    B, H, L, Dh = q.shape
    C = min(chunk, L)
    pad = -L % C
    if pad:  # zero keys add nothing to S or z; the padded queries' outputs are cut off below
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))  # (B, H, N * C, Dh)
    q, k, v = (t.reshape(B, H, -1, C, Dh) for t in (q, k, v))  # (B, H, N, C, Dh)
    numerator, normaliser = quadratic(q, k, v)  # (B, H, N, C, Dh), (B, H, N, C, 1)
    S = before_each(k.transpose(-2, -1) @ v)  # (B, H, N, Dh, Dh): sum phi(k_j) v_j^T, earlier
    z = before_each(k.sum(3, keepdim=True).transpose(-2, -1))  # (B, H, N, Dh, 1): sum phi(k_j)
    y = (numerator + q @ S) / (normaliser + q @ z + eps)  # (B, H, N, C, Dh)
    return y.reshape(B, H, -1, Dh)[:, :, :L]


def widened(t: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision tensors: a long sum of bf16 terms loses the early tokens."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class LinearAttention(nn.Module):
    """Multi-head causal linear attention: W_q, W_k, W_v, the attention above, W_o."""

    def __init__(self, config: LinearAttentionConfig):
        super().__init__()
        self.heads, self.chunk, self.eps, self.impl = (config.heads, config.chunk, config.eps,
                                                       config.impl)
        self.in_proj = nn.Linear(config.d_model, 3 * config.d_model)  # W_q, W_k, W_v stacked
        self.out_proj = nn.Linear(config.d_model, config.d_model)  # W_o, mixes the heads

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D), mask (B, L) True at real tokens -> (B, L, D)."""
        qkv = self.in_proj(x)  # (B, L, 3D); bf16 under autocast, like every matmul
        with torch.autocast(x.device.type, enabled=False):  # the sums over L stay in float32
            q, k, v = self._features(qkv)  # (B, H, L, Dh)
            if mask is not None:  # a padded key weighs 0 for every query
                k = k * mask[:, None, :, None].to(k.dtype)
            if self.impl == "parallel":
                y = attend_parallel(q, k, v, self.eps)
            else:
                y = attend_chunked(q, k, v, self.chunk, self.eps)
        return self._out(y, x.dtype)

    def init_state(self, batch_size: int):
        """S (B, H, Dh, Dh) and z (B, H, Dh, 1) before the first token: zeros, in float32."""
        w = self.out_proj.weight
        Dh, dtype = w.shape[0] // self.heads, torch.promote_types(w.dtype, torch.float32)
        return (w.new_zeros(batch_size, self.heads, Dh, Dh, dtype=dtype),
                w.new_zeros(batch_size, self.heads, Dh, 1, dtype=dtype))

    def step(self, x_t: torch.Tensor, S: torch.Tensor, z: torch.Tensor):
        """One token x_t (B, 1, D) -> (B, 1, D) and the next (S, z): O(H Dh^2), flat in t."""
        qkv = self.in_proj(x_t)  # (B, 1, 3D)
        with torch.autocast(x_t.device.type, enabled=False):
            q, k, v = self._features(qkv)  # (B, H, 1, Dh)
            S = S + k.transpose(-2, -1) @ v  # S_t = S_{t-1} + phi(k_t) v_t^T, (B, H, Dh, Dh)
            z = z + k.transpose(-2, -1)  # z_t = z_{t-1} + phi(k_t), (B, H, Dh, 1)
            y = (q @ S) / (q @ z + self.eps)  # (B, H, 1, Dh)
        return self._out(y, x_t.dtype), S, z

    def _features(self, qkv: torch.Tensor):
        """(B, L, 3D) -> phi(q), phi(k), v, each (B, H, L, Dh) and at least float32."""
        B, L, _ = qkv.shape
        q, k, v = (widened(t).reshape(B, L, self.heads, -1).transpose(1, 2)
                   for t in qkv.chunk(3, dim=-1))  # (B, H, L, Dh)
        return phi(q), phi(k), v

    def _out(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        B, H, L, Dh = y.shape
        y = y.transpose(1, 2).reshape(B, L, H * Dh)  # (B, L, D): Concat(heads)
        # back to the stream's dtype (a bf16 model stays bf16; autocast recasts for W_o itself)
        return self.out_proj(y.to(dtype))


class Block(nn.Module):
    """Pre-norm residual branches, as our Transformer's: x + attn(norm(x)), then x + ff(norm(x))."""

    def __init__(self, config: LinearAttentionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attn = LinearAttention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.ff = FeedForward(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))  # (B, L, D)
        return x + self.drop(self.ff(self.norm2(x)))

    def step(self, x_t: torch.Tensor, S: torch.Tensor, z: torch.Tensor):
        y, S, z = self.attn.step(self.norm1(x_t), S, z)  # (B, 1, D)
        x_t = x_t + self.drop(y)
        return x_t + self.drop(self.ff(self.norm2(x_t))), S, z


@dataclass
class State:
    """What step() carries from token to token: the same size at every position."""

    S: list[torch.Tensor]  # per layer (B, H, Dh, Dh): sum of phi(k_j) v_j^T so far
    z: list[torch.Tensor]  # per layer (B, H, Dh, 1): sum of phi(k_j) so far
    t: int = 0  # position of the next token (for the positional encoding)


@register_model("linear-attention", LinearAttentionConfig,
                "Causal linear attention (Katharopoulos et al. 2020): elu(x) + 1 for softmax, "
                "an RNN with a (Dh x Dh) state per head",
                train_cost="O(L C D + L D^2 / H), chunks of C in parallel",
                decode_cost="O(1)")
class LinearTransformer(Backbone):
    """Positions, `layers` pre-norm blocks of causal linear attention, a final LayerNorm."""

    family = "linear-attention"
    causal = True
    references = {"chunked": "parallel"}  # the chunked form is checked against the quadratic

    def __init__(self, config: LinearAttentionConfig):
        super().__init__(config)
        self.pos = Positions(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pos(x)  # (B, L, D)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def state_size(self, n_tokens: int) -> int:
        """S and z of every head: H (Dh^2 + Dh) floats, whatever n_tokens."""
        Dh = self.d_model // self.config.heads
        return self.config.heads * (Dh * Dh + Dh)

    def init_state(self, batch_size: int) -> State:
        S, z = zip(*(b.attn.init_state(batch_size) for b in self.blocks))
        return State(list(S), list(z))

    def step(self, state: State, x_t: torch.Tensor) -> tuple[torch.Tensor, State]:
        """x_t (B, D) -> (B, D) and a new State (the old one is left as it was)."""
        x = self.pos(x_t[:, None, :], start=state.t)  # (B, 1, D)
        S, z = [], []
        for block, S_l, z_l in zip(self.blocks, state.S, state.z):
            x, S_l, z_l = block.step(x, S_l, z_l)
            S.append(S_l)
            z.append(z_l)
        return self.norm(x)[:, 0], State(S, z, state.t + 1)
