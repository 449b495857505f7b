"""The trainer: configs, schedule, exact resume, the NaN guard, run directories.

A toy task and a toy backbone, registered here, keep these tests independent of the real zoo
and fast: a small GRU learns the mean of a short real-valued sequence.
"""

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from seqarena.errors import ConfigError, UserError
from seqarena.models import MODELS, Backbone, ModelConfig, register_model
from seqarena.results import read_results
from seqarena.tasks import TASKS, Batch, Task, TaskConfig, register_task
from seqarena.config import TrainConfig, config_from, read_toml
from seqarena.training.train import lr_factor, train

torch.set_num_threads(1)


@dataclass(frozen=True)
class ToyTaskConfig(TaskConfig):
    seq_len: int = 8  # input length L
    eval_size: int = 64  # examples in each held-out split
    nan_at_step: int = 0  # >0: the training loss of this step is NaN (tests the guard)

    zero_ok: ClassVar[tuple[str, ...]] = ("nan_at_step",)


class ToyMean(Task):
    """Regress the mean of L standard-normal numbers."""

    metric_name: ClassVar[str] = "mse"
    higher_is_better: ClassVar[bool] = False
    head_kind: ClassVar[str] = "regress"
    config_cls = ToyTaskConfig

    def __init__(self, config):
        super().__init__(config)
        self.train_losses = 0  # loss() calls in training mode, for nan_at_step

    def wrap(self, backbone, d_model=None):
        return ToyModel(backbone, backbone.d_model)

    def sample(self, n, g):
        x = torch.randn(n, self.config.seq_len, 1, generator=g)
        return Batch(x, x.mean(dim=(1, 2)))

    def batches(self, split, batch_size, seed=0):
        if split == "train":
            g = torch.Generator().manual_seed(self.config.seed * 1000 + seed)
            return (self.sample(batch_size, g) for _ in iter(int, 1))
        g = torch.Generator().manual_seed(10_000 + self.config.seed * 10 + ["val", "test"].index(split))
        data = self.sample(self.config.eval_size, g)
        return (Batch(data.x[i:i + batch_size], data.y[i:i + batch_size])
                for i in range(0, len(data.y), batch_size))

    def loss(self, pred, batch):
        loss = nn.functional.mse_loss(pred, batch.y)
        if torch.is_grad_enabled():
            self.train_losses += 1
            if self.train_losses == self.config.nan_at_step:
                return loss * math.nan
        return loss

    def evaluate(self, model, split="val", batch_size=64):
        errors = [((model(b) - b.y) ** 2).sum() for b in self.batches(split, batch_size)]
        return {"mse": float(sum(errors)) / self.config.eval_size}

    def baselines(self):
        return {"zero_mse": 1.0 / self.config.seq_len}


class ToyModel(nn.Module):
    def __init__(self, backbone, d_model):
        super().__init__()
        self.embedding, self.backbone, self.head = nn.Linear(1, d_model), backbone, nn.Linear(d_model, 1)

    def forward(self, batch):
        return self.head(self.backbone(self.embedding(batch.x))[:, -1]).squeeze(-1)


@dataclass(frozen=True)
class ToyGRUConfig(ModelConfig):
    d_model: int = 8  # hidden size
    bias: bool = True  # biases in the GRU (an extra field for --model-arg)


class ToyGRU(Backbone):
    family = "recurrent"
    causal = True

    def __init__(self, config):
        super().__init__(config)
        self.gru = nn.GRU(config.d_model, config.d_model, config.layers, batch_first=True,
                          bias=config.bias, dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, mask=None):
        return self.drop(self.gru(x)[0])


if "toy-mean" not in TASKS:
    register_task("toy-mean")(ToyMean)
if "toy-gru" not in MODELS:
    register_model("toy-gru", ToyGRUConfig, "a GRU for the trainer's tests", "O(L)", "O(1)")(ToyGRU)


