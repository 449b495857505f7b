"""minGRU and minLSTM: recurrences whose gates read only x_t, so training runs as a parallel scan.

References:
- L. Feng, F. Tung, M. O. Ahmed, Y. Bengio, H. Hajimirsadeghi, "Were RNNs All We Needed?",
  2024, arXiv:2410.01201 (the cells, section 3; their log-space form, appendix B).
- lucidrains/minGRU-pytorch (`minGRU`, `minLSTM`, `minLM`): the reference implementation.

Drop h_{t-1} from a GRU's or LSTM's gates and the update becomes h_t = a_t * h_{t-1} + b_t with
a_t and b_t known for every t up front: a linear recurrence, which a scan computes for all t at
once (training) and which a loop computes one token at a time with an O(1) state (decoding).

    minGRU   z_t = sigmoid(k_t), h~_t = g(x~_t)        h_t = (1 - z_t) h_{t-1} + z_t h~_t
    minLSTM  f_t, i_t = sigmoid(kf_t), sigmoid(ki_t)  h_t = f'_t h_{t-1} + i'_t h~_t
             f'_t = f_t / (f_t + i_t), i'_t = i_t / (f_t + i_t)

k, kf, ki and x~ are slices of one Linear of the layer's input. g(x) = x + 0.5 for x >= 0 and
sigmoid(x) otherwise keeps h~ positive, so log h~ exists for the log-space scan.

negative_eigen (Grazzi et al. 2024, "Unlocking State-Tracking in Linear RNNs Through Negative
Eigenvalues", arXiv:2411.12537): a_t in (0, 1) can only decay the state, so no length-independent
solution of parity exists; a_t -> 2 a_t - 1 in (-1, 1) lets the state flip sign (minGRU:
a_t = 1 - 2 z_t; minLSTM: 2 f'_t - 1), while b_t = z_t h~_t (i'_t h~_t) still weighs the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqarena.errors import ConfigError
from seqarena.models.base import Backbone
from seqarena.models.registry import ModelConfig, register_model
from seqarena.models.scan import scan_chunked, scan_log, tree_scan_

# B batch, L length, D model width, N state width (expansion * D)

IMPLS = ("scan", "chunked", "logscan", "sequential")


@dataclass(frozen=True)
class MinimalConfig(ModelConfig):
    """mingru and minlstm; dropout (from ModelConfig) applies to each residual branch."""

    expansion: float = 1.0  # state width N = expansion * d_model; minGRU-pytorch's minLM uses 1.5
    ff_mult: float = 0.0  # hidden width of an MLP after each cell, times d_model (minLM: 4);
    #                       0 = none: a layer is one cell, as an LSTM layer is, so layers compare
    impl: str = "scan"  # "scan": gates and tree scan fused in one autograd node (fastest, exact);
    #                     "chunked": the chunked scan; "logscan": Heinsen's log-space scan, the
    #                     paper's appendix B (loses float32 precision over long spans of small
    #                     gates); "sequential": the paper's sequential mode, the cell (its Linear
    #                     included) token by token, as an RNN runs. All but "scan" use autograd.
    negative_eigen: bool = False  # True: a_t = 2 a_t - 1 in (-1, 1), Grazzi et al. 2024 (see the
    #                               module docstring); not with impl="logscan" (log of a_t < 0)

    def validate(self) -> None:
        super().validate()
        if self.impl not in IMPLS:
            raise ConfigError(f"MinimalConfig.impl must be one of {', '.join(IMPLS)}, "
                              f"got {self.impl!r}")
        if not self.expansion * self.d_model >= 1:
            raise ConfigError(f"MinimalConfig.expansion must give a state width of at least 1 "
                              f"(expansion * d_model >= 1), got {self.expansion}")
        if not self.ff_mult >= 0:
            raise ConfigError(f"MinimalConfig.ff_mult must be >= 0 (0 = no MLP), "
                              f"got {self.ff_mult}")
        if self.negative_eigen and self.impl == "logscan":
            raise ConfigError("MinimalConfig.negative_eigen=True makes a_t negative, which has no "
                              "log: use impl='scan', 'chunked' or 'sequential', not 'logscan'")


def g(x: torch.Tensor) -> torch.Tensor:
    """x + 0.5 for x >= 0, sigmoid(x) below: continuous, increasing and always positive."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))


