"""The Task contract and registry.

A task owns its data, the embedding that turns its inputs into (B, L, D), the head that turns the
backbone's (B, L, D) into predictions, its loss and its metric. It never imports a model: it meets
a backbone only through the Backbone contract (forward, init_state, step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from seqarena.errors import ConfigError
from seqarena.registry import Registry

# B batch, L length, D model width, F input features, C classes, V vocabulary


@dataclass
class Batch:
    x: torch.Tensor  # (B, L) int64 tokens, or (B, L, F) float features
    y: torch.Tensor  # targets: (B,) classes, (B, L) tokens (-100 = ignore), (B,) or (B, K) floats
    mask: torch.Tensor | None = None  # (B, L) bool, True at real (non-padding) positions
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. seq2seq source/target

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return Batch(move(self.x), move(self.y), move(self.mask),
                     {k: move(v) for k, v in self.extra.items()})


@dataclass(frozen=True)
class TaskConfig:
    """Fields every task has; tasks subclass it with their own, each commented."""

    seq_len: int = 64  # input length L the backbone sees
    seed: int = 0  # seed of the data generator (train and held-out splits derive from it)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and f.name != "seed" \
                    and value <= 0:
                raise ConfigError(f"{type(self).__name__}.{f.name} must be positive, got {value}")


class Task:
    """Base class. Subclasses set the class attributes and implement the methods below."""

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when the data or metric changes, so old results differ
    metric_name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    head_kind: ClassVar[str]  # "classify", "tokens" (per-token prediction), "regress", "seq2seq"
    needs_causal: ClassVar[bool] = False  # per-token prediction must not see the future
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    config_cls: ClassVar[type[TaskConfig]] = TaskConfig

    def __init__(self, config: TaskConfig):
        self.config = config

    def make_embedding(self, d_model: int) -> nn.Module:
        """Inputs -> (B, L, D)."""
        raise NotImplementedError

    def make_head(self, d_model: int) -> nn.Module:
        """Backbone output (B, L, D) (and mask) -> predictions."""
        raise NotImplementedError

    def batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        """Training batches are endless; held-out splits are finite and fixed under the seed."""
        raise NotImplementedError

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, split: str = "val", batch_size: int = 64) -> dict[str, float]:
        """{metric_name: value, ...} of a composed model (see SequenceModel) on a held-out split."""
        raise NotImplementedError

    def baselines(self) -> dict[str, float]:
        """Reference scores a model must beat to have learned anything (e.g. memoryless)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "metric": self.metric_name,
                "higher_is_better": self.higher_is_better, "head": self.head_kind,
                "params": dataclasses.asdict(self.config)}


TASKS: Registry[type[Task]] = Registry("task")


def register_task(name: str):
    """Class decorator: `@register_task("copy")` on a Task subclass."""

    def register(cls: type[Task]) -> type[Task]:
        cls.name = name
        TASKS.add(name, cls)
        return cls

    return register


def make_task(name: str, strict: bool = True, **fields: Any) -> Task:
    """Build a registered task from its config fields; strict=False drops unknown fields."""
    cls = TASKS.get(name)
    known = {f.name for f in dataclasses.fields(cls.config_cls)}
    unknown = sorted(set(fields) - known)
    if unknown and strict:
        raise ConfigError(f"task {name!r} has no parameter {unknown[0]!r}; "
                          f"its parameters are: {', '.join(sorted(known))}")
    return cls(cls.config_cls(**{k: v for k, v in fields.items() if k in known}))
