"""`compare`: parameter matching, the runs it makes, what it writes and aggregates."""

import statistics
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from seqarena.experiment.compare import (CompareConfig, closest, compare, compare_config_from, count,
                              size_models)
from seqarena.experiment.summary import table_rows
from seqarena.report import write_report
from test_train_cli import assert_verdicts_follow_their_tests
from seqarena.errors import ConfigError, UserError
from seqarena.models import MODELS, Backbone, ModelConfig, register_model
from seqarena.results import read_results
from seqarena.tasks import make_task
from seqarena.config import TrainConfig
from test_train import toy_config  # noqa: F401  (registers toy-mean and toy-gru)


@dataclass(frozen=True)
class ToyFFConfig(ModelConfig):
    d_model: int = 8  # width
    d_ff: int = 64  # hidden width of the position-wise MLP


class ToyFF(Backbone):
    """A causal stand-in for a Transformer: a running mean, then a position-wise MLP."""

    family = "attention"
    causal = True

    def __init__(self, config):
        super().__init__(config)
        self.ff = nn.Sequential(nn.Linear(config.d_model, config.d_ff), nn.GELU(),
                                nn.Linear(config.d_ff, config.d_model))

    def forward(self, x, mask=None):
        steps = torch.arange(1, x.shape[1] + 1, dtype=x.dtype).view(1, -1, 1)
        return self.ff(x.cumsum(1) / steps)


if "toy-ff" not in MODELS:
    register_model("toy-ff", ToyFFConfig, "a causal MLP for compare's tests", "O(L)", "O(1)")(ToyFF)


def test_closest_finds_the_value_nearest_the_target_like_a_brute_force_scan():
    for target in (1, 7, 50, 333, 10_000, 123_457):
        f = lambda v: 3 * v * v + 5 * v  # noqa: E731  (non-decreasing, like a parameter count)
        brute = min(range(1, 1000), key=lambda v: (abs(f(v) - target), v))
        assert abs(f(closest(f, target)) - target) == abs(f(brute) - target)


def test_models_are_sized_to_within_ten_percent_of_the_largest_models_count():
    task = make_task("toy-mean", seq_len=8)
    target, sizes = size_models(("toy-gru", "toy-ff"), task, d_model=16, layers=1, target=0)
    assert target == max(count(task, "toy-gru", 16, 1), count(task, "toy-ff", 16, 1))
    assert target == count(task, "toy-ff", 16, 1)  # its 64 hidden units outweigh the GRU
    gru, ff = sizes
    assert gru.d_model > 16 and gru.model_args == {}  # the GRU grows wider to match
    assert abs(gru.params / target - 1) < 0.10
    assert gru.params == count(task, "toy-gru", gru.d_model, 1)
    assert ff.d_model == 16 and ff.model_args == {"d_ff": 64} and ff.params == target


def test_an_explicit_parameter_target_sizes_every_model():
    task = make_task("toy-mean", seq_len=8)
    target, sizes = size_models(("toy-gru", "toy-ff"), task, d_model=8, layers=1, target=3000)
    assert target == 3000
    assert all(abs(s.params / 3000 - 1) < 0.10 for s in sizes)