def toy_config(tmp_path, **fields):
    base = dict(model="toy-gru", task="toy-mean", seq_len=8, steps=20, batch_size=16, d_model=8,
                lr=1e-2, eval_every=10, log_every=1, checkpoint_every=10, out=str(tmp_path),
                name="toy", device="cpu", threads=1)
    return TrainConfig(**{**base, **fields})


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, words", [
    ("steps", 0, "steps must be positive"),
    ("lr", -1.0, "lr must be positive"),
    ("clip", -0.5, "clip must not be negative"),
    ("warmup", 1.5, "warmup is a fraction"),
    ("dropout", 1.0, "dropout must be in [0, 1)"),
    ("batch_size", "32", "batch_size must be of type int"),
    ("device", "gpu", "device must be auto, cpu"),
    ("name", "../escape", "name must be a plain directory name"),
    ("task_args", {"seq_len": 3}, "task_args may not set 'seq_len'"),
])
def test_config_validation_names_the_field(field, value, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        TrainConfig(**{field: value})


def test_toml_values_are_overridden_by_flags_and_unknown_keys_are_refused(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('model = "gru"\nsteps = 50\nlr = 0.01\n[task_args]\nn_pairs = 4\nk = 1\n')
    cfg = config_from(read_toml(toml), {"steps": 7, "task_args": {"k": 2}})
    assert (cfg.model, cfg.steps, cfg.lr) == ("gru", 7, 0.01)
    assert cfg.task_args == {"n_pairs": 4, "k": 2}
    with pytest.raises(ConfigError, match="unknown key 'stpes'"):
        config_from({"stpes": 3})


def test_malformed_toml_is_one_line_user_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = = 3\n")
    with pytest.raises(UserError, match="not valid TOML") as e:
        read_toml(bad)
    assert "\n" not in str(e.value)


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine_to_min_lr():
    assert lr_factor(0.05, warmup=0.1, min_lr=0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, warmup=0.1, min_lr=0.1) == pytest.approx(1.0)
    assert lr_factor(0.55, warmup=0.1, min_lr=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(1.0, warmup=0.1, min_lr=0.1) == pytest.approx(0.1)
    assert lr_factor(0.5, warmup=0.0, min_lr=0.0) == pytest.approx(0.5)


# --- training -------------------------------------------------------------------------------

def test_training_writes_the_run_directory_and_learns(tmp_path):
    out = train(toy_config(tmp_path, steps=60))
    run = tmp_path / "toy"
    assert out.run_dir == run
    assert json.loads((run / "config.json").read_text())["model"] == "toy-gru"
    rows = read_metrics(run)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 61))
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "wall_s"):
        assert all(math.isfinite(r[key]) for r in rows if "loss" in r), key
    assert [r["step"] for r in rows if "val_mse" in r] == [10, 20, 30, 40, 50, 60]
    assert "test_mse" in rows[-1]
    r = read_results(run / "summary.json")["results"][0]
    assert (r.model, r.task, r.seq_len, r.steps, r.seed, r.status) == ("toy-gru", "toy-mean", 8, 60, 0, "ok")
    assert r.metric_name == "mse" and r.higher_is_better is False
    assert r.metric == pytest.approx(rows[-1]["test_mse"])
    assert r.metric < 1.0 / 8  # better than predicting 0, the baseline
    assert r.params == sum(p.numel() for p in out.model.parameters())
    assert r.train_tokens_per_s > 0 and r.wall_s > 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-00000050.safetensors", "step-00000050.state.pt",
        "step-00000060.safetensors", "step-00000060.state.pt"]


def test_same_seed_gives_bitwise_same_losses_and_another_seed_does_not(tmp_path):
    losses = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train(toy_config(tmp_path, name=name, seed=seed, steps=10))
        losses.append([r["loss"] for r in read_metrics(tmp_path / name) if "loss" in r])
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