class MinGRUCell:
    """The coefficients of h_t = a_t h_{t-1} + b_t, from u = Linear(x) = [k, x~]."""

    n_proj = 2  # slices of u: gate pre-activation k, candidate pre-activation x~

    @staticmethod
    def coefficients(u):
        k, x = u.chunk(2, dim=-1)  # (..., N) each
        return torch.sigmoid(-k), torch.sigmoid(k) * g(x)  # a = 1 - z, b = z * h~

    @staticmethod
    def log_coefficients(u):
        k, x = u.chunk(2, dim=-1)  # (..., N) each
        # log z = -softplus(-k) and log(1 - z) = -softplus(k) never round to log(0)
        return -F.softplus(k), -F.softplus(-k) + log_g(x)


class MinLSTMCell:
    """The coefficients of h_t = a_t h_{t-1} + b_t, from u = Linear(x) = [kf, ki, x~]."""

    n_proj = 3  # slices of u: forget kf, input ki, candidate x~

    @staticmethod
    def _log_ratio(kf, ki):
        # r = log(i / f) = log i - log f with log sigmoid(k) = -softplus(-k); f' = sigmoid(-r) and
        # i' = sigmoid(r) stay exact where f and i underflow, which f / (f + i) turns into 0 / 0
        return F.softplus(-kf) - F.softplus(-ki)

    @staticmethod
    def coefficients(u):
        kf, ki, x = u.chunk(3, dim=-1)  # (..., N) each
        r = MinLSTMCell._log_ratio(kf, ki)
        return torch.sigmoid(-r), torch.sigmoid(r) * g(x)  # a = f', b = i' * h~

    @staticmethod
    def log_coefficients(u):
        kf, ki, x = u.chunk(3, dim=-1)  # (..., N) each
        r = MinLSTMCell._log_ratio(kf, ki)
        return -F.softplus(r), -F.softplus(-r) + log_g(x)


class MinGRUNegCell(MinGRUCell):
    """minGRU with a_t = 1 - 2 z_t in (-1, 1) (negative_eigen); no log-space form."""

    @staticmethod
    def coefficients(u):
        a, b = MinGRUCell.coefficients(u)
        return 2 * a - 1, b

    log_coefficients = None  # a_t < 0 has no log: MinimalConfig refuses impl="logscan"


class MinLSTMNegCell(MinLSTMCell):
    """minLSTM with a_t = 2 f'_t - 1 in (-1, 1) (negative_eigen); no log-space form."""

    @staticmethod
    def coefficients(u):
        a, b = MinLSTMCell.coefficients(u)
        return 2 * a - 1, b

    log_coefficients = None  # a_t < 0 has no log: MinimalConfig refuses impl="logscan"


NEGATIVE = {MinGRUCell: MinGRUNegCell, MinLSTMCell: MinLSTMNegCell}


