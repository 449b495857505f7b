"""The model registry, the config every model shares, and the Backbone contract.

A backbone maps (B, L, D) -> (B, L, D). Tasks own the embedding before it and the head after it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn

from seqarena.errors import ConfigError
from seqarena.registry import Registry

# B batch, L length, D model width


@runtime_checkable
class Backbone(Protocol):
    """What every model is: a parallel forward and a step-by-step path that agree numerically."""

    causal: bool  # True: position t sees only positions <= t, so step() can decode

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); mask (B, L) bool, True at real (non-padding) positions."""

    def init_state(self, batch_size: int) -> Any:
        """The state before the first token: a hidden state, or an empty KV cache."""

    def step(self, state: Any, x_t: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """One token (B, D) -> output (B, D) and the next state."""


class StepNotSupported(NotImplementedError):
    """The model has no step-by-step path (a plug-in without step(), a non-causal model)."""


@dataclass(frozen=True)
class ModelConfig:
    """Fields every model has. Families subclass it with their own fields, each commented."""

    d_model: int = 64  # width D of the residual stream / hidden state
    layers: int = 1  # stacked layers (blocks for attention, recurrent layers for RNNs)
    dropout: float = 0.0  # dropout between layers; 0 keeps training deterministic

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first field that cannot work."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                continue
            if isinstance(value, int) and f.name not in _MAY_BE_ZERO and value <= 0:
                raise ConfigError(f"{type(self).__name__}.{f.name} must be positive, got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{type(self).__name__}.dropout must be in [0, 1), got {self.dropout}")


_MAY_BE_ZERO = {"max_len"}  # int fields for which 0 means "none"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to configure it, build it and describe its cost."""

    name: str
    config_cls: type[ModelConfig]
    build: Callable[[ModelConfig], nn.Module]
    summary: str  # one line for `seqarena models`
    train_cost: str  # work along L in a training forward, e.g. "O(L) sequential"
    decode_cost: str  # work per decoded token, e.g. "O(1)" or "O(L)"


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(name: str, config_cls: type[ModelConfig], summary: str, train_cost: str,
                   decode_cost: str):
    """Class or factory decorator: `@register_model("lstm", RecurrentConfig, ...)`."""
    return MODELS.decorator(name, lambda build: ModelSpec(name, config_cls, build, summary,
                                                          train_cost, decode_cost))


def config_fields(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(MODELS.get(name).config_cls)}


def make_config(name: str, strict: bool = True, **fields: Any) -> ModelConfig:
    """The config of model `name`; strict=False drops fields that model does not have."""
    spec = MODELS.get(name)
    known = config_fields(name)
    unknown = sorted(set(fields) - known)
    if unknown and strict:
        raise ConfigError(f"model {name!r} has no field {unknown[0]!r}; "
                          f"its fields are: {', '.join(sorted(known))}")
    try:
        return spec.config_cls(**{k: v for k, v in fields.items() if k in known})
    except TypeError as e:
        raise ConfigError(f"model {name!r}: {e}") from None


def build_model(name: str, config: ModelConfig | None = None, strict: bool = True,
                **fields: Any) -> nn.Module:
    """Build a registered backbone from a config, or from config fields given by name."""
    spec = MODELS.get(name)
    if config is None:
        config = make_config(name, strict=strict, **fields)
    return spec.build(config)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
