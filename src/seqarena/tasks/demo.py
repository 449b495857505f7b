"""The two toy experiments of popular RNN-vs-Transformer write-ups, done so they tell the truth.

Those write-ups train both models on random inputs with random targets, e.g. integer sequences
of length 20 mapped to one of 5 random labels, or (4, 10) real-valued sequences mapped to a random
normal number, and read the training loss as a verdict on the architectures. With random targets
there is nothing to model: a falling training loss is memorisation, and held-out data stays at
chance. So these tasks keep a fixed training set (as those experiments do), and evaluate()
reports the training metric BESIDE the held-out one (`train_accuracy` next to `accuracy`), with
chance in baselines(). A model "winning" here has only memorised more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqarena.tasks.base import (Batch, DatasetTask, PoolHead, TaskConfig, chunks, register_task,
                                 split_rng, squared_error_sums, token_sums)

# B batch (n when generating), L length, D model width, F features, C classes


class SeedDemo(DatasetTask):
    """Random inputs, random targets: a fixed training set and fixed held-out sets."""

    def split_data(self, split: str) -> Batch:
        cache = self.__dict__.setdefault("_data", {})
        if split not in cache:
            n = self.config.train_size if split == "train" else self.config.eval_size
            cache[split] = self.sample(n, split_rng(self.config.seed, split))
        return cache[split]

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        raise NotImplementedError

    def companion_metrics(self, model: nn.Module, batch_size: int = 64) -> dict[str, float]:
        """The fixed training set's metrics, under train_ names: what memorising looks like."""
        train = self.evaluate_batches(model, chunks(self.split_data("train"), batch_size))
        return {f"train_{k}": v for k, v in train.items()}


@dataclass(frozen=True)
class ClassifyDemoConfig(TaskConfig):
    seq_len: int = 20  # tokens per sequence, as in the write-ups
    tokens: int = 10  # input tokens are integers in [0, tokens)
    classes: int = 5  # labels are integers in [0, classes), drawn independently of the input
    train_size: int = 1000  # the fixed training set that gets memorised
    eval_size: int = 1000  # examples in each held-out split


@register_task("seed-demo-classify")
class ClassifyDemo(SeedDemo):
    config_cls = ClassifyDemoConfig
    summary = "random tokens -> random label: measures memorisation, not sequence modelling"
    metric_name = "accuracy"
    higher_is_better = True
    head_kind = "classify"

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        x = rng.integers(0, self.config.tokens, size=(n, self.config.seq_len))
        y = rng.integers(0, self.config.classes, size=n)
        return Batch(torch.from_numpy(x), torch.from_numpy(y))

    def make_embedding(self, d_model: int) -> nn.Module:
        return nn.Embedding(self.config.tokens, d_model)

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        return PoolHead(d_model, self.config.classes, causal)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(pred, batch.y)

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[float, float]]:
        return token_sums(model(batch), batch.y)

    def baselines(self) -> dict[str, float]:
        c = self.config.classes
        return {"chance_accuracy": 1 / c, "chance_cross_entropy": math.log(c)}


@dataclass(frozen=True)
class RegressDemoConfig(TaskConfig):
    seq_len: int = 4  # steps per sequence: the write-ups' (4, 10) inputs read as 4 steps ...
    features: int = 10  # ... of 10 features (reading them as 10 steps of 4 changes nothing here)
    train_size: int = 1000  # the fixed training set that gets memorised
    eval_size: int = 1000  # examples in each held-out split


@register_task("seed-demo-regress")
class RegressDemo(SeedDemo):
    config_cls = RegressDemoConfig
    summary = "random (4, 10) inputs -> random normal target: measures memorisation only"
    metric_name = "mse"
    higher_is_better = False
    head_kind = "regress"

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        x = rng.standard_normal((n, self.config.seq_len, self.config.features), dtype=np.float32)
        y = rng.standard_normal(n, dtype=np.float32)
        return Batch(torch.from_numpy(x), torch.from_numpy(y))

    def make_embedding(self, d_model: int) -> nn.Module:
        return nn.Linear(self.config.features, d_model)

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        return PoolHead(d_model, 1, causal, squeeze=True)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.mse_loss(pred, batch.y)

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[float, float]]:
        return squared_error_sums(model(batch), batch.y)

    def baselines(self) -> dict[str, float]:
        # The best input-blind answer is the training mean; the target is N(0, 1), so MSE ~ 1.
        mean = self.split_data("train").y.mean()
        return {"predict_mean_mse": ((self.split_data("val").y - mean) ** 2).mean().item()}
