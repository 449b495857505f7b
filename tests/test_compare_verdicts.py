"""Intervals and verdicts: the bootstrap against an independent computation, the tie/winner logic
on hand-made rows, and the per-example scores every task's evaluation gives."""

import math

import numpy as np
import pytest
import torch

from seqarena.stats import example_interval, overlap, seeds_interval, spread, values_interval
from seqarena.tasks import make_task
from seqarena.tasks.base import ExampleScores, squared_error_sums, token_sums
from seqarena.experiment.verdict import Entry, clear_of_baseline, rank, verdicts


def scores(totals, counts=None, finish=lambda m: m):
    totals = np.asarray(totals, dtype=float)
    counts = np.ones_like(totals) if counts is None else np.asarray(counts, dtype=float)
    return ExampleScores({"m": totals}, {"m": counts}, finish)


def numpy_percentile_bootstrap(statistic, n, resamples=20000, seed=123):
    """The percentile bootstrap written out: resample indices, take the 2.5/97.5 percentiles."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(n, size=n)) for _ in range(resamples)]
    return np.percentile(values, 2.5), np.percentile(values, 97.5)


# --- intervals ----------------------------------------------------------------------------------

def test_bootstrap_interval_of_a_mean_matches_a_numpy_bootstrap_and_the_normal_theory():
    x = np.random.default_rng(0).normal(2.0, 1.5, size=400)
    low, high = example_interval(scores(x), "m")
    ref = numpy_percentile_bootstrap(lambda i: x[i].mean(), len(x))
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))  # the CLT interval, for a mean of 400
    assert low == pytest.approx(ref[0], abs=0.02) and high == pytest.approx(ref[1], abs=0.02)
    assert low == pytest.approx(x.mean() - half, abs=0.03)
    assert high == pytest.approx(x.mean() + half, abs=0.03)


def test_bootstrap_interval_of_a_ratio_metric_resamples_examples_not_tokens():
    # accuracy over tokens: examples carry different numbers of scored positions
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 9, size=300).astype(float)
    right = rng.binomial(counts.astype(int), 0.7).astype(float)
    low, high = example_interval(scores(right, counts), "m")
    ref = numpy_percentile_bootstrap(lambda i: right[i].sum() / counts[i].sum(), len(right))
    assert low == pytest.approx(ref[0], abs=0.006) and high == pytest.approx(ref[1], abs=0.006)
    assert low < right.sum() / counts.sum() < high


def test_bootstrap_applies_the_tasks_finish_to_each_resample():
    err2 = np.random.default_rng(2).exponential(1.0, size=300)  # squared errors
    rmse = scores(err2, finish=lambda m: {"m": math.sqrt(m["m"])})
    low, high = example_interval(rmse, "m")
    ref = numpy_percentile_bootstrap(lambda i: math.sqrt(err2[i].mean()), len(err2))
    assert low == pytest.approx(ref[0], abs=0.01) and high == pytest.approx(ref[1], abs=0.01)


def test_the_interval_is_fixed_by_its_seed_and_degenerate_samples_give_a_point():
    x = np.random.default_rng(3).random(100)
    assert example_interval(scores(x), "m") == example_interval(scores(x), "m")
    assert example_interval(scores(np.ones(50)), "m") == (1.0, 1.0)
    assert example_interval(scores([]), "m") is None


def test_the_seed_interval_holds_the_noise_of_seeds_as_well_as_of_examples():
    rng = np.random.default_rng(4)
    a, b = rng.normal(1.0, 0.5, 200), rng.normal(1.6, 0.5, 200)  # two seeds far apart
    low, high = seeds_interval([scores(a), scores(b)], "m")
    one = example_interval(scores(a), "m")
    assert low <= a.mean() and high >= b.mean()  # spans both seeds' means
    assert high - low > 3 * (one[1] - one[0])  # far wider than one seed's example interval
    assert values_interval([0.5, 0.5]) == (0.5, 0.5)
    assert spread([1, 2, 3, 4, 5]) == (2.0, 4.0)


def test_per_example_scores_add_up_to_the_whole_split_metric():
    logits = torch.randn(6, 5, 7)
    y = torch.randint(0, 7, (6, 5))
    y[0, :3] = -100
    sums = token_sums(logits, y)
    n = (y != -100).sum().item()
    whole = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), y.reshape(-1),
                                              ignore_index=-100, reduction="sum").item()
    assert sums["cross_entropy"][0].sum().item() == pytest.approx(whole, rel=1e-6)
    assert sums["accuracy"][1].tolist() == [2, 5, 5, 5, 5, 5]
    assert sums["accuracy"][1].sum().item() == n
    mse = squared_error_sums(torch.ones(4), torch.zeros(4))["mse"]
    assert mse[0].tolist() == [1.0] * 4 and mse[1].tolist() == [1.0] * 4


def test_evaluate_examples_agrees_with_evaluate_on_a_real_task():
    torch.manual_seed(0)
    task = make_task("adding", seq_len=12, eval_size=40)
    from seqarena.models import build_model

    model = task.wrap(build_model("gru", d_model=8, layers=1))
    found = task.evaluate_examples(model, "val", batch_size=16)
    assert len(found) == 40
    assert found.metrics()["mse"] == pytest.approx(task.evaluate(model, "val", 16)["mse"], rel=1e-6)


# --- winner or tie ------------------------------------------------------------------------------

def test_overlapping_intervals_are_a_tie_and_separated_ones_name_a_winner():
    tie = [Entry("gru", 0.20, (0.18, 0.22)), Entry("transformer", 0.21, (0.19, 0.23)),
           Entry("rnn", 0.50, (0.45, 0.55))]
    assert rank(tie, higher_is_better=False) == (None, ("gru", "transformer"))
    apart = [Entry("gru", 0.20, (0.18, 0.22)), Entry("transformer", 0.30, (0.27, 0.33))]
    assert rank(apart, higher_is_better=False) == ("gru", ())
    assert rank(apart, higher_is_better=True) == ("transformer", ())
    assert overlap((0, 1), (1, 2)) and not overlap((0, 1), (1.1, 2))
    unknown = [Entry("gru", 0.2, None), Entry("lstm", 0.9, (0.8, 1.0))]
    assert rank(unknown, higher_is_better=False)[0] is None  # unknown noise never wins


def row(model, L, metric, ci, speed=1000.0, speed_spread=(900.0, 1100.0), at_time=None,
        baselines=None):
    return {"model": model, "seq_len": L, "metric_name": "accuracy", "higher_is_better": True,
            "metric": metric, "metric_ci": ci, "train_tokens_per_s": speed,
            "train_tokens_per_s_spread": speed_spread, "equal_time_s": 10.0,
            "metric_at_time": at_time if at_time is not None else metric,
            "metric_at_time_ci": ci, "baselines": baselines or {"chance_accuracy": 0.1}}


def test_verdict_lines_per_length_say_winner_tie_and_fastest():
    rows = [row("gru", 50, 0.90, [0.88, 0.92], speed=5000, speed_spread=[4800, 5200]),
            row("transformer", 50, 0.70, [0.67, 0.73], speed=9000, speed_spread=[8800, 9100]),
            row("gru", 200, 0.80, [0.75, 0.85]), row("transformer", 200, 0.82, [0.78, 0.86])]
    lines = [v.text for v in verdicts(rows, knob="--steps (now 400)")]
    assert lines[0].startswith("L=50, best at equal steps: gru, test accuracy 0.9 [0.88, 0.92]")
    assert lines[1].startswith("L=50, best at equal training time (10.0 s): gru")
    assert lines[2].startswith("L=50, fastest to train: transformer")
    assert lines[3].startswith("L=200, best at equal steps: tie: transformer, gru (within noise")
    assert not any("baseline" in line for line in lines)


def test_nobody_past_the_baseline_by_a_clear_margin_says_so_and_names_the_knob():
    base = {"context_guess_accuracy": 0.125, "chance_accuracy": 0.008}
    rows = [row("gru", 50, 0.14, [0.13, 0.15], baselines=base),
            row("transformer", 50, 0.13, [0.12, 0.14], baselines=base)]
    lines = [v.text for v in verdicts(rows, knob="--steps (now 400)")]
    assert lines[-1] == ("L=50: no model beats the baseline (context_guess_accuracy 0.125) by a "
                         "clear margin (10%); the task is not learned at this budget: raise "
                         "--steps (now 400)")
    assert clear_of_baseline(Entry("x", 0.5, (0.45, 0.55)), 0.125, higher_is_better=True)
    assert not clear_of_baseline(Entry("x", 0.16, (0.13, 0.19)), 0.125, higher_is_better=True)
    assert clear_of_baseline(Entry("x", 0.01, (0.009, 0.011)), 1 / 6, higher_is_better=False)
