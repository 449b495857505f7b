"""The task contract: registry, configs, heads, batches, wrap/loss/evaluate, the `tasks` command."""

import json
import math
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from test_tasks_backbones import TinyBiGRU, TinyGRU, TinySeq2Seq

from seqarena.cli import cli
from seqarena.errors import ConfigError, UserError
from seqarena.tasks import TASKS, Batch, make_task
from seqarena.tasks.base import pool
from seqarena.tasks.forecast import ForecastConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

ALL_TASKS = ["copy", "adding", "selective-copy", "mqar", "listops", "seed-demo-classify",
             "seed-demo-regress", "text-lm", "digits-seq", "forecast", "dates"]

# Small settings, so that every task trains a step and evaluates in well under a second.
SMALL = {
    "copy": {"seq_len": 30, "eval_size": 40},
    "adding": {"seq_len": 20, "eval_size": 40},
    "selective-copy": {"seq_len": 24, "copy_len": 4, "eval_size": 40},
    "mqar": {"seq_len": 24, "pairs": 4, "vocab": 32, "eval_size": 40},
    "listops": {"seq_len": 48, "eval_size": 40},
    "seed-demo-classify": {"train_size": 50, "eval_size": 40},
    "seed-demo-regress": {"train_size": 50, "eval_size": 40},
    "text-lm": {"seq_len": 32, "eval_size": 20},
    "digits-seq": {},
    "forecast": {"series": "sunspots", "seq_len": 16},
    "dates": {"eval_size": 40},
}


def test_every_task_is_registered_with_metric_head_and_version():
    assert set(ALL_TASKS) <= set(TASKS.names())  # tests elsewhere may register toy tasks
    for name in ALL_TASKS:
        cls = TASKS.get(name)
        assert cls.name == name and cls.summary
        assert isinstance(cls.metric_name, str) and isinstance(cls.higher_is_better, bool)
        assert cls.head_kind in {"classify", "tokens", "regress", "seq2seq"}
        assert isinstance(cls.version, int)


def test_unknown_task_is_one_line_and_status_2_through_the_cli():
    r = subprocess.run([sys.executable, "-m", "seqarena", "tasks", "copyy"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "unknown task 'copyy'" in r.stderr and "Did you mean 'copy'?" in r.stderr
    assert "Traceback" not in r.stderr


def test_tasks_command_lists_metric_head_and_parameter_defaults():
    result = CliRunner().invoke(cli, ["tasks", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(ALL_TASKS) <= set(rows)
    assert rows["copy"]["metric"] == "accuracy" and rows["copy"]["head"] == "tokens"
    assert rows["copy"]["params"]["delay"] == 0 and rows["mqar"]["params"]["pairs"] == 8
    assert rows["text-lm"]["higher_is_better"] is False
    table = CliRunner().invoke(cli, ["tasks"])
    assert table.exit_code == 0 and "selective-copy" in table.output and "pairs=8" in table.output


def test_make_task_rejects_an_unknown_parameter_naming_the_known_ones():
    with pytest.raises(ConfigError, match="no parameter 'delayy'.*delay"):
        make_task("copy", delayy=3)


def test_config_reads_numbers_given_as_strings_and_rejects_other_types():
    assert make_task("copy", seq_len="40", delay="20").config.delay == 20
    assert ForecastConfig(csv="sales.csv", column=2020).column == "2020"  # a column named 2020
    with pytest.raises(ConfigError, match="CopyConfig.delay must be int"):
        make_task("copy", delay="soon")
    with pytest.raises(ConfigError, match="must be positive"):
        make_task("mqar", pairs=0)
    with pytest.raises(ConfigError, match="seed must be >= 0"):
        make_task("copy", seed=-1)


@pytest.mark.parametrize("name, fields, minimum", [
    ("copy", {}, 21), ("adding", {}, 2), ("selective-copy", {}, 32), ("mqar", {}, 24),
    ("listops", {}, 4), ("digits-seq", {}, 64), ("forecast", {}, 52),
    ("forecast", {"series": "sunspots"}, 11), ("dates", {}, 39)])
def test_too_short_seq_len_is_a_config_error_naming_the_minimum(name, fields, minimum):
    with pytest.raises(ConfigError, match=f"seq_len >= {minimum} "):
        make_task(name, seq_len=minimum - 1, **fields)
    make_task(name, seq_len=minimum, **fields)


def test_pool_reads_the_last_real_position_when_causal_and_the_real_mean_otherwise():
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    lengths = [5, 2, 1]
    torch.testing.assert_close(pool(h, mask, causal=True),
                               torch.stack([h[i, n - 1] for i, n in enumerate(lengths)]))
    torch.testing.assert_close(pool(h, mask, causal=False),
                               torch.stack([h[i, :n].mean(0) for i, n in enumerate(lengths)]))
    torch.testing.assert_close(pool(h, None, causal=True), h[:, -1])


def test_classifier_on_a_causal_backbone_ignores_padding_after_the_sequence():
    torch.manual_seed(0)
    task = make_task("listops", seq_len=48, eval_size=8)
    model = task.wrap(TinyGRU(16)).eval()
    batch = next(task.batches("val", 4))
    n = int(batch.mask[0].sum())
    alone = Batch(batch.x[:1, :n], batch.y[:1], batch.mask[:1, :n])
    torch.testing.assert_close(model(batch)[:1], model(alone))


def test_wrap_refuses_backbones_the_task_cannot_use():
    with pytest.raises(ConfigError, match="needs a causal model"):
        make_task("text-lm", seq_len=32).wrap(TinyBiGRU(16))
    with pytest.raises(ConfigError, match="encoder-decoder"):
        make_task("copy").wrap(TinySeq2Seq(16))


@pytest.mark.parametrize("name", ALL_TASKS)
def test_tiny_model_trains_a_step_and_evaluates_to_finite_metrics(name):
    torch.manual_seed(0)
    task = make_task(name, **SMALL[name])
    model = task.wrap(TinyGRU(16))
    batch = next(task.batches("train", 8, seed=0))
    loss = task.loss(model(batch), batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    metrics = task.evaluate(model, "val", batch_size=16)
    assert model.training  # evaluate() restores the mode it found
    assert task.metric_name in metrics
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert all(math.isfinite(v) for v in task.baselines().values())
    info = task.describe()
    assert info["name"] == name and info["metric"] == task.metric_name and "params" in info


@pytest.mark.parametrize("name", ALL_TASKS)
def test_training_streams_are_seeded_and_held_out_splits_fixed(name):
    task = make_task(name, **SMALL[name])
    first = [next(task.batches("train", 8, seed=0)) for _ in range(2)]
    assert torch.equal(first[0].x, first[1].x)  # same seed, same stream
    stream = task.batches("train", 8, seed=0)
    a, b = next(stream), next(stream)
    assert not torch.equal(a.x, b.x)  # endless: the stream moves on
    other = next(task.batches("train", 8, seed=1))
    assert not torch.equal(a.x, other.x)  # another rank draws other data
    small = torch.cat([b.x for b in task.batches("val", 7)])
    large = torch.cat([b.x for b in make_task(name, **SMALL[name]).batches("val", 64)])
    assert torch.equal(small, large)  # held-out data does not depend on batch size or instance
    with pytest.raises(ValueError):
        task.evaluate(task.wrap(TinyGRU(16)), "train")


def test_user_errors_are_one_line():
    for make in (lambda: make_task("nosuch"), lambda: make_task("copy", seq_len=5),
                 lambda: make_task("forecast", series="tides")):
        with pytest.raises(UserError) as e:
            make()
        assert "\n" not in str(e.value)
