"""Univariate forecasting: from seq_len past values, predict the next `horizon` values.

Series that ship with statsmodels, so nothing is downloaded:
- co2: weekly atmospheric CO2 at Mauna Loa, 1958-2001, in ppm (2284 weeks, 59 missing, filled by
  linear interpolation); its season is a year, 52 weeks.
- sunspots: yearly sunspot activity, 1700-2008 (309 years); its cycle is about 11 years.
Or a column of the user's CSV file (csv=FILE, column=NAME), blanks interpolated.

The series is split in time order, 70% / 15% / 15%; a window belongs to the split its targets
fall in (its inputs may reach back into the previous split, as they would in deployment). The
model reads values normalised with the training part's mean and standard deviation; MAE and RMSE
are reported in the series' own units. The baseline is seasonal-naive: each future value is the
value one season earlier (Hyndman & Athanasopoulos, "Forecasting: Principles and Practice", 5.2),
scored on the same windows and reported beside the model's metrics.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqarena.errors import ConfigError, UserError
from seqarena.tasks.base import Batch, DatasetTask, PoolHead, TaskConfig, register_task

# B batch, L length (seq_len), D model width, K horizon

SERIES = {"co2": 52, "sunspots": 11}  # name -> season length in steps
SPLIT_ENDS = {"train": 0.70, "val": 0.85, "test": 1.0}  # fraction of the series where each ends


def load_series(name: str) -> np.ndarray:
    from statsmodels.datasets import co2, sunspots

    if name == "co2":
        return co2.load_pandas().data["co2"].to_numpy(dtype=np.float64)
    return sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)


def read_csv_column(path: str, column: str) -> np.ndarray:
    """One numeric column of a CSV file; blanks and NA become NaN. UserError for anything else."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise UserError(f"CSV file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read CSV file {path}: {e}") from None
    if not rows:
        raise UserError(f"CSV file {path} is empty")
    header = [name.strip() for name in rows[0]]
    if not column or column not in header:
        what = f"has no column {column!r}" if column else "needs column=NAME"
        raise UserError(f"CSV file {path} {what}; its columns are: {', '.join(header)}")
    k = header.index(column)
    values = []
    for number, row in enumerate(rows[1:], start=2):
        cell = row[k].strip() if k < len(row) else ""
        try:
            values.append(math.nan if cell.lower() in ("", "na", "nan", "null") else float(cell))
        except ValueError:
            raise UserError(f"{path}:{number}: column {column!r} holds {cell!r}, not a number") \
                from None
    return np.array(values, dtype=np.float64)


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Missing values (NaN) by linear interpolation; the ends take the nearest known value."""
    known = ~np.isnan(values)
    return np.interp(np.arange(len(values)), np.flatnonzero(known), values[known])


@dataclass(frozen=True)
class ForecastConfig(TaskConfig):
    series: str = "co2"  # "co2" (weekly, ppm) or "sunspots" (yearly); ignored when csv is set
    csv: str = ""  # a CSV file to forecast instead of a bundled series
    column: str = ""  # the CSV column holding the series
    horizon: int = 4  # K, how many future values each window predicts
    season: int = 0  # steps per season for the seasonal-naive baseline; 0: co2 52, sunspots 11,
    # 1 (the last value) for a CSV

    zero_ok = ("season",)

    def validate(self) -> None:
        super().validate()
        if not self.csv and self.series not in SERIES:
            raise ConfigError(f"ForecastConfig.series must be one of {', '.join(SERIES)} (or give "
                              f"csv=FILE), got {self.series!r}")
        self.need_seq_len("forecast", self.season_length,
                          f"the seasonal-naive baseline looks back one season, {self.season_length}"
                          " steps")

    @property
    def season_length(self) -> int:
        return self.season or (1 if self.csv else SERIES[self.series])


@register_task("forecast")
class Forecast(DatasetTask):
    """Regress the next `horizon` values of a series from the seq_len values before them."""

    config_cls = ForecastConfig
    summary = "forecast the next values of CO2, sunspots or a CSV column (MAE, seasonal-naive)"
    metric_name = "mae"
    higher_is_better = False
    head_kind = "regress"

    def __init__(self, config: ForecastConfig):
        super().__init__(config)
        name = Path(config.csv).name if config.csv else config.series
        if config.csv:
            raw = read_csv_column(config.csv, config.column)
        else:
            raw = load_series(config.series)
        if np.isnan(raw).all():
            raise UserError(f"series {name} has no values")
        self.values = fill_gaps(raw)  # (N,) in the series' units
        N, L, K = len(self.values), config.seq_len, config.horizon
        self.bounds = {"train": (L, int(SPLIT_ENDS["train"] * N))}  # split -> first, end of targets
        self.bounds["val"] = (self.bounds["train"][1], int(SPLIT_ENDS["val"] * N))
        self.bounds["test"] = (self.bounds["val"][1], N)
        for split, (first, end) in self.bounds.items():
            if end - first < K:
                raise ConfigError(f"series {name} has {N} values: with seq_len={L} and horizon={K} "
                                  f"its {split} part holds no window; lower seq_len or horizon")
        train = self.values[:self.bounds["train"][1]]
        self.mean, self.std = float(train.mean()), float(train.std()) or 1.0

    def split_data(self, split: str) -> Batch:
        cache = self.__dict__.setdefault("_data", {})
        if split not in cache:
            L, K = self.config.seq_len, self.config.horizon
            first, end = self.bounds[split]
            t = np.arange(first, end - K + 1)  # (N_split,) index of each window's first target
            z = torch.from_numpy((self.values - self.mean) / self.std).float()
            x = z[torch.from_numpy(t[:, None] + np.arange(-L, 0))]  # (N_split, L)
            y = z[torch.from_numpy(t[:, None] + np.arange(K))]  # (N_split, K)
            cache[split] = Batch(x.unsqueeze(-1), y)  # x (N_split, L, 1)
        return cache[split]

    def make_embedding(self, d_model: int) -> nn.Module:
        return nn.Linear(1, d_model)

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        return PoolHead(d_model, self.config.horizon, causal)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.mse_loss(pred, batch.y)

    def seasonal_naive(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, 1) normalised inputs -> (B, K): each target is the value a whole number of
        seasons earlier, the most recent one inside the window."""
        m, K = self.config.season_length, self.config.horizon
        j = torch.arange(K)
        back = m * ((j + m) // m)  # m * ceil((j + 1) / m): the first multiple of m beyond j
        return x[:, -back + j, 0]  # position L + j - back, counted from the end

    def _errors(self, pred: torch.Tensor, batch: Batch,
                prefix: str) -> dict[str, tuple[float, float]]:
        err = (pred.float() - batch.y) * self.std  # in the series' units
        n = err.numel()
        return {f"{prefix}mae": (err.abs().sum().item(), n),
                f"{prefix}mse": ((err ** 2).sum().item(), n)}

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[float, float]]:
        return {**self._errors(model(batch), batch, ""),
                **self._errors(self.seasonal_naive(batch.x), batch, "seasonal_naive_")}

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        out = {}
        for prefix in ("", "seasonal_naive_"):
            out[f"{prefix}mae"] = metrics[f"{prefix}mae"]
            out[f"{prefix}rmse"] = math.sqrt(metrics.pop(f"{prefix}mse"))
        return out

    def baselines(self) -> dict[str, float]:
        """Seasonal-naive MAE and RMSE on the val windows (evaluate() reports them per split)."""
        batch = self.split_data("val")
        sums = self._errors(self.seasonal_naive(batch.x), batch, "seasonal_naive_")
        mae, mse = (total / count for total, count in sums.values())
        return {"seasonal_naive_mae": mae, "seasonal_naive_rmse": math.sqrt(mse)}
