"""Handwritten digits read one pixel at a time: a small, real sequential-image task.

scikit-learn ships the UCI "Optical Recognition of Handwritten Digits" test set (1797 images of
8x8 pixels, intensities 0-16), so nothing is downloaded. Each image becomes a sequence of 64 steps
with one feature, read row by row: a miniature of sequential MNIST (Le, Jaitly & Hinton 2015,
"A Simple Way to Initialize Recurrent Networks of Rectified Linear Units").

The split is fixed, whatever the seed (1197 train, 300 val, 300 test), so every run is scored on
the same images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqarena.tasks.base import Batch, DatasetTask, PoolHead, TaskConfig, register_task, token_sums

# B batch, L length, D model width

PIXELS = 64  # 8 x 8
HELD_OUT = 300  # images in each of val and test
SPLIT_SEED = 0  # the fixed shuffle that assigns images to splits


@dataclass(frozen=True)
class DigitsConfig(TaskConfig):
    seq_len: int = 64  # 64 pixels; a longer seq_len pads with a mask (it cannot be shorter)

    def validate(self) -> None:
        super().validate()
        self.need_seq_len("digits-seq", PIXELS, "an 8x8 image is 64 pixels")


@register_task("digits-seq")
class DigitsSeq(DatasetTask):
    """Classify a digit (10 classes) from its 64 pixels, one per step."""

    config_cls = DigitsConfig
    summary = "scikit-learn's 8x8 digits as 64-step pixel sequences, 10 classes"
    metric_name = "accuracy"
    higher_is_better = True
    head_kind = "classify"

    def split_data(self, split: str) -> Batch:
        cache = self.__dict__.setdefault("_data", {})
        if not cache:
            from sklearn.datasets import load_digits

            digits = load_digits()
            x = torch.zeros(len(digits.target), self.config.seq_len, 1)
            x[:, :PIXELS, 0] = torch.from_numpy(digits.data / 16.0).float()  # intensities in [0, 1]
            mask = None
            if self.config.seq_len > PIXELS:
                mask = (torch.arange(self.config.seq_len) < PIXELS).expand(len(x), -1)
            data = Batch(x, torch.from_numpy(digits.target).long(), mask)
            order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(x)))
            cache["test"] = data.select(order[:HELD_OUT])
            cache["val"] = data.select(order[HELD_OUT:2 * HELD_OUT])
            cache["train"] = data.select(order[2 * HELD_OUT:])
        return cache[split]

    def make_embedding(self, d_model: int) -> nn.Module:
        return nn.Linear(1, d_model)

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        return PoolHead(d_model, 10, causal)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(pred, batch.y)

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[float, float]]:
        return token_sums(model(batch), batch.y)

    def baselines(self) -> dict[str, float]:
        y = self.split_data("val").y
        return {"chance_accuracy": 0.1,
                "majority_accuracy": torch.bincount(y, minlength=10).max().item() / len(y)}
