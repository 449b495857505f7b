"""Keras 3 layers on the PyTorch backend, as seqarena backbones.

The popular RNN-vs-Transformer write-ups compare a Keras `SimpleRNN(64, return_sequences=True)`
with a Keras `MultiHeadAttention(num_heads=2, key_dim=32)` self-attention. These two models are
those layers, unchanged, so their results can stand beside ours. On the torch backend a Keras
layer is a torch.nn.Module, so seqarena's trainer, optimiser and benchmarks drive it directly; no
TensorFlow is needed. Keras is an optional extra: `pip install "seqarena[keras]"`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from seqarena.errors import UserError
from seqarena.models.base import Backbone
from seqarena.models.registry import ModelConfig, register_model

# B batch, L length, D model width


def import_keras():
    """Keras with the torch backend, or one line saying how to get it."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise UserError("the Keras models need keras: pip install \"seqarena[keras]\"") from None
    if keras.backend.backend() != "torch":
        raise UserError(f"keras is running on the {keras.backend.backend()!r} backend; "
                        "set KERAS_BACKEND=torch before starting seqarena")
    return keras


@dataclass(frozen=True)
class KerasConfig(ModelConfig):
    heads: int = 2  # MultiHeadAttention(num_heads=2), as in the write-up
    key_dim: int = 32  # per-head width of queries and keys, as in the write-up


@register_model("keras-simple-rnn", KerasConfig, "Keras SimpleRNN(d_model) returning sequences",
                "O(L) sequential", "O(1)")
class KerasSimpleRNN(Backbone):
    """keras.layers.SimpleRNN with `units = d_model`; step() runs its cell."""

    family = "recurrent"  # the architecture, not the library: drawn beside our recurrences
    causal = True

    def __init__(self, config: KerasConfig):
        super().__init__(config)
        keras = import_keras()
        self.rnn = keras.layers.SimpleRNN(config.d_model, return_sequences=True)
        self.rnn.build((None, None, config.d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.rnn(x)  # (B, L, D)

    def init_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.d_model, device=self.rnn.cell.kernel.value.device)

    def step(self, state: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, Any]:
        y_t, (h_t,) = self.rnn.cell(x_t, [state])  # (B, D), (B, D)
        return y_t, h_t


@register_model("keras-mha", KerasConfig,
                "Keras MultiHeadAttention(num_heads=2, key_dim=32) self-attention",
                "O(L^2) attention (parallel over L)", "not supported (no cache)")
class KerasMHA(Backbone):
    """keras.layers.MultiHeadAttention applied as self-attention; no step(): it keeps no cache."""

    family = "attention"
    causal = False

    def __init__(self, config: KerasConfig):
        super().__init__(config)
        keras = import_keras()
        self.mha = keras.layers.MultiHeadAttention(num_heads=config.heads, key_dim=config.key_dim)
        self.mha.build((None, None, config.d_model), (None, None, config.d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return self.mha(x, x)  # (B, L, D)
        return self.mha(x, x, attention_mask=mask[:, None, :] & mask[:, :, None])
