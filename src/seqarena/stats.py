"""Intervals: 95 % bootstrap intervals over held-out examples (and seeds), and spreads.

Every metric a comparison reports carries one of these, so a verdict can tell a gap from noise.
The resampling seed is fixed: the same scores always give the same interval.

- One run: the percentile bootstrap over the test examples (scipy.stats.bootstrap), each resample
  scored as the task scores a split (the ratio of summed totals and counts, then finish()).
- Several seeds: a two-level bootstrap, seeds first and then the examples of each drawn seed, of
  the mean over seeds; it holds both the seed-to-seed and the test-sampling noise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from seqarena.tasks.base import ExampleScores

LEVEL = 0.95  # the confidence level of every interval
RESAMPLES = 2000  # bootstrap resamples: the ends move by well under a tenth of the width
SEED = 0  # the resampling seed, fixed so that the same scores give the same interval


def example_interval(scores: ExampleScores, metric: str, resamples: int = RESAMPLES,
                     seed: int = SEED) -> tuple[float, float] | None:
    """The 95 % percentile-bootstrap interval of `metric` over the examples; None when it cannot
    be formed (no examples, or a non-finite metric)."""
    from scipy import stats

    n = len(scores)
    if n == 0 or not math.isfinite(scores.metrics()[metric]):
        return None
    if n == 1:
        value = scores.metrics()[metric]
        return value, value

    def statistic(index: np.ndarray) -> float:
        return scores.metrics(index.astype(np.int64))[metric]

    res = stats.bootstrap((np.arange(n),), statistic, n_resamples=resamples, vectorized=False,
                          confidence_level=LEVEL, method="percentile",
                          rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):  # every resample equal: no spread
        value = scores.metrics()[metric]
        return value, value
    return low, high


def seeds_interval(runs: Sequence[ExampleScores], metric: str, resamples: int = RESAMPLES,
                   seed: int = SEED) -> tuple[float, float] | None:
    """The 95 % two-level bootstrap interval of the mean over seeds of `metric`: draw the seeds
    with replacement, then each drawn seed's examples with replacement."""
    if len(runs) == 1:
        return example_interval(runs[0], metric, resamples, seed)
    if not runs or any(len(r) == 0 or not math.isfinite(r.metrics()[metric]) for r in runs):
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for b in range(resamples):
        picked = rng.integers(len(runs), size=len(runs))
        means[b] = np.mean([runs[i].metrics(rng.integers(len(runs[i]), size=len(runs[i])))[metric]
                            for i in picked])
    alpha = (1 - LEVEL) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def values_interval(values: Sequence[float], resamples: int = RESAMPLES,
                    seed: int = SEED) -> tuple[float, float] | None:
    """The 95 % percentile-bootstrap interval of the mean of plain values (e.g. one value per
    seed read off a curve); a single value is its own interval."""
    from scipy import stats

    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    if len(set(values)) == 1:
        return values[0], values[0]
    res = stats.bootstrap((np.asarray(values),), np.mean, n_resamples=resamples,
                          confidence_level=LEVEL, method="percentile",
                          rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def spread(values: Sequence[float]) -> tuple[float, float] | None:
    """(25th, 75th percentile): the spread quoted beside a median throughput."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    return float(np.percentile(values, 25)), float(np.percentile(values, 75))


def overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """Whether two intervals share a point; a missing interval overlaps everything (unknown
    noise never names a winner)."""
    if a is None or b is None:
        return True
    return a[0] <= b[1] and b[0] <= a[1]
