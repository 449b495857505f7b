"""Mamba-2: a selective state-space model whose A is a scalar per head, run as SSD (state space
duality): matmuls inside chunks, a recurrence between them.

References:
- T. Dao, A. Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
  Structured State Space Duality", ICML 2024, arXiv:2405.21060: the recurrence (section 3), the
  SSD chunked algorithm (section 6, Listing 1), the Mamba-2 block (section 7).
- state-spaces/mamba, mamba_ssm/modules/ssd_minimal.py (Listing 1: segsum, diagonal blocks,
  chunk states, state passing, state -> output) and mamba_ssm/modules/mamba2.py (`Mamba2`: in_proj
  -> [z, xBC, dt], the causal depthwise conv on xBC, dt_bias and A_log initialisation, D,
  the gated RMSNorm with norm_before_gate=False, `step` with its conv and SSM states).
- R. Grazzi, J. Siems, et al., "Unlocking State-Tracking in Linear RNNs Through Negative
  Eigenvalues", 2024, arXiv:2411.12537: decays 2 exp(dt A) - 1 in (-1, 1) (`negative_eigen`).

Per head, with a_t = exp(dt_t A) (or 2 exp(dt_t A) - 1), the state h_t is a (P, N) matrix:

    h_t = a_t h_{t-1} + dt_t x_t B_t^T,    y_t = h_t C_t + D x_t,

B_t, C_t shared by every head (ngroups = 1). Unrolled, y = (L o C B^T) (dt x) + D x with
L_ij = a_{j+1} ... a_i: a masked attention whose mask is a product of decays, which is what
makes the chunked form exact. Three paths on the same weights: "recurrent" (the loop above,
the reference), "chunked" (the fast path) and step() (one token, for decoding).

The block is mamba_ssm's MambaLMHeadModel default: x + Mamba2(RMSNorm(x)), no MLP
(d_intermediate = 0), a final RMSNorm. d_state N = 16, not the reference's 128: our d_model is
64 where the paper's start at 768, and the state (H P N floats) is what a recurrence pays for.
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
from seqarena.models.scan import scan_tree

# B batch, L length, D model width, E inner width (expand * D), H heads, P head width (E / H),
# N state size, W conv width, Q chunk length, K chunks

IMPLS = ("chunked", "recurrent")
A_INIT = (1.0, 16.0)  # -A drawn uniform in this range, mamba_ssm's A_init_range


@dataclass(frozen=True)
class Mamba2Config(ModelConfig):
    d_state: int = 16  # N, the state per head is (P, N); the reference's 128 is for d_model >= 768,
    #                    ours is 64, and the state (E N floats per layer) is what decoding carries
    expand: int = 2  # E = expand * d_model, the inner width, as in the reference
    headdim: int = 16  # P; heads H = E / P = 8 at d_model 64 (the reference: 64, for E >= 1536)
    d_conv: int = 4  # W, the causal depthwise conv on x, B, C, as in the reference
    chunk: int = 64  # Q of impl="chunked": matmuls within Q tokens, the state across chunks;
    #                  64 as Listing 1's test (the fused kernels use 256, too many for tiny widths)
    dt_min: float = 0.001  # softplus(dt_bias) starts log-uniform in [dt_min, dt_max], as in the
    dt_max: float = 0.1  # reference: steps dt from slow (remember ~1/dt tokens) to fast
    negative_eigen: bool = False  # True: decays 2 exp(dt A) - 1 in (-1, 1) (Grazzi et al.), so a
    #                               state can flip sign per token (parity); False: Mamba-2's (0, 1)
    impl: str = "chunked"  # "chunked": SSD, the fast path; "recurrent": the token-by-token loop

    def validate(self) -> None:
        check_fields(self, positive={"d_model", "layers", "d_state", "expand", "headdim",
                                     "d_conv", "chunk", "dt_min", "dt_max"})
        name = type(self).__name__
        if not self.dropout < 1.0:
            raise ConfigError(f"{name}.dropout must be in [0, 1), got {self.dropout}")
        if self.expand * self.d_model % self.headdim:
            raise ConfigError(f"{name}.headdim={self.headdim} must divide expand * d_model = "
                              f"{self.expand * self.d_model}")
        if not self.dt_min <= self.dt_max:
            raise ConfigError(f"{name}.dt_min={self.dt_min} must not exceed "
                              f"dt_max={self.dt_max}")
        if self.impl not in IMPLS:
            raise ConfigError(f"{name}.impl must be one of {', '.join(IMPLS)}, got {self.impl!r}")


def decays(dt: torch.Tensor, A: torch.Tensor, negative_eigen: bool) -> torch.Tensor:
    """a_t per token and head: exp(dt A) in (0, 1], or 2 exp(dt A) - 1 in (-1, 1]."""
    dA = dt * A  # (B, L, H)
    # 1 + 2 expm1 rather than 2 exp - 1: exact to rounding near a = 1, where long memories live
    return 1 + 2 * torch.expm1(dA) if negative_eigen else dA.exp()


def ssd_recurrent(x, dt, A, B, C, D, negative_eigen=False, h=None):
    """The reference: h_t = a_t h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t + D x_t, token by token.

    x (B, L, H, P), dt (B, L, H), A, D (H,), B, C (B, L, N), h (B, H, P, N) or None (zeros)
    -> y (B, L, H, P) and the last state h (B, H, P, N)."""
    if h is None:
        h = x.new_zeros(*x.shape[:1], *x.shape[2:], B.shape[-1])  # (B, H, P, N)
    a = decays(dt, A, negative_eigen)
    ys = []
    for x_t, dt_t, a_t, B_t, C_t in zip(*(t.unbind(1) for t in (x, dt, a, B, C))):
        write = (dt_t[..., None] * x_t)[..., None] * B_t[:, None, None, :]  # (B, H, P, N)
        h = a_t[..., None, None] * h + write
        ys.append((h @ C_t[:, None, :, None])[..., 0] + D[:, None] * x_t)  # (B, H, P)
    return torch.stack(ys, dim=1), h


def segsum(log_a: torch.Tensor) -> torch.Tensor:
    """(..., Q) -> (..., Q, Q): sum_{j < k <= i} log a_k at [i, j], 0 on and above the diagonal.

    Summed down each column, never as cumsum_i - cumsum_j, so nothing cancels (Listing 1's
    segsum; it also writes -inf above the diagonal, which ssd_chunked masks in C B^T instead)."""
    Q = log_a.shape[-1]
    below = torch.ones(Q, Q, dtype=log_a.dtype, device=log_a.device).tril(-1)
    return (log_a[..., :, None] * below).cumsum(-2)  # (..., Q, Q)


def ssd_chunked(x, dt, A, B, C, D, chunk: int, negative_eigen=False):
    """The same (y, last h) by SSD: per chunk of Q tokens the masked attention form, and the
    states chunk to chunk; O(L Q (N + H P) + L H P N). Shapes as ssd_recurrent's."""
    b, L, H, P = x.shape
    N = B.shape[-1]
    Q = min(chunk, L)
    pad = -L % Q
    if pad:  # dt = 0 pads: a = 1 and nothing written, so the last state is untouched
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    K = x.shape[1] // Q
    a = decays(dt, A, negative_eigen)
    # |a| in log space for the products of decays; signs (only with negative_eigen) separately:
    # a product of signs is +-1 exactly, sign(a_{j+1} ... a_i) = S_i S_j with S = cumprod(sign).
    # An a of exactly 0 becomes the smallest float, not log 0 (whose gradient is inf * 0 = nan)
    log_a = (dt * A if not negative_eigen
             else a.abs().clamp_min(torch.finfo(a.dtype).tiny).log())
    log_a = log_a.reshape(b, K, Q, H).permute(0, 3, 1, 2)  # (B, H, K, Q)
    X = (x * dt[..., None]).reshape(b, K, Q, H, P).permute(0, 3, 1, 2, 4)  # (B, H, K, Q, P)
    B, C = (t.reshape(b, 1, K, Q, N) for t in (B, C))  # (B, 1, K, Q, N): shared by the heads

    within = segsum(log_a).exp()  # (B, H, K, Q, Q): a_{j+1} ... a_i for j <= i
    to_end = within[..., -1, :]  # (B, H, K, Q): a_{j+1} ... a_{Q-1}, from token j to chunk end
    from_start = log_a.cumsum(-1).exp()  # (B, H, K, Q): a_0 ... a_i, from chunk start to i
    if negative_eigen:
        S = torch.where(a < 0, -1.0, 1.0).to(a.dtype)  # a = 0 counts +1: |a| zeroes it anyway
        S = S.reshape(b, K, Q, H).permute(0, 3, 1, 2).cumprod(-1)  # (B, H, K, Q)
        within = within * S[..., :, None] * S[..., None, :]
        to_end = to_end * S[..., -1:] * S
        from_start = from_start * S

    # 1. diagonal blocks: within each chunk, y_i = sum_{j<=i} (C_i . B_j) L_ij dt_j x_j; the
    # causal mask goes on C B^T, shared by the heads, rather than on H copies of L
    CB = (C @ B.transpose(-1, -2)).tril()  # (B, 1, K, Q, Q)
    y = (CB * within) @ X  # (B, H, K, Q, P)
    # 2. what each chunk alone leaves in the state at its end: sum_j L_end,j dt_j x_j B_j^T
    written = (X * to_end[..., None]).transpose(-1, -2) @ B  # (B, H, K, P, N)
    # 3. the state at each chunk's end, chunk after chunk: h_k = (a over chunk k) h_{k-1} + ...;
    # a linear scan over K, as mamba_ssm's kernels pass states (Listing 1 uses a K x K segsum)
    carry = from_start[..., -1:, None].expand(b, H, K, P, N)  # (B, H, K, P, N)
    h = scan_tree(carry.reshape(b * H, K, P * N), written.reshape(b * H, K, P * N))
    h = h.reshape(b, H, K, P, N)
    h_before = torch.cat((torch.zeros_like(h[:, :, :1]), h[:, :, :-1]), dim=2)  # (B, H, K, P, N)
    # 4. the state entering a chunk, decayed to token i and read by C_i
    y = y + (C @ h_before.transpose(-1, -2)) * from_start[..., None]  # (B, H, K, Q, P)
    y = y.permute(0, 2, 3, 1, 4).reshape(b, K * Q, H, P)[:, :L]  # (B, L, H, P)
    return y + D[:, None] * x[:, :L], h[:, :, -1]


