"""Models from outside the package: Python entry points and `module:factory` names.

A plug-in is a callable taking a ModelConfig and returning either a seqarena.models.Backbone or a
plain nn.Module mapping (B, L, D) -> (B, L, D), which PluginBackbone fits to the contract.
Plug-ins go through the same registry as built-ins, so training, benchmarks and reports treat them
alike. Broken plug-ins fail with one line naming the plug-in and what to fix.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from importlib.metadata import entry_points
from typing import Any, Callable

import torch
from torch import nn

from seqarena.errors import UserError
from seqarena.models.base import Backbone, StepNotSupported, check_contract
from seqarena.models.registry import MODELS, ModelConfig, ModelSpec

# B batch, L length, D model width

ENTRY_POINT_GROUP = "seqarena.models"
PLUGIN_COST = "unknown (plug-in)"


class PluginBackbone(Backbone):
    """A module that is not a Backbone, made to fit the contract from what it has: `causal`
    (default False), `family` (default "plugin"), init_state/step and uncounted_flops if it
    defines them. A part it half-defines is an error naming what is missing."""

    def __init__(self, module: nn.Module, name: str, config: ModelConfig):
        super().__init__(config)
        self.module, self.name = module, name
        where = f"plug-in model {name!r}"
        if getattr(module, "seq2seq", False):
            raise UserError(f"{where} says seq2seq=True; an encoder-decoder must derive from "
                            "seqarena.models.Seq2SeqBackbone")
        self.causal = getattr(module, "causal", False)
        if not isinstance(self.causal, bool):
            raise UserError(f"{where}: causal must be True or False, got {self.causal!r}")
        family = getattr(module, "family", "plugin")
        if not isinstance(family, str) or not family:
            raise UserError(f"{where}: family must be a non-empty string, got {family!r}")
        self.family = family
        steps = [m for m in ("init_state", "step") if callable(getattr(module, m, None))]
        if len(steps) == 1:
            missing = "step" if steps == ["init_state"] else "init_state"
            raise UserError(f"{where} defines {steps[0]}() but not {missing}(); a model that "
                            "decodes needs both (see docs/plugins.md)")
        self.decodes = bool(steps)
        if self.decodes and not self.causal:
            raise UserError(f"{where} defines step() but causal is not True; set causal = True "
                            "on a model whose output t reads only inputs <= t")
        flops = getattr(module, "uncounted_flops", None)
        if flops is not None and not callable(flops):
            raise UserError(f"{where}: uncounted_flops must be a method (batch, seq_len) -> FLOPs")
        self.flops = flops
        self.takes_mask = "mask" in inspect.signature(module.forward).parameters

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.module(x, mask=mask) if self.takes_mask else self.module(x)

    def init_state(self, batch_size: int) -> Any:
        if not self.decodes:
            raise StepNotSupported(f"model {self.name!r} has no step(): decoding is not supported")
        return self.module.init_state(batch_size)

    def step(self, state: Any, x_t: torch.Tensor):
        if not self.decodes:
            raise StepNotSupported(f"model {self.name!r} has no step(): decoding is not supported")
        return self.module.step(state, x_t)

    def uncounted_flops(self, batch: int, seq_len: int) -> float | None:
        return None if self.flops is None else float(self.flops(batch, seq_len))


def checked_build(name: str, factory: Callable[[ModelConfig], Any]) -> Callable[[ModelConfig], nn.Module]:
    """Wrap a factory so that its failures and wrong shapes become one-line UserErrors."""

    def build(config: ModelConfig) -> nn.Module:
        try:
            model = factory(config)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"plug-in model {name!r}: its factory raised "
                            f"{type(e).__name__}: {e}") from None
        if not isinstance(model, nn.Module):
            raise UserError(f"plug-in model {name!r}: its factory returned {type(model).__name__}, "
                            "not a torch.nn.Module mapping (B, L, D) to (B, L, D)")
        if not isinstance(model, Backbone):
            model = PluginBackbone(model, name, config)
        check_contract(model, name, config.d_model)
        _check_shape(name, model, config.d_model)
        return model

    return build


def _check_shape(name: str, model: nn.Module, d_model: int) -> None:
    """Run a tiny batch: it proves the shape contract and builds lazily-built (Keras) layers."""
    x = torch.zeros(2, 3, d_model)  # (B, L, D)
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as e:
        raise UserError(f"plug-in model {name!r} failed on an input of shape (2, 3, {d_model}): "
                        f"{type(e).__name__}: {e}") from None
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, 3, d_model):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise UserError(f"plug-in model {name!r} maps (2, 3, {d_model}) to {got}; it must return "
                        f"(B, L, D) with D = d_model = {d_model}")


def plugin_spec(name: str, factory: Callable[[ModelConfig], Any], origin: str) -> ModelSpec:
    return ModelSpec(name, ModelConfig, checked_build(name, factory), f"plug-in from {origin}",
                     PLUGIN_COST, PLUGIN_COST)


def resolve(name: str) -> ModelSpec | None:
    """Registry fallback: "pkg.module:factory" imports the module and registers the factory."""
    if ":" not in name:
        return None
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise UserError(f"plug-in model {name!r}: write it as 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise UserError(f"plug-in model {name!r}: cannot import {module_name!r} "
                        f"({type(e).__name__}: {e}); is it installed or on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"plug-in model {name!r}: module {module_name!r} has no callable {attr!r}")
    return plugin_spec(name, factory, name)


def register_entry_points() -> None:
    """Register the models installed packages declare under the `seqarena.models` group.

    Loading is deferred to the first build, so a broken plug-in does not break other commands.
    """
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in MODELS:
            warnings.warn(f"plug-in model {ep.name!r} from {ep.value} is ignored: the name is taken")
            continue
        MODELS.add(ep.name, plugin_spec(ep.name, _lazy(ep), f"entry point {ep.value}"))


def _lazy(ep) -> Callable[[ModelConfig], Any]:
    def factory(config: ModelConfig) -> Any:
        try:
            loaded = ep.load()
        except Exception as e:
            raise UserError(f"plug-in model {ep.name!r}: cannot load entry point {ep.value} "
                            f"({type(e).__name__}: {e})") from None
        return loaded(config)

    return factory
