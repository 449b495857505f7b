"""Time-series classification in the UCR/UEA archive's layout: accuracy against the majority.

The UCR Time Series Classification Archive (Dau et al. 2019, "The UCR Time Series Archive",
2018 release) ships each dataset as a directory of two tab-separated files:

    GunPoint/GunPoint_TRAIN.tsv     one series a line: the class label, then the values
    GunPoint/GunPoint_TEST.tsv

Series of unequal length are padded with NaN at the end to one width per file; files of
equal-length series (no NaN padding) must agree on the length. A NaN inside a series (a missing
value) is filled by linear interpolation. Each series is
z-normalised on its own, (x - mean) / std over its real values (population std; a constant series
becomes zeros), as the archive's datasets are, so a model reads shapes, not offsets or scales
(normalize=false keeps the raw values). The model sees seq_len values, the series padded (with a
mask) or cut (counted) to that length. Validation is a stratified tenth of TRAIN; TEST is the
archive's test split. The metric is accuracy (macro-F1 beside it), the baseline the majority class.

data= names the dataset directory, or its NAME_TRAIN.tsv file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqarena.errors import UserError
from seqarena.fileio import read_utf8
from seqarena.tasks.base import Batch, TaskConfig, register_task
from seqarena.tasks.classify import (VAL_FRACTION, ClassifyTask, check_classes, class_names,
                                     dealing_rng, stratified_split)
from seqarena.tasks.forecast import fill_gaps

# N series, B batch, L length (seq_len), W the files' width (longest series), D model width


def read_ucr(path: Path) -> tuple[list[str], np.ndarray]:
    """(labels, values (N, W) with NaN padding) of a UCR TSV file; UserError naming the line and
    column of a value that is not a number, or of a line whose width differs from the first's."""
    labels, rows = [], []
    for number, line in enumerate(read_utf8(path, "UCR file").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) < 2:
            raise UserError(f"{path}:{number}: a label and at least one value, tab-separated, "
                            "are needed")
        if rows and len(fields) - 1 != len(rows[0]):
            raise UserError(f"{path}:{number}: {len(fields) - 1} values, line 1 has "
                            f"{len(rows[0])}; pad unequal series with NaN to one width, as the "
                            "archive does")
        values = []
        for column, cell in enumerate(fields[1:], start=2):
            try:
                values.append(float(cell))
            except ValueError:
                raise UserError(f"{path}:{number}: column {column} holds {cell!r}, not a number "
                                "(NaN marks padding)") from None
        if all(math.isnan(v) for v in values):
            raise UserError(f"{path}:{number}: the series has no values, only NaN")
        labels.append(fields[0].strip())
        rows.append(values)
    return labels, np.array(rows, dtype=np.float64)


def z_normalise(values: np.ndarray) -> np.ndarray:
    """(N, W) -> (N, W): each series' real values to mean 0, std 1; NaN padding stays NaN."""
    mean = np.nanmean(values, axis=1, keepdims=True)
    std = np.nanstd(values, axis=1, keepdims=True)
    return (values - mean) / np.where(std > 0, std, 1.0)  # constant: values - mean, all zero


def lengths(values: np.ndarray) -> np.ndarray:
    """(N,) each series' length: up to its last value that is not NaN."""
    real = ~np.isnan(values)
    return np.where(real.any(1), values.shape[1] - real[:, ::-1].argmax(1), 0)


@dataclass(frozen=True)
class SeriesConfig(TaskConfig):
    seq_len: int = 128  # values per series the model reads; longer series are cut (and counted)
    data: str = ""  # a UCR dataset directory (NAME_TRAIN.tsv, NAME_TEST.tsv) or its TRAIN file
    normalize: bool = True  # z-normalise each series, as the archive does

    def validate(self) -> None:
        super().validate()
        self.need_data("series-classify", self.data, "DIR",
                       "a UCR dataset directory holding NAME_TRAIN.tsv and NAME_TEST.tsv")


