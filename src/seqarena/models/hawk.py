"""Hawk: residual blocks of the Real-Gated Linear Recurrent Unit (RG-LRU), a diagonal recurrence.

References:
- S. De, S. L. Smith, A. Fernando et al., "Griffin: Mixing Gated Linear Recurrences with Local
  Attention for Efficient Language Models", 2024, arXiv:2402.19427: the RG-LRU (section 2.4,
  equations 1-4), the recurrent block and the residual block (figure 2); Hawk is the model made
  of recurrent blocks only.
- google-deepmind/recurrentgemma, recurrentgemma/torch/layers.py (`RGLRU`, `Conv1D`, `RMSNorm`)
  and modules.py (`RecurrentBlock`, `MLPBlock`, `ResidualBlock`): the reference implementation,
  followed where the paper leaves a choice open (named below where it is made).

The RG-LRU, per channel, with x_t the output of the temporal convolution:

    r_t = sigmoid(W_a x_t + b_a)        recurrence gate
    i_t = sigmoid(W_x x_t + b_x)        input gate
    a_t = a^(c r_t),  a = sigmoid(Lambda), c = 8
    h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t)

a_t and the input term depend on x_t only, never on h_{t-1}: h_t = a_t h_{t-1} + b_t is a linear
recurrence, so training runs it as a parallel scan (models/scan.py) and decoding as a loop with
an O(1) state. The same numbers come out of three paths on the same weights: "recurrent" (the
equations above token by token, the reference), "chunked" and "scan" (the two scans of
models/scan.py; "chunked" is the default) and step() (one token, for decoding).
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
from seqarena.models.scan import scan_chunked, scan_tree

# B batch, L length, D model width, N RG-LRU width (expansion * D), K convolution width,
# M MLP expansion

IMPLS = ("chunked", "scan", "recurrent")


@dataclass(frozen=True)
class HawkConfig(ModelConfig):
    expansion: float = 1.0  # RG-LRU width N = expansion * d_model. recurrentgemma's lru_width
    #                         defaults to the model width (1.0); the paper's Hawk uses 4/3
    mlp_expansion: int = 3  # M: the gated MLP's hidden width is M * d_model, 3 as in the paper
    conv_width: int = 4  # K: the temporal Conv1D's size, 4 as in the paper and recurrentgemma
    c: float = 8.0  # the fixed exponent scale of a_t = a^(c r_t), 8 as in the paper
    impl: str = "chunked"  # "chunked": gates for all t at once, then the chunked scan (the
    #                        fast path; ahead of the tree on a busy CPU, level on an idle one);
    #                        "scan": the same with Blelloch's tree scan; "recurrent": the
    #                        paper's equations token by token, the reference both are checked
    #                        against

    def validate(self) -> None:
        # types and signs, as every config's
        check_fields(self, positive={"d_model", "layers", "expansion", "mlp_expansion",
                                     "conv_width", "c"})
        name = type(self).__name__
        if not self.dropout < 1.0:
            raise ConfigError(f"{name}.dropout must be in [0, 1), got {self.dropout}")
        if not self.expansion * self.d_model >= 1:
            raise ConfigError(f"{name}.expansion must give an RG-LRU width of at least 1 "
                              f"(expansion * d_model >= 1), got {self.expansion}")
        if self.impl not in IMPLS:
            raise ConfigError(f"{name}.impl must be one of {', '.join(IMPLS)}, "
                              f"got {self.impl!r}")

    @property
    def lru_width(self) -> int:
        return int(self.expansion * self.d_model)


def log_decay(Lambda: torch.Tensor, r: torch.Tensor, c: float) -> torch.Tensor:
    """log a_t = c r_t log sigmoid(Lambda) = -c r_t softplus(-Lambda): a_t itself lies so close to
    1 (a^c up to 0.999) that it is formed and used through its logarithm."""
    return -c * F.softplus(-Lambda) * r


def input_scale(log_a: torch.Tensor) -> torch.Tensor:
    """sqrt(1 - a_t^2), as sqrt(-expm1(2 log a_t)): 1 - a_t^2 in float32 would keep only the
    leading digits of a number of order 1e-4."""
    return torch.sqrt(-torch.expm1(2.0 * log_a))


def rg_lru_recurrent(x, gate_a, gate_x, Lambda, c: float, mask=None) -> torch.Tensor:
    """The reference: equations 1-4 one token at a time. x, gate_a = W_a x + b_a and
    gate_x = W_x x + b_x (B, L, N), Lambda (N,), mask (B, L) -> h (B, L, N), from h_{-1} = 0."""
    h, states = torch.zeros_like(x[:, 0]), []
    keep = [None] * x.shape[1] if mask is None else mask[..., None].unbind(1)  # (B, 1) each
    # unbind: one backward node, not L slices each scattered into a zero (B, L, N)
    for x_t, ga_t, gx_t, keep_t in zip(x.unbind(1), gate_a.unbind(1), gate_x.unbind(1), keep):
        r_t = torch.sigmoid(ga_t)  # (B, N)
        i_t = torch.sigmoid(gx_t)
        log_a_t = log_decay(Lambda, r_t, c)
        h_new = log_a_t.exp() * h + input_scale(log_a_t) * (i_t * x_t)
        h = h_new if keep_t is None else torch.where(keep_t, h_new, h)
        states.append(h)
    return torch.stack(states, dim=1)  # (B, L, N)


def rg_lru_coefficients(x, gate_a, gate_x, Lambda, c: float, mask=None):
    """a_t and b_t = sqrt(1 - a_t^2) i_t x_t of h_t = a_t h_{t-1} + b_t for every t at once.
    A padded token (mask False) gets a_t = 1, b_t = 0: it leaves h as it was."""
    log_a = log_decay(Lambda, torch.sigmoid(gate_a), c)  # (B, L, N)
    b = input_scale(log_a) * torch.sigmoid(gate_x) * x
    a = log_a.exp()
    if mask is not None:
        keep = mask[..., None]  # (B, L, 1)
        a, b = torch.where(keep, a, 1.0), b * keep
    return a, b


class RecurrentBlock(nn.Module):
    """Figure 2's temporal block: GeLU(W_y x) times RG-LRU(Conv1D(W_x x)), then W_out."""

    def __init__(self, config: HawkConfig):
        super().__init__()
        D, N, K = config.d_model, config.lru_width, config.conv_width
        self.impl, self.c = config.impl, config.c
        self.in_proj = nn.Linear(D, 2 * N)  # recurrentgemma's linear_x and linear_y, stacked
        # depthwise: channel n mixes x_{t-K+1..t} of channel n only, the paper's Conv1D
        self.conv = nn.Conv1d(N, N, K, groups=N)
        # W_a and W_x stacked. Dense, as the paper writes them; recurrentgemma makes them
        # block-diagonal, one block per head
        self.gates = nn.Linear(N, 2 * N)
        self.Lambda = nn.Parameter(torch.empty(N))
        self.out_proj = nn.Linear(N, D)
        self.reset_parameters(config)

    def reset_parameters(self, config: HawkConfig) -> None:
        # a^c uniform in [0.9, 0.999], section 2.4: channels start with memories of 10 to 1000
        # steps. recurrentgemma instead draws a itself on a ring, a^2 uniform in [0.81, 0.998]
        with torch.no_grad():
            a = torch.empty_like(self.Lambda).uniform_(0.9, 0.999) ** (1.0 / config.c)
            self.Lambda.copy_(torch.log(a / (1.0 - a)))  # Lambda = logit(a)
            # recurrentgemma's Conv1D: small weights (variance 0.01 / K), zero bias
            nn.init.normal_(self.conv.weight, std=math.sqrt(0.01 / config.conv_width))
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D), mask (B, L) True at real tokens -> (B, L, D)."""
        u, y = self.in_proj(x).chunk(2, dim=-1)  # (B, L, N) each
        if mask is not None:  # a padded token enters the convolution as 0: it writes nothing
            u = u * mask[..., None].to(u.dtype)
        K = self.conv.kernel_size[0]
        # left padding of K - 1 zeros: causal, one output per input
        u = self.conv(F.pad(u.transpose(1, 2), (K - 1, 0))).transpose(1, 2)  # (B, L, N)
        gate_a, gate_x = self.gates(u).chunk(2, dim=-1)  # (B, L, N) each
        with torch.autocast(x.device.type, enabled=False):  # the recurrence runs in float32
            u, gate_a, gate_x = widened(u), widened(gate_a), widened(gate_x)
            Lambda = self.Lambda.to(u.dtype)
            if self.impl == "recurrent":
                h = rg_lru_recurrent(u, gate_a, gate_x, Lambda, self.c, mask)
            else:
                scan = scan_tree if self.impl == "scan" else scan_chunked
                h = scan(*rg_lru_coefficients(u, gate_a, gate_x, Lambda, self.c, mask))
        return self.out_proj(h.to(y.dtype) * F.gelu(y, approximate="tanh"))

    def init_state(self, batch_size: int):
        """The last K - 1 convolution inputs (B, K - 1, N) and h (B, N) (float32): zeros."""
        w = self.Lambda
        N, K = w.shape[0], self.conv.kernel_size[0]
        return (w.new_zeros(batch_size, K - 1, N),
                w.new_zeros(batch_size, N, dtype=torch.promote_types(w.dtype, torch.float32)))

    def step(self, x_t: torch.Tensor, window: torch.Tensor, h: torch.Tensor):
        """One token x_t (B, D) -> (B, D) and the next (window, h): O(N K + N^2), flat in t."""
        u, y = self.in_proj(x_t).chunk(2, dim=-1)  # (B, N) each
        window = torch.cat((window, u.to(window.dtype)[:, None]), dim=1)  # (B, K, N)
        # the convolution at t: w[:, 0, k] multiplies x_{t-K+1+k}, as in forward
        u = (window * self.conv.weight[:, 0].T).sum(1) + self.conv.bias  # (B, N)
        gate_a, gate_x = self.gates(u).chunk(2, dim=-1)  # (B, N) each
        with torch.autocast(x_t.device.type, enabled=False):
            a, b = rg_lru_coefficients(widened(u), widened(gate_a), widened(gate_x),
                                       self.Lambda.to(h.dtype), self.c)
            h = a * h + b
        return self.out_proj(h.to(y.dtype) * F.gelu(y, approximate="tanh")), window[:, 1:], h


class GatedMLP(nn.Module):
    """Figure 2's MLP block: GeLU(W_1 x) * (W_2 x), then W_3 (recurrentgemma's MLPBlock)."""

    def __init__(self, config: HawkConfig):
        super().__init__()
        D, M = config.d_model, config.mlp_expansion
        self.up = nn.Linear(D, 2 * M * D)  # W_1 and W_2 stacked
        self.down = nn.Linear(M * D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.up(x).chunk(2, dim=-1)  # (..., M D) each
        # the tanh approximation of GeLU, recurrentgemma's (JAX's default)
        return self.down(F.gelu(gate, approximate="tanh") * value)


class ResidualBlock(nn.Module):
    """Figure 2: x + temporal(RMSNorm(x)), then x + MLP(RMSNorm(x))."""

    def __init__(self, config: HawkConfig):
        super().__init__()
        # eps and the initial scale 1 as recurrentgemma's RMSNorm (which stores scale - 1)
        self.norm1 = nn.RMSNorm(config.d_model, eps=1e-6)
        self.temporal = RecurrentBlock(config)
        self.norm2 = nn.RMSNorm(config.d_model, eps=1e-6)
        self.mlp = GatedMLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.temporal(self.norm1(x), mask))  # (B, L, D)
        return x + self.drop(self.mlp(self.norm2(x)))

    def step(self, x_t: torch.Tensor, window: torch.Tensor, h: torch.Tensor):
        y, window, h = self.temporal.step(self.norm1(x_t), window, h)  # (B, D)
        x_t = x_t + self.drop(y)
        return x_t + self.drop(self.mlp(self.norm2(x_t))), window, h


@dataclass
class State:
    """What step() carries from token to token: the same size at every position."""

    window: list[torch.Tensor]  # per layer (B, K - 1, N): the last K - 1 convolution inputs
    h: list[torch.Tensor]  # per layer (B, N): the RG-LRU state, float32


@register_model("hawk", HawkConfig,
                "Hawk (De et al. 2024): Griffin's recurrent blocks, the RG-LRU (a gated diagonal "
                "linear recurrence) after a short convolution, trained by a parallel scan",
                train_cost="O(log L) depth parallel scan, O(L N) work",
                decode_cost="O(1)")
class Hawk(Backbone):
    """`layers` residual blocks of figure 2 (recurrent temporal block), a final RMSNorm."""

    family = "scan"
    causal = True
    # both scans are checked against the paper's equations run token by token
    references = {"chunked": "recurrent", "scan": "recurrent"}

    def __init__(self, config: HawkConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(ResidualBlock(config) for _ in range(config.layers))
        self.norm = nn.RMSNorm(config.d_model, eps=1e-6)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)  # (B, L, D)
        return self.norm(x)

    def init_state(self, batch_size: int) -> State:
        window, h = zip(*(b.temporal.init_state(batch_size) for b in self.blocks))
        return State(list(window), list(h))

    def step(self, state: State, x_t: torch.Tensor) -> tuple[torch.Tensor, State]:
        """x_t (B, D) -> (B, D) and a new State (the old one is left as it was)."""
        window, h = [], []
        for block, w_l, h_l in zip(self.blocks, state.window, state.h):
            x_t, w_l, h_l = block.step(x_t, w_l, h_l)
            window.append(w_l)
            h.append(h_l)
        return self.norm(x_t), State(window, h)

    def state_size(self, n_tokens: int) -> int:
        """K - 1 convolution inputs and h, N floats each, whatever n_tokens: K N."""
        return self.config.conv_width * self.config.lru_width
