"""Other people's implementations, run through the same sweep as ours, in the same process.

Each peer is wrapped in the Backbone contract ((B, L, D) -> (B, L, D), init_state, step) and
built at the same width, depth and (for attention) heads, feed-forward width, norm placement
and causality as our model of that architecture. Peers that need a package outside torch come
with the optional extra `pip install "seqarena[peers]"`; a missing one is skipped with a note.

References: torch.nn.TransformerEncoderLayer / LSTM / GRU; x-transformers (lucidrains)
`Encoder`/`Decoder`; minGRU-pytorch (lucidrains) `minGRU`, after Feng et al. 2024, "Were RNNs
All We Needed?"; mambapy (alxndrTL) `Mamba`, after Gu & Dao 2023, "Mamba".
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from seqarena.errors import UserError
from seqarena.flops import hidden_rnn_flops
from seqarena.models import Backbone, make_config
from seqarena.registry import Registry

# B batch, L length, D model width, K layers, H heads, F feed-forward width


class PeerUnavailable(UserError):
    """A peer's package is not installed."""


@dataclass(frozen=True)
class Shape:
    """What a peer must match: our models' width and depth, our transformer's block layout."""

    d_model: int
    layers: int
    heads: int
    d_ff: int
    causal: bool
    norm_first: bool
    activation: str

    @classmethod
    def like_ours(cls, d_model: int, layers: int, **transformer_fields: Any) -> "Shape":
        """The shape of our transformer at this width and depth (its defaults unless given)."""
        cfg = make_config("transformer", strict=False, d_model=d_model, layers=layers,
                          **transformer_fields)
        return cls(d_model, layers, cfg.heads, cfg.ff_width, cfg.causal, cfg.norm_first,
                   cfg.activation)


@dataclass(frozen=True)
class Peer:
    name: str  # what --peers calls it
    model: str  # the architecture it stands beside in results and tables
    impl: str  # what results call this implementation
    package: str | None  # the import it needs beyond torch
    make: Callable[[Shape], nn.Module]

    def build(self, shape: Shape) -> nn.Module:
        if self.package is not None and importlib.util.find_spec(self.package) is None:
            raise PeerUnavailable(f"peer {self.name!r} needs the {self.package} package, not "
                                  f"installed; skipped (pip install \"seqarena[peers]\")")
        return self.make(shape)


PEERS: Registry[Peer] = Registry("peer")


def peer(name: str, model: str, impl: str, package: str | None = None):
    return PEERS.decorator(name, lambda make: Peer(name, model, impl, package, make))


# --- torch.nn -------------------------------------------------------------------------------------

@peer("torch-transformer", "transformer", "torch.nn.TransformerEncoderLayer")
class TorchTransformer(Backbone):
    """K torch.nn.TransformerEncoderLayer blocks (+ a final LayerNorm if pre-norm, as ours)."""

    family = "attention"

    def __init__(self, shape: Shape):
        super().__init__(shape)
        self.shape, self.causal = shape, shape.causal
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(shape.d_model, shape.heads, shape.d_ff, dropout=0.0,
                                       activation=shape.activation, batch_first=True,
                                       norm_first=shape.norm_first)
            for _ in range(shape.layers))
        self.norm = nn.LayerNorm(shape.d_model) if shape.norm_first else nn.Identity()
        self._masks: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        L = x.shape[1]
        # torch wants the (L, L) mask beside is_causal=True, which only says the mask is causal;
        # it is built once per length so the timing sees the layer, not the mask
        key = (L, x.device, x.dtype)
        if self.causal and key not in self._masks:
            self._masks[key] = nn.Transformer.generate_square_subsequent_mask(
                L, device=x.device, dtype=x.dtype)
        causal_mask = self._masks.get(key) if self.causal else None
        for block in self.blocks:
            x = block(x, src_mask=causal_mask, is_causal=self.causal)
        return self.norm(x)