@register_task("series-classify")
class SeriesClassify(ClassifyTask):
    """Classify each series of a UCR/UEA dataset by its label."""

    config_cls = SeriesConfig
    summary = "your labelled time series, UCR/UEA archive TSV layout (accuracy)"

    def __init__(self, config: SeriesConfig):
        super().__init__(config)
        self._data: dict[str, Batch] = {}  # read on first use: a reloaded run needs no files
        self._cut = 0  # series longer than seq_len, cut

    def read_classes(self) -> list[str]:
        train_file, _ = self.files(Path(self.config.data))
        names = class_names(read_ucr(train_file)[0])
        check_classes(names, "the first column", str(train_file))
        return names

    def _read(self) -> None:
        train_file, test_file = self.files(Path(self.config.data))
        train_labels, train = read_ucr(train_file)
        test_labels, test = read_ucr(test_file)
        padded = np.isnan(train[:, -1]).any() or np.isnan(test[:, -1]).any()
        if test.shape[1] != train.shape[1] and not padded:
            raise UserError(f"{test_file}: series of {test.shape[1]} values, {train_file} has "
                            f"{train.shape[1]}; pad unequal series with NaN, as the archive does")
        width = max(train.shape[1], test.shape[1])
        train, test = (np.pad(v, ((0, 0), (0, width - v.shape[1])), constant_values=np.nan)
                       for v in (train, test))
        y = self.label_index(train_labels, str(train_file)).numpy()
        keep, val = stratified_split(y, (1 - VAL_FRACTION, VAL_FRACTION),
                                     dealing_rng(self.config.seed))
        raw = {"train": (train[keep], y[keep]), "val": (train[val], y[val]),
               "test": (test, self.label_index(test_labels, str(test_file)).numpy())}
        self._cut = 0
        self._data = {split: self._pack(v, labels) for split, (v, labels) in raw.items()}

    @staticmethod
    def files(path: Path) -> tuple[Path, Path]:
        """(NAME_TRAIN.tsv, NAME_TEST.tsv) of a dataset directory or of its TRAIN file."""
        if path.is_dir():
            found = sorted(path.glob("*_TRAIN.tsv"))
            if len(found) != 1:
                what = "no" if not found else f"{len(found)}"
                raise UserError(f"{path} holds {what} *_TRAIN.tsv file(s); name the dataset's "
                                "NAME_TRAIN.tsv with data=FILE")
            path = found[0]
        if not path.name.endswith("_TRAIN.tsv"):
            raise UserError(f"{path}: a UCR dataset's file is named NAME_TRAIN.tsv (beside "
                            "NAME_TEST.tsv)")
        if not path.is_file():
            raise UserError(f"UCR file {path} does not exist")
        test = path.with_name(path.name[:-len("_TRAIN.tsv")] + "_TEST.tsv")
        if not test.is_file():
            raise UserError(f"{path} has no {test.name} beside it")
        return path, test

    def _pack(self, values: np.ndarray, y: np.ndarray) -> Batch:
        """x (N, L, 1) float, mask (N, L), y (N,); counts the series cut to seq_len."""
        L, n = self.config.seq_len, lengths(values)
        filled = np.zeros_like(values)
        for i, k in enumerate(n):
            if k:
                filled[i, :k] = fill_gaps(values[i, :k])
        filled[np.arange(values.shape[1])[None, :] >= n[:, None]] = math.nan
        if self.config.normalize:
            filled = z_normalise(filled)
        x = np.zeros((len(values), L), dtype=np.float32)
        width = min(L, values.shape[1])
        x[:, :width] = np.nan_to_num(filled[:, :width], nan=0.0)
        mask = torch.arange(L)[None, :] < torch.from_numpy(np.minimum(n, L))[:, None]
        self._cut += int((n > L).sum())
        return Batch(torch.from_numpy(x).unsqueeze(-1), torch.from_numpy(y).long(), mask)

    def split_data(self, split: str) -> Batch:
        if not self._data:
            self._read()
        return self._data[split]

    def truncated(self) -> int:
        self.split_data("train")
        return self._cut

    def make_embedding(self, d_model: int) -> nn.Module:
        return nn.Linear(1, d_model)