def test_the_trainer_clips_every_step_at_its_configured_norm(tmp_path, monkeypatch):
    """Each step's gradients leave the trainer's clipping call with a norm of at most clip, and
    clip 0 turns clipping off; the logged grad_norm is the norm before clipping."""
    seen = []
    clip = nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        before = clip(params, math.inf)
        clip(params, max_norm)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        seen.append((max_norm, before.item(), after.item()))
        return before

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", spy)
    result = train(toy_config(tmp_path, name="c", steps=6, clip=1e-3, log_every=1)).result
    assert [m for m, _, _ in seen] == [1e-3] * 6
    assert all(before > 1e-3 and after == pytest.approx(1e-3, rel=1e-4) for _, before, after in seen)
    assert [h["grad_norm"] for h in result.history if "grad_norm" in h] == \
        pytest.approx([before for _, before, _ in seen])
    seen.clear()
    train(toy_config(tmp_path, name="off", steps=2, clip=0.0))
    assert [m for m, _, _ in seen] == [math.inf] * 2
    assert all(after == pytest.approx(before) for _, before, after in seen)


def test_clip_is_applied_during_training(tmp_path, monkeypatch):
    seen = []
    real = nn.utils.clip_grad_norm_
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", lambda ps, c: seen.append(c) or real(ps, c))
    train(toy_config(tmp_path, name="c1", steps=2, clip=0.25))
    train(toy_config(tmp_path, name="c0", steps=2, clip=0.0))
    assert seen == [0.25, 0.25, math.inf, math.inf]


def kill_training_at_batch(monkeypatch, task_cls, n):
    """Make the training stream of task_cls raise KeyboardInterrupt when batch n is drawn."""
    real = task_cls.batches

    def dying(self, split, batch_size, seed=0):
        stream = real(self, split, batch_size, seed)
        if split != "train":
            return stream
        return (b if i < n - 1 else (_ for _ in ()).throw(KeyboardInterrupt())
                for i, b in enumerate(stream))

    monkeypatch.setattr(task_cls, "batches", dying)


def logged(run_dir):
    return [(r["step"], r["loss"], r["lr"], r["grad_norm"], r.get("val_mse"))
            for r in read_metrics(run_dir) if "loss" in r]


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, monkeypatch):
    """A run killed at step 13 (after its checkpoint at 10) and resumed logs the same losses at
    every step as a run that was never stopped, dropout included."""
    cfg = dict(steps=30, dropout=0.2, layers=2, eval_every=5)
    train(toy_config(tmp_path, name="straight", **cfg))
    kill_training_at_batch(monkeypatch, ToyMean, 14)
    with pytest.raises(KeyboardInterrupt):
        train(toy_config(tmp_path, name="stopped", **cfg))
    assert max(r["step"] for r in read_metrics(tmp_path / "stopped")) == 13
    monkeypatch.undo()
    train(toy_config(tmp_path, name="stopped", **cfg), resume=True)
    resumed = logged(tmp_path / "stopped")
    assert [step for step, *_ in resumed] == list(range(1, 31))
    assert resumed == logged(tmp_path / "straight")  # bitwise


def test_resume_is_exact_for_a_real_model_and_task(tmp_path, monkeypatch):
    """The same, through the registry: a Transformer with dropout on MQAR's numpy stream."""
    from seqarena.tasks.synthetic import MQAR

    cfg = dict(model="transformer", task="mqar", seq_len=24, task_args={"pairs": 4, "vocab": 16},
               steps=12, checkpoint_every=6, eval_every=4, dropout=0.1, batch_size=8)
    train(toy_config(tmp_path, name="straight", **cfg))
    kill_training_at_batch(monkeypatch, MQAR, 9)
    with pytest.raises(KeyboardInterrupt):
        train(toy_config(tmp_path, name="stopped", **cfg))
    monkeypatch.undo()
    train(toy_config(tmp_path, name="stopped", **cfg), resume=True)
    assert logged(tmp_path / "stopped") == logged(tmp_path / "straight")


def test_resume_refuses_a_different_config(tmp_path):
    train(toy_config(tmp_path, steps=10))
    with pytest.raises(UserError, match="written with lr=0.01, this run has lr=0.02"):
        train(toy_config(tmp_path, steps=10, lr=0.02), resume=True)