class _FusedMinScan(torch.autograd.Function):
    """`cell.coefficients(u)` then `scan_tree`, in one autograd node with a written-out backward.

    The same maths as the cells above (tests hold it to them and to the loop), arranged for
    memory traffic, which is what elementwise work costs on a CPU: minGRU makes 6 passes over
    (B, L, N) forward and 9 backward besides the two scans, and 6 fresh (B, L, N) buffers,
    where autograd on the cell makes about 20 of each (a fresh buffer can cost more than a pass:
    its pages are faulted in and zeroed). No torch.where, slow on CPU: g(x) = max(x + 0.5,
    sigmoid(x)), since x + 0.5 >= sigmoid(x) exactly when x >= 0. One gradient buffer, no cat.
    Both cells are h_t = (1 - z_t) h_{t-1} + z_t g(x~_t) with z_t = sigmoid(r_t): minGRU's r
    is k, minLSTM's is log(i_t / f_t), so that i'_t = z_t and f'_t = 1 - z_t. `negative`:
    a_t = 1 - 2 z_t (negative_eigen) in place of 1 - z_t.
    """

    @staticmethod
    def forward(ctx, u, lstm, negative=False):
        n = u.shape[-1] // (3 if lstm else 2)
        x = u[..., -n:]  # (B, L, N), as are all slices of u below
        r = u[..., :n]  # minGRU's k
        if lstm:  # minLSTM's log(i / f), built in place
            r = F.softplus(u[..., :n].neg()).sub_(F.softplus(u[..., n:2 * n].neg()))
        z = torch.sigmoid(r)
        # from z rather than sigmoid(-r): exact where a ~ 1, where long memory lives
        a = torch.sub(1.0, z, alpha=2.0 if negative else 1.0)
        h = x + 0.5
        g_x = torch.sigmoid(x)
        torch.maximum(g_x, h, out=g_x)
        torch.mul(z, g_x, out=h)  # b_t
        tree_scan_(a, h)
        ctx.lstm, ctx.negative = lstm, negative
        ctx.save_for_backward(u, z, a, g_x, h)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        u, z, a, g_x, h = ctx.saved_tensors
        n = h.shape[-1]
        x, r_slot = u[..., -n:], slice(-2 * n, -n)
        grad_u = torch.empty_like(u)
        grad_r, grad_x = grad_u[..., r_slot], grad_u[..., -n:]  # (B, L, N) each
        grad_z = grad_h.clone()
        tree_scan_(a, grad_z, reverse=True)  # dLoss/db_t
        grad_z.mul_(z)  # dLoss/db_t * z_t, in place: dLoss/db is not needed again
        # dh_t/dx~_t = z_t g'(x~_t): g' = 1 for x >= 0, else sigmoid' = g (1 - g) <= 1/4, so
        # g' = max(g (1 - g), [x >= 0]); the indicator is a float in grad_r's slot, not yet used
        torch.addcmul(g_x, g_x, g_x, value=-1.0, out=grad_x)
        torch.maximum(grad_x, torch.ge(x, 0, out=grad_r), out=grad_x).mul_(grad_z)
        # dh_t/dr_t = z_t (1 - z_t) (g(x~_t) - h_{t-1}), with h_{-1} = 0; with negative_eigen
        # da_t/dz_t = -2, so z_t (1 - z_t) (g(x~_t) - 2 h_{t-1})
        torch.sub(g_x[:, 1:], h[:, :-1], alpha=2.0 if ctx.negative else 1.0, out=grad_r[:, 1:])
        grad_r[:, 0] = g_x[:, 0]
        grad_r.mul_(1.0 - z if ctx.negative else a).mul_(grad_z)
        if ctx.lstm:  # r = softplus(-kf) - softplus(-ki): dr/dkf = sigmoid(kf) - 1,
            #            dr/dki = 1 - sigmoid(ki)
            kf, ki = u[..., :n], u[..., n:2 * n]
            torch.sigmoid(kf, out=grad_u[..., :n]).sub_(1.0).mul_(grad_r)
            grad_r.mul_(torch.sigmoid(ki).neg_().add_(1.0))  # grad_r sits in ki's slot
        return grad_u, None, None


