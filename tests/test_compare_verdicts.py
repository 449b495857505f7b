"""Intervals and verdicts: the bootstrap against an independent computation, the tie/winner logic
on hand-made rows, and the per-example scores every task's evaluation gives."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from seqarena.stats import example_interval, overlap, seeds_interval, spread, values_interval
from seqarena.tasks import make_task
from seqarena.tasks.base import ExampleScores, squared_error_sums, token_sums
from seqarena.experiment.summary import TaskInfo, summarize
from seqarena.experiment.verdict import Entry, clear_of_baseline, paired_corpus
from seqarena.results import RunResult


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


# --- winner or tie: the summary's paired verdicts, on hand-made runs ----------------------------

def sums(values):
    values = np.asarray(values, dtype=float)
    return {"totals": {"mse": values.tolist()}, "counts": {"mse": np.ones_like(values).tolist()}}


def run(model, L, test_values, seed=0, val=(), rates=(1000.0, 1000.0, 1000.0), status="ok"):
    """A finished RunResult whose test split scored `test_values` (squared errors, one per
    example); `val` lists (train_s, per-example val values) at each evaluation."""
    history = [{"step": 10 * (i + 1), "tokens_per_s": r, "train_s": 1.0 * (i + 1)}
               for i, r in enumerate(rates)]
    history += [{"step": 100 + i, "train_s": t, "val_mse": float(np.mean(v)),
                 "val_mse_ci": [float(np.mean(v)) - 0.01, float(np.mean(v)) + 0.01]}
                for i, (t, v) in enumerate(val)]
    done = status == "ok"
    return RunResult(model=model, task="adding", seq_len=L, params=100, metric_name="mse",
                     metric=float(np.mean(test_values)) if done else None,
                     higher_is_better=False, train_tokens_per_s=1000.0, peak_mem_bytes=0,
                     wall_s=1.0, steps=100 if done else 3, seed=seed, status=status,
                     train_s=max([t for t, _ in val], default=3.0) if done else 0.0,
                     metric_ci=example_interval(scores(test_values), "m") if done else None,
                     history=history if done else [], examples=sums(test_values) if done else None,
                     eval_examples=[{"step": 100 + i, "train_s": t, **sums(v)}
                                    for i, (t, v) in enumerate(val)] if done else [],
                     stopped="" if done else "RuntimeError: CUDA out of memory")


ADDING = TaskInfo("adding", "mse", False, {"predict_one_mse": 1 / 6}, finish=lambda m: m)


def texts(results, task=ADDING):
    return [d["text"] for d in summarize(results, task, "--steps (now 400)").verdicts]


def test_overlapping_intervals_whose_paired_difference_excludes_zero_name_a_winner():
    noise = np.random.default_rng(0).exponential(1.0, size=400)  # shared by both models
    a, b = run("gru", 50, noise * 0.1), run("lstm", 50, noise * 0.1 + 0.004)
    assert overlap(a.metric_ci, b.metric_ci)  # side by side, the intervals cannot tell them apart
    summary = summarize([a, b], ADDING, "--steps (now 400)")
    steps = summary.verdicts[0]
    assert steps["winner"] == "gru" and steps["tied"] == []
    (test,) = steps["tests"]
    assert (test["a"], test["b"]) == ("gru", "lstm") and test["diff"] == pytest.approx(-0.004)
    assert test["interval"][1] < 0 and test["p_holm"] < 0.05 and test["separated"]


def test_two_copies_of_one_model_are_a_tie():
    values = np.random.default_rng(1).exponential(0.1, size=300)
    lines = texts([run("gru", 50, values), run("gru-copy", 50, values)])
    assert lines[0].startswith("L=50, best at equal steps: tie: gru, gru-copy (not separated; ")


def test_the_equal_time_winner_can_differ_from_the_equal_steps_winner_every_line_said():
    rng = np.random.default_rng(2)
    noise = rng.exponential(0.01, size=200)
    # gru ends better after its steps; the transformer was better by T = 2 s, gru's training time
    gru = run("gru", 50, noise, val=[(1.0, noise + 0.1), (2.0, noise + 0.05)],
              rates=(900.0, 1000.0, 1100.0))
    tf = run("transformer", 50, noise + 0.02, val=[(1.0, noise + 0.03), (2.0, noise + 0.02),
                                                  (3.0, noise + 0.02)],
             rates=(4000.0, 5000.0, 6000.0))
    lines = texts([gru, tf])
    assert lines == [
        "L=50, best at equal steps: gru, test mse 0.009885 [0.008636, 0.01124]; runner-up "
        "transformer 0.02988 [0.02864, 0.03124] (paired bootstrap, Holm-corrected)",
        "L=50, best at equal training time (2.0 s): transformer, val mse 0.02988 [0.01988, "
        "0.03988]; runner-up gru 0.05988 [0.04988, 0.06988] (paired bootstrap on the validation "
        "examples, Holm-corrected)",
        "L=50, fastest to train: transformer, train tokens/s [25-75 %] 5500 [5250, 5750]; "
        "runner-up gru 1050 [1025, 1075]",
    ]


def test_a_failed_run_changes_nothing_about_the_others():
    rng = np.random.default_rng(3)
    ok = [run("lstm", 32, rng.exponential(0.16, 256)), run("gru", 32, rng.exponential(0.16, 256))]
    failed = run("oomer", 32, [], status="oom")
    alone, with_failed = (summarize(rs, ADDING, "--steps (now 60)") for rs in (ok, [failed] + ok))
    assert with_failed.verdicts == alone.verdicts
    assert (with_failed.metric_name, with_failed.higher_is_better) == ("mse", False)
    assert alone.verdicts[-1]["question"] == "baseline"  # both sit at the 1/6 baseline
    assert [(f.model, f.status, f.why) for f in with_failed.failed] == \
        [("oomer", "oom", "RuntimeError: CUDA out of memory")]


def test_nobody_past_the_baseline_by_a_clear_margin_says_so_and_names_the_knob():
    values = np.random.default_rng(4).exponential(0.16, 300)
    lines = texts([run("gru", 50, values), run("transformer", 50, values * 1.01)])
    assert lines[-1] == ("L=50: no model beats the baseline (predict_one_mse 0.1667) by a "
                         "clear margin (10%); the task is not learned at this budget: raise "
                         "--steps (now 400)")
    assert clear_of_baseline(Entry("x", 0.5, (0.45, 0.55)), 0.125, higher_is_better=True)
    assert not clear_of_baseline(Entry("x", 0.16, (0.13, 0.19)), 0.125, higher_is_better=True)
    assert clear_of_baseline(Entry("x", 0.01, (0.009, 0.011)), 1 / 6, higher_is_better=False)


def test_several_seeds_pair_by_seed_and_say_so():
    rng = np.random.default_rng(5)
    base = [rng.exponential(0.05, 200) for _ in range(3)]
    results = [run("gru", 50, b, seed=s) for s, b in enumerate(base)] + \
        [run("lstm", 50, b + 0.01, seed=s) for s, b in enumerate(base)]
    summary = summarize(results, ADDING, "--steps (now 400)")
    assert summary.coverage.startswith("intervals and paired tests cover 3 seeds (0, 1, 2; "
                                       "paired by seed) and the test sample (200 examples)")
    assert summary.verdicts[0]["winner"] == "gru"
    assert summary.verdicts[0]["tests"][0]["diff"] == pytest.approx(-0.01)


# --- corpus metrics: sacrebleu's own paired bootstrap ------------------------------------------

def numbers():
    lines = Path(__file__).parents[1].joinpath("docs/examples/numbers.tsv").read_text().splitlines()
    return [line.split("\t")[1] for line in lines[:300]]


def test_the_corpus_test_is_sacrebleus_paired_bootstrap():
    from sacrebleu.metrics import CHRF
    from sacrebleu.significance import PairedTest

    refs = numbers()
    good = list(refs)
    bad = [r[:-2] if i % 3 == 0 else r for i, r in enumerate(refs)]
    found = paired_corpus([good], [bad], [refs], "chrf", ("good", "bad"))
    _, direct = PairedTest([("bad", bad), ("good", good)], {"chrf": CHRF()}, [refs],
                           test_type="bs", n_samples=1000)()
    base, other = direct["chrF2"]
    assert found.diff == pytest.approx(other.score - base.score)
    assert found.p == pytest.approx(other.p_value)
    assert found.p < 0.01


def test_translate_runs_name_the_clearly_better_system_and_tie_two_copies():
    refs = numbers()
    bad = [r[:-2] if i % 3 == 0 else r for i, r in enumerate(refs)]
    task = TaskInfo("translate", "chrf", True, {}, corpus=True)

    def system(model, outputs):
        return dataclasses.replace(run(model, 32, [0.0]), metric_name="chrf",
                                   higher_is_better=True, outputs=outputs, references=refs,
                                   metric=100.0 if outputs == refs else 90.0, metric_ci=None)

    clear = summarize([system("transformer-ed", list(refs)), system("rnn-ed", bad)], task, "x")
    assert clear.verdicts[0]["winner"] == "transformer-ed"
    assert "(sacrebleu paired bootstrap, Holm-corrected)" in clear.verdicts[0]["text"]
    same = summarize([system("rnn-ed", bad), system("rnn-ed-copy", list(bad))], task, "x")
    assert same.verdicts[0]["winner"] is None and same.verdicts[0]["tied"] == ["rnn-ed",
                                                                             "rnn-ed-copy"]
