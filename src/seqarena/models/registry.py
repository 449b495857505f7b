"""The model registry and the config every model shares; the contract itself is in base.py.

Every build goes through build_model(), which checks the built model against the contract, so a
built-in and a plug-in are held to the same rules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from seqarena.errors import ConfigError
from seqarena.models.base import Backbone, check_contract
from seqarena.registry import Registry

# B batch, L length, D model width


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
    """Class or factory decorator: `@register_model("lstm", RecurrentConfig, ...)`. A class must
    derive from Backbone; what a factory builds is checked at each build (build_model)."""
    def spec(build: Callable[[ModelConfig], nn.Module]) -> ModelSpec:
        if isinstance(build, type) and not issubclass(build, Backbone):
            raise TypeError(f"model {name!r}: {build.__name__} must derive from "
                            "seqarena.models.Backbone")
        return ModelSpec(name, config_cls, build, summary, train_cost, decode_cost)

    return MODELS.decorator(name, spec)


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
    model = spec.build(config)
    check_contract(model, name, config.d_model)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