class MinimalLayer(nn.Module):
    """Pre-norm residual block: x + out(cell(norm(x))), then x + mlp(norm(x)) if ff_mult > 0."""

    def __init__(self, cell, config: MinimalConfig):
        super().__init__()
        D, N = config.d_model, int(config.expansion * config.d_model)
        self.cell, self.impl = NEGATIVE[cell] if config.negative_eigen else cell, config.impl
        self.negative = config.negative_eigen
        # LayerNorm, not the reference's RMSNorm: on CPU it is one fused kernel, RMSNorm several
        self.norm = nn.LayerNorm(D)
        self.proj = nn.Linear(D, cell.n_proj * N, bias=False)  # all gates in one matmul
        # h is positive (the log-space form needs it), so a projection recentres it for the stream
        self.out = nn.Linear(N, D, bias=False)
        self.mlp = None
        if config.ff_mult > 0:
            F_ = int(config.ff_mult * D)
            self.mlp = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, F_), nn.GELU(), nn.Linear(F_, D))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x):
        # the gates and the scan run in the weights' dtype with autocast off: under bf16
        # autocast a product of L bf16 gates (8 bits of mantissa) would lose the signal
        dtype, off = self.proj.weight.dtype, torch.autocast(x.device.type, enabled=False)
        if self.impl == "sequential":  # Feng et al.'s algorithms 1 and 3
            h, states = x.new_zeros(x.shape[0], self.out.in_features, dtype=dtype), []
            for x_t in self.norm(x).unbind(1):
                u_t = self.proj(x_t)  # (B, n_proj * N)
                with off:
                    a, b = self.cell.coefficients(u_t.to(dtype))  # (B, N) each
                    h = torch.addcmul(b, a, h)
                states.append(h)
            return self._mix(x, torch.stack(states, dim=1))  # (B, L, N) to the projection
        u = self.proj(self.norm(x))  # (B, L, n_proj * N), every position at once
        with off:
            u = u.to(dtype)
            if self.impl == "scan":
                h = _FusedMinScan.apply(u, issubclass(self.cell, MinLSTMCell), self.negative)
            elif self.impl == "logscan":
                h = scan_log(*self.cell.log_coefficients(u))
            else:
                h = scan_chunked(*self.cell.coefficients(u))
        return self._mix(x, h)

    def step(self, h, x_t):
        u_t = self.proj(self.norm(x_t))  # (B, n_proj * N)
        with torch.autocast(x_t.device.type, enabled=False):  # as in forward
            a, b = self.cell.coefficients(u_t.to(h.dtype))  # (B, N) each
            h = torch.addcmul(b, a, h)
        return self._mix(x_t, h), h

    def _mix(self, x, h):
        x = x + self.drop(self.out(h))
        if self.mlp is not None:
            x = x + self.drop(self.mlp(x))
        return x


class Minimal(Backbone):
    """`layers` MinimalLayers and a final norm; causal, with one (B, N) state per layer."""

    family = "scan"
    causal = True
    # every parallel form is checked against the paper's sequential mode
    references = {"scan": "sequential", "chunked": "sequential", "logscan": "sequential"}

    def __init__(self, cell, config: MinimalConfig):
        super().__init__(config)
        self.cell = cell
        self.layers = nn.ModuleList(MinimalLayer(cell, config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.state_width = int(config.expansion * config.d_model)

    def forward(self, x, mask=None):
        """(B, L, D) -> (B, L, D). The mask is not needed: padding is on the right (see
        tasks/base.py), after every real token, and a causal model never lets it reach one."""
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def rebuild(self, config):
        return Minimal(self.cell, config)

    def state_size(self, n_tokens: int) -> int:
        """h_t, N = expansion * D floats, whatever n_tokens."""
        return self.state_width

    def init_state(self, batch_size):
        p = self.norm.weight
        return [p.new_zeros(batch_size, self.state_width) for _ in self.layers]

    def step(self, state, x_t):
        new_state = []
        for layer, h in zip(self.layers, state):
            x_t, h = layer.step(h, x_t)
            new_state.append(h)
        return self.norm(x_t), new_state


@register_model("mingru", MinimalConfig, "minGRU (Feng et al. 2024): GRU without h_{t-1} in its "
                "gates, trained by a parallel scan", "O(log L) depth parallel scan, O(L) work",
                "O(1)")
def build_mingru(config: MinimalConfig) -> Minimal:
    return Minimal(MinGRUCell, config)


@register_model("minlstm", MinimalConfig, "minLSTM (Feng et al. 2024): LSTM without h_{t-1} in "
                "its gates, trained by a parallel scan", "O(log L) depth parallel scan, O(L) work",
                "O(1)")
def build_minlstm(config: MinimalConfig) -> Minimal:
    return Minimal(MinLSTMCell, config)
