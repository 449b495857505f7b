"""RetNet: multi-scale retention, attention without softmax whose weights decay by gamma per step.

References:
- Y. Sun, L. Dong, S. Huang, S. Ma, Y. Xia, J. Xue, J. Wang, F. Wei, "Retentive Network: A
  Successor to Transformer for Large Language Models", 2023, arXiv:2307.08621: retention's
  recurrent (equations 1-3), parallel (5) and chunkwise (7) forms, multi-scale retention with
  gamma_h = 1 - 2^(-5-h) and the swish gate (8), the RetNet block (9).
- microsoft/torchscale, torchscale/component/multiscale_retention.py and
  torchscale/architecture/retnet.py (`RetNetRelPos`, `DecoderLayer`): the authors' code, followed
  where the paper leaves a choice open (named below where it is made).

Per head, with q_n, k_n rotated by the angle n * theta (the paper's Theta, xPos-like):

    S_n = gamma S_{n-1} + k_n^T v_n,  o_n = q_n S_n                    (recurrent, step())
    O = (Q K^T . D) V,  D_nm = gamma^(n-m) for n >= m, else 0          (parallel, the reference)
    R_i = K_[i]^T (V_[i] . zeta) + gamma^C R_{i-1},                    (chunked, the fast path)
    O_[i] = (Q_[i] K_[i]^T . D) V_[i] + (Q_[i] R_{i-1}) . xi,
    zeta_u = gamma^(C-1-u), xi_s = gamma^(s+1) for u, s = 0..C-1 within chunk i

torchscale's normalisations, and which of them we keep:
- k is scaled by Dk^-1/2 (torchscale's `scaling`; the paper's 1/sqrt(d)).
- o_n is divided by sqrt(sum_{m<=n} gamma^(n-m)), the square root of D's row sum (torchscale's
  parallel `mask / mask.sum(-1).sqrt()` and recurrent `scale`). The same in all three forms here;
  torchscale's chunkwise form divides by the within-chunk row sum instead, a different positive
  factor per row that the GroupNorm after it removes (up to its eps).
- torchscale's data-dependent rescalings (parallel: |row sum of Q K^T . D| clamped to [1, 5e4];
  chunkwise: inner and cross scales) are left out: they keep fp16 in range, differ between its
  forms, and the GroupNorm removes them up to eps. Here retention runs in float32, and without
  them the three forms agree before the norm, to rounding.
- "GroupNorm" is torchscale's: an RMSNorm over each head's Dv values, no affine, eps 1e-6.
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

# B batch, L length, D model width, H heads, Dk key width (D / H), Dv value width per head
# (value_factor * D / H), F feed-forward width, C chunk length, N chunks, P B or 1 (positions)

IMPLS = ("chunked", "parallel")


@dataclass(frozen=True)
class RetNetConfig(ModelConfig):
    heads: int = 4  # H, one decay gamma_h = 1 - 2^(-5-h) each (h = 0..H-1, the paper's); D / H
    #                 must be even: theta rotates pairs of a head's coordinates
    value_factor: int = 2  # each head's value width is value_factor * D / H: 2, the paper's
    d_ff: int = 0  # feed-forward width F; 0 means 2 * d_model, the paper's FFN size
    chunk: int = 64  # C of impl="chunked": quadratic within a chunk, the state R across chunks
    eps: float = 1e-6  # of the RMSNorms and the GroupNorm: torchscale RetNet's layernorm_eps
    impl: str = "chunked"  # "chunked": the chunkwise form, the fast path; "parallel": the masked
    #                        quadratic (Q K^T . D) V, O(L^2), the reference it is checked against

    def validate(self) -> None:
        # types and signs, as every config's: d_ff = 0 (2 * d_model) may be 0
        check_fields(self, positive={"d_model", "layers", "heads", "value_factor", "chunk",
                                     "eps"})
        name = type(self).__name__
        if not self.dropout < 1.0:
            raise ConfigError(f"{name}.dropout must be in [0, 1), got {self.dropout}")
        if self.d_model % (2 * self.heads) != 0:
            raise ConfigError(f"{name}: d_model={self.d_model} must be a multiple of "
                              f"2 * heads={2 * self.heads} (theta rotates pairs of each head's "
                              f"d_model / heads coordinates); change heads or d_model")
        if self.impl not in IMPLS:
            raise ConfigError(f"{name}.impl must be one of {', '.join(IMPLS)}, "
                              f"got {self.impl!r}")

    @property
    def ff_width(self) -> int:
        return self.d_ff or 2 * self.d_model


def log_decays(heads: int, device=None) -> torch.Tensor:
    """log gamma_h, gamma_h = 1 - 2^(-5-h): head 0 keeps ~32 tokens, each next head twice as
    many. (H,) in float64; the forms below use exp(log gamma * distance), never gamma^n by
    repeated products."""
    return torch.log1p(-(2.0 ** (-5.0 - torch.arange(heads, dtype=torch.float64, device=device))))


def rotate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, Dk) with coordinate pair (2i, 2i+1) turned by pos * theta_i: the paper's
    Q . Theta. theta = 10000^-linspace(0, 1, Dk/2), torchscale's (the last pair turns at exactly
    1/10000, where RoPE's 10000^(-2i/Dk) stops short of it). pos (P, L)."""
    Dk = x.shape[-1]
    theta = 10000.0 ** -torch.linspace(0, 1, Dk // 2, dtype=torch.float64, device=x.device)
    angle = (pos[..., None].double() * theta.repeat_interleave(2))[:, None].to(x.dtype)
    pairs = x.unflatten(-1, (Dk // 2, 2))  # (B, H, L, Dk/2, 2)
    # each pair times i, as a complex number: (-x_1, x_0)
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (B, H, L, Dk)
    return x * angle.cos() + turned * angle.sin()


def row_scale(log_gamma: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """1 / sqrt(sum_{m<=n} gamma^(n-m)) = sqrt((1 - gamma) / (1 - gamma^(n+1))), (P, H, L, 1).
    n = -1 (no real token yet, under a mask) counts as 0, so the scale stays finite."""
    terms = pos.clamp(min=0)[:, None, :, None] + 1.0  # (P, 1, L, 1)
    lg = log_gamma[:, None, None]  # (H, 1, 1)
    return torch.sqrt(torch.expm1(lg) / torch.expm1(lg * terms))


def decay(log_gamma: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """D_nm = gamma^(p_n - p_m) for m <= n, else 0: (P, H, ..., L, L) from pos (P, ..., L)."""
    L = pos.shape[-1]
    causal = torch.ones(L, L, dtype=torch.bool, device=pos.device).tril()
    distance = (pos[..., :, None] - pos[..., None, :]).unsqueeze(1)  # (P, 1, ..., L, L)
    lg = log_gamma.view(-1, *[1] * (distance.dim() - 2))  # (H, 1, ..., 1)
    # exp(-inf) = 0 above the diagonal, where gamma^(negative) would overflow
    return torch.where(causal, lg * distance, -math.inf).exp()


def retain_parallel(q, k, v, log_gamma, pos) -> torch.Tensor:
    """The reference, equation 5: (Q K^T . D) V with D's rows normalised. q, k (B, H, L, Dk),
    v (B, H, L, Dv), log_gamma (H,), pos (P, L) -> (B, H, L, Dv)."""
    D = decay(log_gamma, pos)  # (P, H, L, L)
    return ((q @ k.transpose(-2, -1)) * D) @ v * row_scale(log_gamma, pos)


def retain_chunked(q, k, v, log_gamma, pos, chunk: int) -> torch.Tensor:
    """The same in O(L C (Dk + Dv) + L Dk Dv) per head, equation 7: within a chunk the parallel
    form, from the chunks before it the state R they left."""
    L = q.shape[2]
    scale = row_scale(log_gamma, pos)  # (P, H, L, 1)
    C = min(chunk, L)
    pad = -L % C
    if pad:  # zero keys write nothing; the padded queries' outputs are cut off below
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))  # (B, H, N * C, .)
        pos = torch.cat((pos, pos[:, -1:].expand(-1, pad)), dim=1)  # (P, N * C)
    q, k, v = (t.unflatten(2, (-1, C)) for t in (q, k, v))  # (B, H, N, C, .)
    p = pos.unflatten(1, (-1, C))  # (P, N, C)
    lg = log_gamma[:, None, None]  # (H, 1, 1)
    inner = ((q @ k.transpose(-2, -1)) * decay(log_gamma, p)) @ v  # (B, H, N, C, Dv)
    last = p[..., -1:]  # (P, N, 1): each chunk's last position
    # the position before each chunk: the previous chunk's last (chunk 0's R_{-1} is 0 anyway)
    before = torch.cat((p[:, :1, :1] - 1, last[:, :-1]), dim=1)  # (P, N, 1)
    zeta = torch.exp(lg * (last - p)[:, None])  # (P, H, N, C): from u to the chunk's end
    xi = torch.exp(lg * (p - before)[:, None])  # (P, H, N, C): from the chunk before's end to s
    kv = k.transpose(-2, -1) @ (v * zeta[..., None])  # (B, H, N, Dk, Dv): K^T (V . zeta)
    gamma_C = torch.exp(lg * (last - before)[:, None])[..., None]  # (P, H, N, 1, 1)
    R, states = torch.zeros_like(kv[:, :, 0]), []  # (B, H, Dk, Dv)
    # only N = L / C steps, each (Dk, Dv) per head; unbind: one backward node, not N slices
    for gamma_i, kv_i in zip(gamma_C.unbind(2), kv.unbind(2)):
        states.append(R)  # R_{i-1}, what chunk i reads
        R = gamma_i * R + kv_i
    cross = (q * xi[..., None]) @ torch.stack(states, dim=2)  # (B, H, N, C, Dv)
    return (inner + cross).flatten(2, 3)[:, :, :L] * scale  # (B, H, L, Dv)


class MultiScaleRetention(nn.Module):
    """W_Q, W_K, W_V, W_G; retention per head; GroupNorm; swish(X W_G) * Y; W_O (equation 8)."""

    def __init__(self, config: RetNetConfig):
        super().__init__()
        D, H, Dv = config.d_model, config.heads, config.value_factor * config.d_model
        self.heads, self.chunk, self.eps, self.impl = H, config.chunk, config.eps, config.impl
        self.widths = (D, D, Dv, Dv)  # q, k, v, g
        self.proj = nn.Linear(D, sum(self.widths), bias=False)  # W_Q, W_K, W_V, W_G stacked
        self.out_proj = nn.Linear(Dv, D, bias=False)  # W_O
        with torch.no_grad():  # torchscale's: xavier with gain 2^-2.5 for each of the four
            for w in self.proj.weight.split(self.widths):
                nn.init.xavier_uniform_(w, gain=2**-2.5)
            nn.init.xavier_uniform_(self.out_proj.weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D), mask (B, L) True at real tokens -> (B, L, D)."""
        L = x.shape[1]
        # a padded token takes no position: the tokens after it rotate and decay as if it were
        # not there (and the zeroed key below writes nothing)
        pos = (torch.arange(L, device=x.device)[None] if mask is None
               else mask.cumsum(1) - 1)  # (P, L)
        u = self.proj(x)  # (B, L, 2D + 2 Dv); bf16 under autocast, like every matmul
        with torch.autocast(x.device.type, enabled=False):  # the sums over L stay in float32
            q, k, v, g = self._features(u, pos)  # (B, H, L, Dk or Dv)
            if mask is not None:
                k = k * mask[:, None, :, None].to(k.dtype)
            log_gamma = log_decays(self.heads, x.device).to(q.dtype)
            if self.impl == "parallel":
                y = retain_parallel(q, k, v, log_gamma, pos.to(q.dtype))
            else:
                y = retain_chunked(q, k, v, log_gamma, pos.to(q.dtype), self.chunk)
        return self._out(y, g, x.dtype)

    def init_state(self, batch_size: int) -> torch.Tensor:
        """S (B, H, Dk, Dv) before the first token: zeros, in float32."""
        w = self.out_proj.weight
        Dk, Dv = self.widths[0] // self.heads, self.widths[2] // self.heads
        return w.new_zeros(batch_size, self.heads, Dk, Dv,
                           dtype=torch.promote_types(w.dtype, torch.float32))

    def step(self, x_t: torch.Tensor, S: torch.Tensor, t: int):
        """Token t, x_t (B, 1, D) -> (B, 1, D) and the next S: O(H Dk Dv), flat in t."""
        u = self.proj(x_t)  # (B, 1, 2D + 2 Dv)
        with torch.autocast(x_t.device.type, enabled=False):
            pos = torch.full((1, 1), float(t), device=x_t.device)  # (1, 1)
            q, k, v, g = self._features(u, pos)  # (B, H, 1, .)
            log_gamma = log_decays(self.heads, x_t.device).to(S.dtype)
            # S_n = gamma S_{n-1} + k_n^T v_n, equation 1, (B, H, Dk, Dv)
            S = log_gamma.exp()[:, None, None] * S + k.transpose(-2, -1) @ v
            y = (q @ S) * row_scale(log_gamma, pos.to(S.dtype))  # o_n = q_n S_n, (B, H, 1, Dv)
        return self._out(y, g, x_t.dtype), S

    def _features(self, u: torch.Tensor, pos: torch.Tensor):
        """(B, L, 2D + 2 Dv) -> q, k rotated (k scaled by Dk^-1/2), v, g: (B, H, L, .), float32
        at least."""
        q, k, v, g = (widened(t).unflatten(-1, (self.heads, -1)).transpose(1, 2)
                      for t in u.split(self.widths, dim=-1))  # (B, H, L, Dk or Dv)
        pos = pos.to(q.dtype)
        return rotate(q, pos), rotate(k * k.shape[-1] ** -0.5, pos), v, g

    def _out(self, y: torch.Tensor, g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        y = F.rms_norm(y, y.shape[-1:], eps=self.eps)  # GroupNorm: each head on its own scale
        y = (F.silu(g) * y).transpose(1, 2).flatten(2)  # (B, L, H Dv): the swish gate, concat
        # back to the stream's dtype (a bf16 model stays bf16; autocast recasts for W_O itself)
        return self.out_proj(y.to(dtype))


class GLU(nn.Module):
    """torchscale RetNet's feed-forward: (gelu(X W_1) * X W_gate) W_2, no biases."""

    def __init__(self, config: RetNetConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, 2 * config.ff_width, bias=False)  # W_1, W_gate
        self.down = nn.Linear(config.ff_width, config.d_model, bias=False)  # W_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.up(x).chunk(2, dim=-1)  # (..., F) each
        return self.down(F.gelu(h) * gate)


class Block(nn.Module):
    """Equation 9: Y = MSR(LN(X)) + X, X' = FFN(LN(Y)) + Y; LN is torchscale's RMSNorm."""

    def __init__(self, config: RetNetConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(config.d_model, eps=config.eps)
        self.retention = MultiScaleRetention(config)
        self.norm2 = nn.RMSNorm(config.d_model, eps=config.eps)
        self.ff = GLU(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.retention(self.norm1(x), mask))  # (B, L, D)
        return x + self.drop(self.ff(self.norm2(x)))

    def step(self, x_t: torch.Tensor, S: torch.Tensor, t: int):
        y, S = self.retention.step(self.norm1(x_t), S, t)  # (B, 1, D)
        x_t = x_t + self.drop(y)
        return x_t + self.drop(self.ff(self.norm2(x_t))), S


@dataclass
class State:
    """What step() carries from token to token: the same size at every position."""

    S: list[torch.Tensor]  # per layer (B, H, Dk, Dv): sum_m gamma^(n-m) k_m^T v_m
    t: int = 0  # position of the next token: its rotation and its row scale


@register_model("retnet", RetNetConfig,
                "RetNet (Sun et al. 2023): multi-scale retention, decaying linear attention with "
                "rotated q, k, a (Dk x Dv) state per head",
                train_cost="O(L C D + L D^2 / H), chunks of C in parallel",
                decode_cost="O(1)")
class RetNet(Backbone):
    """`layers` RetNet blocks (equation 9) and a final RMSNorm."""

    family = "linear-attention"
    causal = True
    references = {"chunked": "parallel"}  # the chunkwise form is checked against the parallel

    def __init__(self, config: RetNetConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.RMSNorm(config.d_model, eps=config.eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)  # (B, L, D)
        return self.norm(x)

    def init_state(self, batch_size: int) -> State:
        return State([b.retention.init_state(batch_size) for b in self.blocks])

    def step(self, state: State, x_t: torch.Tensor) -> tuple[torch.Tensor, State]:
        """x_t (B, D) -> (B, D) and a new State (the old one is left as it was)."""
        x, S = x_t[:, None, :], []  # (B, 1, D)
        for block, S_l in zip(self.blocks, state.S):
            x, S_l = block.step(x, S_l, state.t)
            S.append(S_l)
        return self.norm(x)[:, 0], State(S, state.t + 1)

    def state_size(self, n_tokens: int) -> int:
        """S, Dk x Dv per head, whatever n_tokens: value_factor D^2 / H (the position t is an
        integer; the row scale is computed from it, not carried)."""
        c = self.config
        return c.heads * (c.d_model // c.heads) * (c.value_factor * c.d_model // c.heads)