def test_resume_without_a_checkpoint_and_a_second_run_in_the_same_dir_are_refused(tmp_path):
    with pytest.raises(UserError, match="no checkpoint to resume"):
        train(toy_config(tmp_path), resume=True)
    train(toy_config(tmp_path, steps=5))
    with pytest.raises(UserError, match="already holds a run; add --resume"):
        train(toy_config(tmp_path, steps=5))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    out = train(toy_config(tmp_path, steps=30, task_args={"nan_at_step": 15}))
    assert out.result.status == "nan"
    assert out.result.steps == 14
    assert "loss became nan at step 15" in out.message
    assert "last good checkpoint is step 10" in out.message
    assert "\n" not in out.message
    summary = read_results(tmp_path / "toy" / "summary.json")["results"][0]
    assert summary.status == "nan" and summary.metric is None
    names = sorted(p.name for p in (tmp_path / "toy" / "checkpoints").iterdir())
    assert names == ["step-00000010.safetensors", "step-00000010.state.pt"]
    assert all(math.isfinite(r["loss"]) for r in read_metrics(tmp_path / "toy") if "loss" in r)


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path, monkeypatch):
    scripted = iter([0.5, 0.4, 0.45, 0.41, 0.40, 0.1, 0.1])  # best at the 2nd evaluation
    monkeypatch.setattr(ToyMean, "evaluate", lambda self, model, split="val", batch_size=64:
                        {"mse": next(scripted)})
    out = train(toy_config(tmp_path, steps=200, eval_every=2, patience=3))
    assert out.result.steps == 10  # evaluations at steps 6, 8, 10 did not beat step 4's 0.4
    assert out.message == "early stopping: no better validation mse in 3 evaluations"
    assert out.result.status == "ok"
    assert out.result.best_val == 0.4
    assert out.result.metric == 0.1  # the final test evaluation still runs


def test_budget_seconds_stops_the_run(tmp_path):
    out = train(toy_config(tmp_path, steps=10**6, budget_seconds=0.2, eval_every=0))
    assert 0 < out.result.steps < 10**6
    assert "time budget" in out.message


def test_model_and_task_args_reach_their_configs(tmp_path):
    out = train(toy_config(tmp_path, steps=2, model_args={"bias": False},
                           task_args={"eval_size": "32"}))
    assert out.model.backbone.gru.bias is False
    assert out.task.config.eval_size == 32
    saved = json.loads((tmp_path / "toy" / "config.json").read_text())
    assert saved["task_args"] == {"eval_size": 32}  # as the config holds it, not as typed


def test_tensorboard_writes_event_files_beside_the_metrics(tmp_path):
    train(toy_config(tmp_path, steps=3, tensorboard=True))
    assert list((tmp_path / "toy").glob("events.out.tfevents.*"))


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UserError, match=r"pip install seqarena\[tensorboard\]"):
        train(toy_config(tmp_path, steps=3, tensorboard=True))
    assert not (tmp_path / "toy").exists()


def test_cuda_without_a_gpu_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU"):
        train(toy_config(tmp_path, device="cuda"))


def test_threads_are_set_explicitly(tmp_path):
    train(toy_config(tmp_path, steps=1, threads=2))
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)


def test_every_rng_is_seeded(tmp_path):
    import random

    train(toy_config(tmp_path, steps=1, seed=5, name="r1"))
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    train(toy_config(tmp_path, steps=1, seed=5, name="r2"))
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b


def test_a_run_that_dies_leaves_a_summary_of_its_last_evaluation(tmp_path, monkeypatch):
    real_loss = ToyMean.loss

    def dies_at_step_25(self, pred, batch):
        if torch.is_grad_enabled() and self.train_losses == 24:
            raise KeyboardInterrupt  # the process is stopped mid-run
        return real_loss(self, pred, batch)

    monkeypatch.setattr(ToyMean, "loss", dies_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        train(toy_config(tmp_path, steps=40))
    doc = read_results(tmp_path / "toy" / "summary.json")
    (r,) = doc["results"]
    assert r.status == "running" and r.steps == 20 and r.metric is None
    logged = read_metrics(tmp_path / "toy")
    assert r.history == [row for row in logged if row["step"] <= 20]
    assert [row["step"] for row in r.history if "val_mse" in row] == [10, 20]
    assert all(row["train_s"] > 0 for row in r.history)