class Mamba2Mixer(nn.Module):
    """in_proj -> [z, xBC, dt]; causal conv + SiLU on xBC; the SSM; RMSNorm(y * silu(z));
    out_proj. Parameters named as the reference's."""

    def __init__(self, config: Mamba2Config):
        super().__init__()
        self.config = config
        E, N = config.expand * config.d_model, config.d_state
        self.heads = E // config.headdim
        self.widths = (E, E + 2 * N, self.heads)  # z, xBC, dt
        self.in_proj = nn.Linear(config.d_model, sum(self.widths), bias=False)
        # depthwise: each channel of x, B, C sees its own last W inputs, nothing across channels.
        # An nn.Conv1d for the reference's parameter names and init; _conv applies it
        self.conv1d = nn.Conv1d(E + 2 * N, E + 2 * N, config.d_conv, groups=E + 2 * N)
        # softplus(dt_bias) log-uniform in [dt_min, dt_max]; log(expm1(dt)) inverts softplus
        dt = torch.exp(torch.empty(self.heads).uniform_(math.log(config.dt_min),
                                                        math.log(config.dt_max)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # A = -exp(A_log) < 0 whatever A_log is, so exp(dt A) stays a decay in (0, 1)
        self.A_log = nn.Parameter(torch.empty(self.heads).uniform_(*A_INIT).log())
        self.D = nn.Parameter(torch.ones(self.heads))  # the skip y += D x, one per head
        self.norm = nn.RMSNorm(E, eps=1e-5)  # gated: RMSNorm(y * silu(z)), norm_before_gate=False
        self.out_proj = nn.Linear(E, config.d_model, bias=False)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """u (B, L, D), mask (B, L) True at real tokens -> (B, L, D).

        A padded token writes nothing: zeros into the conv, and dt = 0, so the state neither
        decays nor grows. Left or right padding thus leaves the real tokens' outputs as without
        it; a gap mid-sequence still holds a place in the conv's W-token window."""
        zxbcdt = self.in_proj(u)  # (B, L, 2E + 2N + H); bf16 under autocast, like every matmul
        with torch.autocast(u.device.type, enabled=False):  # conv, state and norm in float32
            z, xBC, dt = widened(zxbcdt).split(self.widths, dim=-1)
            if mask is not None:
                keep = mask[..., None].to(xBC.dtype)  # (B, L, 1)
                xBC = xBC * keep
            xBC = self._conv(F.pad(xBC, (0, 0, self.config.d_conv - 1, 0)))  # (B, L, E + 2N)
            dt = F.softplus(dt + self.dt_bias.to(dt.dtype))  # (B, L, H)
            if mask is not None:
                dt = dt * keep
            y, _ = self._ssm(xBC, dt)
            y = self._gate(y, z)
        return self.out_proj(y.to(u.dtype))

    def init_state(self, batch_size: int):
        """The last W - 1 inputs of the conv (B, W - 1, E + 2N) and h (B, H, P, N): zeros."""
        w, c = self.out_proj.weight, self.config
        dtype = torch.promote_types(w.dtype, torch.float32)
        return (w.new_zeros(batch_size, c.d_conv - 1, self.widths[1], dtype=dtype),
                w.new_zeros(batch_size, self.heads, c.headdim, c.d_state, dtype=dtype))

    def step(self, u_t: torch.Tensor, window: torch.Tensor, h: torch.Tensor):
        """One token u_t (B, D) -> (B, D) and the next (window, h): O(H P N + E W), flat in t."""
        zxbcdt = self.in_proj(u_t)  # (B, 2E + 2N + H)
        with torch.autocast(u_t.device.type, enabled=False):
            z, xBC, dt = widened(zxbcdt).split(self.widths, dim=-1)
            window = torch.cat((window, xBC[:, None]), dim=1)  # (B, W, E + 2N)
            xBC = self._conv(window)  # (B, 1, E + 2N)
            dt = F.softplus(dt + self.dt_bias.to(dt.dtype))[:, None]  # (B, 1, H)
            y, h = self._ssm(xBC, dt, h)
            y = self._gate(y[:, 0], z)
        return self.out_proj(y.to(u_t.dtype)), window[:, 1:], h

    def _conv(self, xBC: torch.Tensor) -> torch.Tensor:
        """(B, W - 1 + L, E + 2N), the W - 1 inputs before the first included -> (B, L, E + 2N).

        W shifted multiply-adds, not F.conv1d: on CPU its depthwise backward took ~50x longer."""
        w = self.conv1d.weight[:, 0].t().to(xBC.dtype)  # (W, E + 2N)
        W, L = w.shape[0], xBC.shape[1] - w.shape[0] + 1
        return F.silu(sum((xBC[:, k:k + L] * w[k] for k in range(W)),
                          self.conv1d.bias.to(xBC.dtype)))

    def _ssm(self, xBC: torch.Tensor, dt: torch.Tensor, h: torch.Tensor | None = None):
        """(B, L, E + 2N), dt (B, L, H) -> y (B, L, E) and the last h; step() passes its h."""
        b, L, _ = xBC.shape
        E, N = self.widths[0], self.config.d_state
        x, B, C = xBC.split((E, N, N), dim=-1)
        x = x.reshape(b, L, self.heads, -1)  # (B, L, H, P)
        A = -torch.exp(self.A_log.to(x.dtype))  # (H,)
        D, neg = self.D.to(x.dtype), self.config.negative_eigen
        if h is None and self.config.impl == "chunked":
            y, h = ssd_chunked(x, dt, A, B, C, D, self.config.chunk, neg)
        else:
            y, h = ssd_recurrent(x, dt, A, B, C, D, neg, h)
        return y.reshape(b, L, E), h

    def _gate(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The reference's gated RMSNorm: normalise y * silu(z), not y (norm_before_gate=False)."""
        return F.rms_norm(y * F.silu(z), self.norm.normalized_shape,
                          self.norm.weight.to(y.dtype), self.norm.eps)


class Block(nn.Module):
    """x + Mamba2(RMSNorm(x)): mamba_ssm's Block with no MLP after the mixer."""

    def __init__(self, config: Mamba2Config):
        super().__init__()
        self.norm = nn.RMSNorm(config.d_model, eps=1e-5)
        self.mixer = Mamba2Mixer(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.drop(self.mixer(self.norm(x), mask))  # (B, L, D)

    def step(self, x_t: torch.Tensor, window: torch.Tensor, h: torch.Tensor):
        y, window, h = self.mixer.step(self.norm(x_t), window, h)  # (B, D)
        return x_t + self.drop(y), window, h


@dataclass
class State:
    """What step() carries from token to token: the same size at every position."""

    window: list[torch.Tensor]  # per layer (B, W - 1, E + 2N): the conv's last inputs
    h: list[torch.Tensor]  # per layer (B, H, P, N): the SSM state


@register_model("mamba2", Mamba2Config,
                "Mamba-2 (Dao & Gu 2024): selective SSM, scalar A per head, chunked SSD; "
                "negative_eigen for decays in (-1, 1)",
                train_cost="O(L Q (N + E) + L E N), chunks of Q in parallel",
                decode_cost="O(1)")
class Mamba2(Backbone):
    """`layers` pre-norm residual Mamba-2 mixers, a final RMSNorm."""

    family = "ssm"
    causal = True
    references = {"chunked": "recurrent"}  # SSD is checked against the token-by-token loop

    def __init__(self, config: Mamba2Config):
        super().__init__(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.RMSNorm(config.d_model, eps=1e-5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)  # (B, L, D)
        return self.norm(x)

    def init_state(self, batch_size: int) -> State:
        window, h = zip(*(b.mixer.init_state(batch_size) for b in self.blocks))
        return State(list(window), list(h))

    def step(self, state: State, x_t: torch.Tensor) -> tuple[torch.Tensor, State]:
        """x_t (B, D) -> (B, D) and a new State (the old one is left as it was)."""
        windows, hs = [], []
        for block, window, h in zip(self.blocks, state.window, state.h):
            x_t, window, h = block.step(x_t, window, h)
            windows.append(window)
            hs.append(h)
        return self.norm(x_t), State(windows, hs)

    def uncounted_flops(self, batch: int, seq_len: int) -> float:
        """The depthwise conv, W multiply-adds per channel and token (F.conv1d would be counted
        so; _conv's elementwise form is not seen)."""
        c = self.config
        channels = c.expand * c.d_model + 2 * c.d_state
        return float(c.layers * 2 * batch * seq_len * channels * c.d_conv)

    def state_size(self, n_tokens: int) -> int:
        """(W - 1)(E + 2N) conv inputs + H P N = E N state, whatever n_tokens."""
        c = self.config
        E = c.expand * c.d_model
        return (c.d_conv - 1) * (E + 2 * c.d_state) + E * c.d_state