def test_compare_trains_every_model_length_and_seed_and_writes_a_summary(tmp_path):
    lines = []
    cfg = CompareConfig(models=("toy-gru", "toy-ff"), seq_lens=(4, 8), seeds=(0, 1),
                        out=str(tmp_path / "cmp"), lr_auto=False,
                        train=toy_config(tmp_path, steps=6, eval_every=3, checkpoint_every=0))
    outcome = compare(cfg, echo=lines.append)

    doc = read_results(tmp_path / "cmp" / "summary.json")
    assert doc["kind"] == "compare"
    runs = {(r.model, r.seq_len, r.seed) for r in doc["results"]}
    assert runs == {(m, L, s) for m in ("toy-gru", "toy-ff") for L in (4, 8) for s in (0, 1)}
    for r in doc["results"]:
        assert (tmp_path / "cmp" / f"{r.model}-L{r.seq_len}-s{r.seed}" / "summary.json").exists()
        assert r.steps == 6 and r.status == "ok" and r.metric is not None
    summary = doc["summary"]
    assert summary["held_equal"]["steps"] == 6 and summary["held_equal"]["seeds"] == [0, 1]
    ff = next(s for s in summary["sizes"] if s["model"] == "toy-ff")
    assert ff["model_args"] == {"d_ff": 64}  # the larger model sets the target and keeps its size
    assert summary["held_equal"]["params_target"] == ff["params"]

    row = next(r for r in outcome.summary.rows if (r.model, r.seq_len) == ("toy-ff", 8))
    metrics = [r.metric for r in doc["results"] if (r.model, r.seq_len) == ("toy-ff", 8)]
    assert row.metric == pytest.approx(statistics.fmean(metrics))
    assert lines[0].startswith("held equal: task toy-mean, 6 steps, batch 16")
    assert any("toy-ff" in line and "d_ff=" in line for line in lines)

    shown, columns, headers = table_rows(outcome.summary)
    assert headers[4] == "mse [95 % interval] (lower is better; * named best)"
    assert len(row.metric_ci) == 2 and row.metric_ci[0] <= row.metric <= row.metric_ci[1]
    assert " [" in shown[0]["metric"] and shown[0]["lr"] == "0.01"
    assert outcome.summary.coverage.startswith("intervals and paired tests cover 2 seeds (0, 1;")
    assert_verdicts_follow_their_tests(outcome.summary)
    assert [v["text"] for v in summary["verdicts"]] == outcome.verdicts
    write_report([tmp_path / "cmp"], tmp_path / "cmp" / "report.html")
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert page.index('id="verdicts"') < page.index('id="summary"')  # the answer comes first
    assert "L=8, fastest to train: " in page
    assert "training seconds (evaluation excluded)" in page  # curves against seconds too


def test_a_second_compare_into_the_same_directory_is_refused(tmp_path):
    cfg = CompareConfig(models=("toy-gru",), seq_lens=(4,), out=str(tmp_path / "cmp"),
                        lr_auto=False, train=toy_config(tmp_path, steps=2, eval_every=0))
    compare(cfg)
    with pytest.raises(UserError, match="already holds a comparison"):
        compare(cfg)


def test_compare_config_routes_training_keys_and_refuses_per_run_keys():
    cfg = compare_config_from({"models": ["lstm", "gru"], "seq_lens": [10], "steps": 30,
                               "task_args": {"pairs": 4}}, {"lr": 0.01})
    assert cfg.models == ("lstm", "gru") and cfg.seq_lens == (10,)
    assert (cfg.train.steps, cfg.train.lr, cfg.train.task_args) == (30, 0.01, {"pairs": 4})
    assert not cfg.lr_auto  # a number keeps one rate for every model
    assert compare_config_from().lr_auto and compare_config_from({"lr": "auto"}).lr_auto
    with pytest.raises(ConfigError, match="'seq_len' varies across a comparison; set 'seq_lens'"):
        compare_config_from({"seq_len": 10})
    with pytest.raises(ConfigError, match="unknown key 'modles'"):
        compare_config_from({"modles": ["lstm"]})
    with pytest.raises(ConfigError, match="seeds lists a value twice"):
        CompareConfig(seeds=(1, 1), train=TrainConfig())


def test_the_budget_is_steps_or_seconds_and_giving_one_drops_the_default_of_the_other():
    default = compare_config_from().train
    assert default.steps > 0 and default.budget_seconds == 0  # steps only: no wall-clock cap
    by_steps = compare_config_from({"steps": 50}).train
    assert (by_steps.steps, by_steps.budget_seconds) == (50, 0.0)
    by_time = compare_config_from({"budget_seconds": 20.0}).train
    assert by_time.budget_seconds == 20.0 and by_time.steps >= 10**9
    both = compare_config_from({"steps": 50}, {"budget_seconds": 20.0}).train
    assert (both.steps, both.budget_seconds) == (50, 20.0)