class TorchRNN(Backbone):
    """A bare torch.nn.LSTM or GRU, D -> D, K layers: the kernel our lstm/gru wrap."""

    family = "recurrent"
    causal = True
    cls: type[nn.RNNBase]

    def __init__(self, shape: Shape):
        super().__init__(shape)
        self.rnn = self.cls(shape.d_model, shape.d_model, num_layers=shape.layers, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.rnn(x)[0]

    def init_state(self, batch_size: int):
        w = self.rnn.weight_hh_l0
        h = w.new_zeros(self.rnn.num_layers, batch_size, self.rnn.hidden_size)  # (K, B, D)
        return (h, torch.zeros_like(h)) if isinstance(self.rnn, nn.LSTM) else h

    def step(self, state, x_t: torch.Tensor):
        y, state = self.rnn(x_t[:, None], state)  # (B, 1, D)
        return y[:, 0], state

    def uncounted_flops(self, batch: int, seq_len: int) -> float:
        """The kernel's matmuls less what the counter sees of them on this device and dtype."""
        x = self.rnn.weight_hh_l0.new_zeros(1, 1, self.rnn.input_size)
        return hidden_rnn_flops(self.rnn, lambda: self.rnn(x), batch * seq_len)


@peer("torch-lstm", "lstm", "torch.nn.LSTM")
class TorchLSTM(TorchRNN):
    cls = nn.LSTM


@peer("torch-gru", "gru", "torch.nn.GRU")
class TorchGRU(TorchRNN):
    cls = nn.GRU


# --- packages -------------------------------------------------------------------------------------

@peer("x-transformers", "transformer", "x-transformers", package="x_transformers")
class XTransformers(Backbone):
    """x-transformers Encoder (or Decoder when our transformer is causal), flash (SDPA) path."""

    family = "attention"

    def __init__(self, shape: Shape):
        super().__init__(shape)
        from x_transformers import Decoder, Encoder

        self.shape, self.causal = shape, shape.causal
        kind = Decoder if shape.causal else Encoder
        self.net = kind(dim=shape.d_model, depth=shape.layers, heads=shape.heads,
                        attn_dim_head=shape.d_model // shape.heads, attn_flash=True,
                        ff_mult=shape.d_ff / shape.d_model, pre_norm=shape.norm_first)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


@peer("x-transformers-default", "transformer", "x-transformers (defaults)",
      package="x_transformers")
class XTransformersDefault(Backbone):
    """x-transformers Encoder / Decoder as its README builds one: our width, depth and heads,
    every other setting its own default (head width 64, feed-forward 4 x D, attention written
    out rather than flash); the configuration a newcomer would time first."""

    family = "attention"

    def __init__(self, shape: Shape):
        super().__init__(shape)
        from x_transformers import Decoder, Encoder

        self.causal = shape.causal
        self.net = (Decoder if shape.causal else Encoder)(dim=shape.d_model, depth=shape.layers,
                                                          heads=shape.heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


@peer("mingru-pytorch", "mingru", "minGRU-pytorch", package="minGRU_pytorch")
class MinGRUPytorch(Backbone):
    """minGRU-pytorch's `minGRU` cell in our mingru's block: x + minGRU(LayerNorm(x)) per layer,
    with its output projection on (as ours has), and a final LayerNorm. Only the cell differs."""

    family = "scan"
    causal = True

    def __init__(self, shape: Shape):
        super().__init__(shape)
        from minGRU_pytorch import minGRU

        D = shape.d_model
        self.norms = nn.ModuleList(nn.LayerNorm(D) for _ in range(shape.layers))
        self.cells = nn.ModuleList(minGRU(D, proj_out=True) for _ in range(shape.layers))
        self.norm = nn.LayerNorm(D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for norm, cell in zip(self.norms, self.cells):
            x = x + cell(norm(x))
        return self.norm(x)

    def init_state(self, batch_size: int) -> list:
        return [None] * len(self.cells)  # minGRU starts from h_0 = 0 when given no state

    def step(self, state: list, x_t: torch.Tensor):
        x, new = x_t[:, None], []  # (B, 1, D)
        for norm, cell, h in zip(self.norms, self.cells, state):
            y, h = cell(norm(x), prev_hidden=h, return_next_prev_hidden=True)
            x = x + y
            new.append(h)
        return self.norm(x)[:, 0], new


@peer("mambapy", "mamba", "mambapy", package="mambapy")
class MambaPy(Backbone):
    """mambapy `Mamba` (pure-PyTorch parallel scan), K residual blocks of width D."""

    family = "scan"
    causal = True

    def __init__(self, shape: Shape):
        super().__init__(shape)
        from mambapy.mamba import Mamba, MambaConfig

        self.mamba_config = MambaConfig(d_model=shape.d_model, n_layers=shape.layers)
        self.net = Mamba(self.mamba_config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)

    def init_state(self, batch_size: int) -> list:
        w = self.net.layers[0].mixer.in_proj.weight
        conv = w.new_zeros(batch_size, self.mamba_config.d_inner, self.mamba_config.d_conv - 1)
        return [(None, conv.clone()) for _ in self.net.layers]  # (h, last inputs) per layer

    def step(self, state: list, x_t: torch.Tensor):
        return self.net.step(x_t, state)


@peer("manual-attention", "transformer", "seqarena manual attention")
def manual_attention(shape: Shape) -> nn.Module:
    """Our transformer with the textbook attention that materialises the L x L weights."""
    from seqarena.models import build_model

    return build_model("transformer", strict=False, d_model=shape.d_model, layers=shape.layers,
                       heads=shape.heads, d_ff=shape.d_ff, causal=shape.causal,
                       norm_first=shape.norm_first, activation=shape.activation, impl="manual")
