"""mLSTM: the xLSTM's matrix-memory LSTM, a linear recurrence with an exponential input gate.

References:
- M. Beck, K. Poeppel, M. Spanring, A. Auer, O. Prudnikova, M. Kopp, G. Klambauer,
  J. Brandstetter, S. Hochreiter, "xLSTM: Extended Long Short-Term Memory", NeurIPS 2024,
  arXiv:2405.04517: the mLSTM cell (section 2.3), its stabiliser, the mLSTM block with pre
  up-projection.
- NX-AI/xlstm, xlstm/blocks/mlstm/: backends.py (`recurrent_step_stabilized_simple`, the step
  written out below; `chunkwise_simple`, the chunked form carrying (C, n, m) between chunks),
  cell.py (gates from [q, k, v], their initialisation, the per-head norm), layer.py (the block).

Per head, with k scaled by 1 / sqrt(Dh), i~_t and f~_t the gate pre-activations:

    C_t = f_t C_{t-1} + i_t v_t k_t^T,   n_t = f_t n_{t-1} + i_t k_t,
    h~_t = C_t q_t / max(|n_t^T q_t|, 1),   i_t = exp(i~_t),   f_t = sigmoid(f~_t).

exp(i~_t) overflows float32 at i~ > 88, so the state is kept divided by exp(m_t), the largest
log weight any term in it carries: m_t = max(log f_t + m_{t-1}, i~_t), and the gates become
i'_t = exp(i~_t - m_t) <= 1, f'_t = exp(log f_t + m_{t-1} - m_t) <= 1; the floor 1 of the
normaliser becomes exp(-m_t). Three paths on the same weights give the same numbers:
"recurrent" (the stabilised equations token by token, the reference), "chunked" (the fast path:
a stabilised decay matrix inside each chunk, the carried (C, n, m) between chunks) and step().
All three use the same m_t, so they agree to rounding even in the reference's eps, 1e-6 added to
the normaliser, whose weight depends on m.

The block is the reference's mLSTM block (no feed-forward: the pre up-projection is its MLP):
x + down(skip * c + groupnorm(mLSTM(q, k, v)) * silu(z)), where up(norm(x)) = [x_m, z],
c = silu(conv(x_m)) feeds q and k, and v reads x_m unconvolved.
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

# B batch, L length, D model width, E inner width (expand * D), H heads, Dh head width (E / H),
# K conv kernel, C chunk length, N chunks

IMPLS = ("chunked", "recurrent")


@dataclass(frozen=True)
class MLSTMConfig(ModelConfig):
    heads: int = 4  # heads H, as the reference's num_heads; the memory is H (Dh x Dh) matrices
    expand: int = 2  # E = expand * D, the pre up-projection's factor (the reference's 2.0)
    conv: int = 4  # kernel K of the causal depthwise conv before q and k, as the reference's
    qkv_block: int = 4  # q, k, v are block-diagonal maps of blocks this wide, as the reference's
    #                     qkv_proj_blocksize: 3 E * qkv_block weights instead of 3 E^2
    chunk: int = 64  # C of impl="chunked": quadratic within a chunk, the state across chunks
    eps: float = 1e-6  # added to the normaliser, as the reference: a zero q or n reads 0, not nan
    impl: str = "chunked"  # "chunked": the fast path; "recurrent": the stabilised equations
    #                        token by token, O(L) sequential, the reference it is checked against

    def validate(self) -> None:
        check_fields(self, positive={"d_model", "layers", "heads", "expand", "conv", "qkv_block",
                                     "chunk"})
        name = type(self).__name__
        if not self.dropout < 1.0:
            raise ConfigError(f"{name}.dropout must be in [0, 1), got {self.dropout}")
        inner = self.expand * self.d_model
        for field in ("heads", "qkv_block"):
            if inner % getattr(self, field):
                raise ConfigError(f"{name}.{field}={getattr(self, field)} does not divide the "
                                  f"inner width expand * d_model = {inner}")
        if self.impl not in IMPLS:
            raise ConfigError(f"{name}.impl must be one of {', '.join(IMPLS)}, got {self.impl!r}")


# --- the memory: three paths over raw tensors, float32 or wider -----------------------------------

def readout(num, den, m, eps: float):
    """h~ = num / (max(|den|, exp(-m)) + eps): C q / max(|n^T q|, 1) in the scale exp(-m)."""
    # a large negative m (gates far below 0) makes exp(-m) inf, h~ 0, and the backward's
    # 0 * exp(-m) nan; capped below the dtype's overflow, h~ is the same 0 to rounding
    floor = torch.exp(torch.clamp(-m, max=math.log(torch.finfo(m.dtype).max) - 1))
    return num / (torch.maximum(den.abs(), floor) + eps)


def mlstm_step(q, k, v, i_pre, log_f, C, n, m, eps: float):
    """One token: q, k, v (B, H, Dh), i~ and log f (B, H), state C (B, H, Dh, Dh), n (B, H, Dh),
    m (B, H) -> h~ (B, H, Dh) and the next (C, n, m)."""
    k = k / math.sqrt(k.shape[-1])
    m_new = torch.maximum(log_f + m, i_pre)  # (B, H)
    f = torch.exp(log_f + m - m_new)[..., None]  # (B, H, 1), f'_t <= 1
    i = torch.exp(i_pre - m_new)[..., None]  # i'_t <= 1
    C = f[..., None] * C + (i * v)[..., :, None] * k[..., None, :]  # C_t = f C + i v k^T
    n = f * n + i * k  # n_t = f n + i k, (B, H, Dh)
    h = (C @ q[..., None])[..., 0]  # C_t q_t, (B, H, Dh)
    return readout(h, (n * q).sum(-1, keepdim=True), m_new[..., None], eps), C, n, m_new


def mlstm_recurrent(q, k, v, i_pre, log_f, eps: float):
    """The reference: mlstm_step over L from the zero state (m_0 = 0, as the reference's step).
    q, k, v (B, H, L, Dh), i~ and log f (B, H, L) -> h~ (B, H, L, Dh)."""
    B, H, _, Dh = q.shape
    C, n, m = q.new_zeros(B, H, Dh, Dh), q.new_zeros(B, H, Dh), q.new_zeros(B, H)
    hs = []
    for q_t, k_t, v_t, i_t, f_t in zip(*(t.unbind(2) for t in (q, k, v, i_pre, log_f))):
        h, C, n, m = mlstm_step(q_t, k_t, v_t, i_t, f_t, C, n, m, eps)
        hs.append(h)
    return torch.stack(hs, dim=2)


def segment_sums(log_f: torch.Tensor) -> torch.Tensor:
    """(..., C) -> (..., C, C): entry (t, j) the sum of log f over (j, t], -inf where j > t.

    Summed directly, as mamba's ssd_minimal `segsum`: b_t - b_j of a running sum b would cancel
    two large numbers and lose the small sums of the recent tokens, which weigh the most."""
    C = log_f.shape[-1]
    lower = torch.ones(C, C, dtype=torch.bool, device=log_f.device).tril()  # j <= t
    x = log_f[..., :, None].expand(*log_f.shape, C)  # (..., C, C): row d holds log f_d
    x = x.masked_fill(~lower.tril(-1), 0.0).cumsum(-2)  # sum over j < d <= t
    return x.masked_fill(~lower, -math.inf)


def mlstm_chunked(q, k, v, i_pre, log_f, chunk: int, eps: float):
    """The same h~ (B, H, L, Dh) in O(L C Dh + L Dh^2) per head: each chunk's own tokens through a
    stabilised (C x C) decay matrix, the chunks before it through the carried (C, n, m)."""
    B, H, L, Dh = q.shape
    Cn = min(chunk, L)
    pad = -L % Cn
    if pad:  # i~ = -inf writes nothing, log f = 0 keeps the state; those outputs are cut off
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))  # (B, H, N * C, Dh)
        i_pre = F.pad(i_pre, (0, pad), value=-math.inf)  # (B, H, N * C)
        log_f = F.pad(log_f, (0, pad))
    q, k, v = (t.reshape(B, H, -1, Cn, Dh) for t in (q, k, v))  # (B, H, N, C, Dh)
    i_pre, log_f = i_pre.reshape(B, H, -1, Cn), log_f.reshape(B, H, -1, Cn)  # (B, H, N, C)
    k = k / math.sqrt(Dh)

    b = log_f.cumsum(-1)  # (B, H, N, C): log of the forget gates from the chunk's start to t
    G = b[..., -1]  # (B, H, N): a whole chunk's
    log_D = segment_sums(log_f) + i_pre[..., None, :]  # (B, H, N, C, C): log weight of j at t
    m_own = log_D[..., -1, :].amax(-1)  # (B, H, N): largest log weight the chunk adds
    # m at each chunk's end, m_end = max(G + m_end_prev, m_own) unrolled: with Gc the running
    # sum of G, m_end = Gc + max(m_0, cummax(m_own - Gc)), m_0 = 0; a max-plus scan in one op
    Gc = G.cumsum(-1)
    # (m_end rounds like |Gc| grows, but only sets the scale every term of the state shares)
    m_end = Gc + (m_own - Gc).cummax(-1).values.clamp(min=0.0)  # (B, H, N)
    m_start = F.pad(m_end[..., :-1], (1, 0))  # (B, H, N): m before each chunk, m_0 = 0 first
    # m_t as the recurrence has it: the largest of the carried state's and each own write's
    m = torch.maximum(m_start[..., None] + b, log_D.amax(-1))  # (B, H, N, C)

    # each chunk's own writes as of its end, then the state before each chunk: a linear scan
    # over chunks, S_n = exp(G_n + m_end_{n-1} - m_end_n) S_{n-1} + own_n (all factors <= 1)
    w_end = torch.exp(log_D[..., -1, :] - m_end[..., None])[..., None]  # (B, H, N, C, 1)
    own = torch.cat(((v * w_end).transpose(-2, -1) @ k,  # sum v k^T, (B, H, N, Dh, Dh)
                     (k * w_end).sum(-2, keepdim=True)), dim=-2)  # sum k, (B, H, N, Dh + 1, Dh)
    decay = torch.exp(G + m_start - m_end)  # (B, H, N)
    N = own.shape[2]
    ends = scan_tree(decay.reshape(B * H, N, 1).expand(-1, -1, (Dh + 1) * Dh),
                     own.reshape(B * H, N, -1))  # (B * H, N, (Dh + 1) Dh)
    ends = ends.reshape(B, H, N, Dh + 1, Dh)
    before = F.pad(ends[:, :, :-1], (0, 0, 0, 0, 1, 0))  # (B, H, N, Dh + 1, Dh), zeros first
    C_prev, n_prev = before[..., :Dh, :], before[..., Dh:, :]  # (B, H, N, Dh, Dh), (.., 1, Dh)

    D = torch.exp(log_D - m[..., None])  # (B, H, N, C, C), each row's largest entry <= 1
    A = (q @ k.transpose(-2, -1)) * D  # (B, H, N, C, C): q_t . k_j weighted
    carried = torch.exp(m_start[..., None] + b - m)[..., None]  # (B, H, N, C, 1) <= 1
    num = A @ v + carried * (q @ C_prev.transpose(-2, -1))  # (B, H, N, C, Dh)
    den = A.sum(-1, keepdim=True) + carried * (q @ n_prev.transpose(-2, -1))  # (B, H, N, C, 1)
    h = readout(num, den, m[..., None], eps)
    return h.reshape(B, H, -1, Dh)[:, :, :L]


# --- the block ------------------------------------------------------------------------------------

def causal_conv(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Depthwise causal convolution (B, L, E) -> (B, L, E): output t reads inputs t-K+1..t."""
    K = conv.kernel_size[0]
    return conv(F.pad(x.transpose(1, 2), (K - 1, 0))).transpose(1, 2)  # (B, E, L+K-1) -> (B, L, E)


def headwise(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A block-diagonal linear map: x (..., E) in blocks of b, weight (E / b, b, b)."""
    blocks = x.unflatten(-1, (weight.shape[0], -1))  # (..., E / b, b)
    return torch.einsum("...gi,goi->...go", blocks, weight).flatten(-2)  # (..., E)


class MLSTMLayer(nn.Module):
    """The reference's mLSTMLayer with its mLSTMCell: up, conv, q/k/v, gates, memory, norm, down."""

    def __init__(self, config: MLSTMConfig):
        super().__init__()
        D, E, H, b = config.d_model, config.expand * config.d_model, config.heads, config.qkv_block
        self.heads, self.chunk, self.eps, self.impl = H, config.chunk, config.eps, config.impl
        self.up = nn.Linear(D, 2 * E, bias=False)  # [x_m, z]
        self.conv = nn.Conv1d(E, E, config.conv, groups=E)  # depthwise, with a bias
        self.qkv = nn.Parameter(torch.empty(3, E // b, b, b))  # W_q, W_k, W_v, block-diagonal
        self.igate = nn.Linear(3 * E, H)  # i~ per head, from [q, k, v] as the reference
        self.fgate = nn.Linear(3 * E, H)  # f~ per head
        self.norm = nn.Parameter(torch.ones(E))  # per-head group norm's weight, no bias
        self.skip = nn.Parameter(torch.ones(E))  # learnable skip of the conv branch past the memory
        self.down = nn.Linear(E, D, bias=False)
        self.drop = nn.Dropout(config.dropout)
        # the reference's init: small init (std sqrt(2 / 5D)) in, Wang's (2 / layers / sqrt(D))
        # out; gates with zero weights, forget biases spread over 3..6 so each head starts
        # remembering (sigmoid(3) = 0.95) at its own rate, input biases near 0 (exp(i~) ~ 1)
        for w in (self.up.weight, self.qkv):
            nn.init.normal_(w, std=math.sqrt(2 / (5 * D)))
        nn.init.normal_(self.down.weight, std=2 / config.layers / math.sqrt(D))
        nn.init.zeros_(self.igate.weight)
        nn.init.zeros_(self.fgate.weight)
        nn.init.normal_(self.igate.bias, std=0.1)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, H))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D), mask (B, L) True at real tokens -> (B, L, D)."""
        x_m, z = self.up(x).chunk(2, dim=-1)  # (B, L, E) each
        if mask is None:
            c = F.silu(causal_conv(x_m, self.conv))
        else:  # the conv window holds the last K real tokens: run it with the real ones in front
            order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)  # (B, L)
            order = order[..., None].expand_as(x_m)  # (B, L, E)
            c = F.silu(causal_conv(x_m.gather(1, order), self.conv))
            c = torch.zeros_like(c).scatter(1, order, c)  # back in place, (B, L, E)
        q, k, v = (headwise(t, w) for t, w in zip((c, c, x_m), self.qkv))  # (B, L, E) each
        with torch.autocast(x.device.type, enabled=False):  # exp and the sums over L in float32
            i_pre, log_f = (t.transpose(1, 2) for t in self._gates(q, k, v))  # (B, H, L) each
            q, k, v = (self._heads(t) for t in (q, k, v))  # (B, H, L, Dh)
            if mask is not None:  # a padded token writes nothing (i = 0) and keeps all (f = 1)
                i_pre = i_pre.masked_fill(~mask[:, None], -math.inf)  # (B, H, L)
                log_f = log_f.masked_fill(~mask[:, None], 0.0)
            if self.impl == "recurrent":
                h = mlstm_recurrent(q, k, v, i_pre, log_f, self.eps)
            else:
                h = mlstm_chunked(q, k, v, i_pre, log_f, self.chunk, self.eps)
            h = self._norm(h)  # (B, L, E)
        return self._out(h.to(x.dtype), c, z)

    def init_state(self, batch_size: int):
        """Zeros: C (B, H, Dh, Dh), n (B, H, Dh), m (B, H), the conv's last K-1 inputs
        (B, K-1, E), at least float32."""
        w = self.down.weight
        E, H, K = w.shape[1], self.heads, self.conv.kernel_size[0]
        zeros = lambda *shape: w.new_zeros(*shape, dtype=widened(w).dtype)  # noqa: E731
        return (zeros(batch_size, H, E // H, E // H), zeros(batch_size, H, E // H),
                zeros(batch_size, H), zeros(batch_size, K - 1, E))

    def step(self, x_t: torch.Tensor, state):
        """One token x_t (B, D) -> (B, D) and the next state: O(E^2 / H + K E), flat in t."""
        C, n, m, window = state
        x_m, z = self.up(x_t).chunk(2, dim=-1)  # (B, E) each
        window = torch.cat((window, x_m[:, None].to(window.dtype)), dim=1)  # (B, K, E)
        weight = self.conv.weight[:, 0].to(window.dtype)  # (E, K)
        c = F.silu(torch.einsum("bke,ek->be", window, weight) + self.conv.bias).to(x_t.dtype)
        q, k, v = (headwise(t, w) for t, w in zip((c, c, x_m), self.qkv))  # (B, E) each
        with torch.autocast(x_t.device.type, enabled=False):
            i_pre, log_f = self._gates(q, k, v)  # (B, H) each
            q, k, v = (widened(t).unflatten(-1, (self.heads, -1)) for t in (q, k, v))  # (B, H, Dh)
            h, C, n, m = mlstm_step(q, k, v, i_pre, log_f, C, n, m, self.eps)
            h = self._norm(h[:, :, None])[:, 0]  # (B, E)
        return self._out(h.to(x_t.dtype), c, z), (C, n, m, window[:, 1:])

    def _gates(self, q, k, v):
        """i~ and log f (..., H) from [q, k, v] (..., 3E), in float32: bf16 rounds i~ by up to
        |i~| / 512, and exp turns that into the weight's relative error, 2% at i~ = 10."""
        qkv = widened(torch.cat((q, k, v), dim=-1))  # (..., 3E)
        i_pre, f_pre = (F.linear(qkv, widened(g.weight), widened(g.bias))
                        for g in (self.igate, self.fgate))
        return i_pre, F.logsigmoid(f_pre)  # log f as the reference: logsigmoid, never log(0)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return widened(t).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, L, Dh)

    def _norm(self, h: torch.Tensor) -> torch.Tensor:
        """The reference's MultiHeadLayerNorm: each head's h~ normalised alone, (B, H, L, Dh) ->
        (B, L, E); heads differ in scale by their gates, and the norm evens them out."""
        B, H, L, Dh = h.shape
        h = h.transpose(1, 2).reshape(B * L, H * Dh)  # (B L, E)
        return F.group_norm(h, H, widened(self.norm), eps=1e-5).reshape(B, L, H * Dh)

    def _out(self, h: torch.Tensor, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down((h + self.skip * c) * F.silu(z)))  # output gate silu(z)


class Block(nn.Module):
    """x + mLSTM(norm(x)): the reference's pre-norm residual block, LayerNorm without a bias."""

    def __init__(self, config: MLSTMConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model, bias=False)
        self.mlstm = MLSTMLayer(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.mlstm(self.norm(x), mask)  # (B, L, D)

    def step(self, x_t: torch.Tensor, state):
        y, state = self.mlstm.step(self.norm(x_t), state)  # (B, D)
        return x_t + y, state


@register_model("mlstm", MLSTMConfig,
                "mLSTM (Beck et al. 2024, xLSTM): a (Dh x Dh) matrix memory per head with "
                "exponential input and sigmoid forget gates, stabilised; the pre up-projection "
                "block",
                train_cost="O(L C E + L E^2 / H), chunks of C in parallel",
                decode_cost="O(1)")
class MLSTM(Backbone):
    """`layers` pre-norm mLSTM blocks and a final LayerNorm (the reference's post-blocks norm)."""

    family = "xlstm"
    causal = True
    references = {"chunked": "recurrent"}  # the chunked form is checked against the loop

    def __init__(self, config: MLSTMConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)  # (B, L, D)
        return self.norm(x)

    def init_state(self, batch_size: int) -> list:
        """Per layer (C, n, m, conv window); no position: the recurrence knows the order."""
        return [block.mlstm.init_state(batch_size) for block in self.blocks]

    def step(self, state: list, x_t: torch.Tensor) -> tuple[torch.Tensor, list]:
        """x_t (B, D) -> (B, D) and a new state (the old one is left as it was)."""
        new = []
        for block, s in zip(self.blocks, state):
            x_t, s = block.step(x_t, s)
            new.append(s)
        return self.norm(x_t), new

    def state_size(self, n_tokens: int) -> int:
        """H Dh^2 (C) + H Dh (n) + H (m) + (K-1) E (the conv's window), whatever n_tokens."""
        c = self.config
        E = c.expand * c.d_model
        Dh = E // c.heads
        return c.heads * Dh * Dh + c.heads * Dh + c.heads + (c.conv - 1) * E
