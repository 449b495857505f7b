"""How compare's runs run: the learning-rate search, --jobs, --resume, and exact resume of a run
with a time budget (a fake clock makes training seconds exact)."""

import dataclasses
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from seqarena.training import train as train_module
from seqarena.cli import main
from seqarena.experiment.compare import CompareConfig, compare
from seqarena.config import TrainConfig
from seqarena.experiment.executor import LocalExecutor, RunSpec, execute
from seqarena.experiment.lrsearch import rungs, search
from seqarena.results import read_results
from seqarena.tasks.base import GeneratedTask


def tiny(tmp_path, **fields):
    base = dict(model="lstm", task="adding", seq_len=10, steps=80, batch_size=16, d_model=8,
                lr=1e-3, eval_every=20, log_every=10, checkpoint_every=0, keep_checkpoints=1,
                out=str(tmp_path), device="cpu", threads=1, task_args={"eval_size": 64})
    return TrainConfig(**{**base, **fields})


# --- the learning-rate search ---------------------------------------------------------------

def test_lr_search_picks_the_rate_that_learns_and_never_reads_the_test_split(tmp_path, monkeypatch):
    read = []
    heldout = GeneratedTask.heldout

    def spy(self, split):
        read.append(split)
        if split == "test":
            raise AssertionError("the search read the test split")
        return heldout(self, split)

    monkeypatch.setattr(GeneratedTask, "heldout", spy)
    base = tiny(tmp_path, steps=160)
    # 1e-6 barely moves, 3e-2 learns, 1e3 diverges
    found = search([base], (1e-6, 3e-2, 1e3), budget=0.5, executor=LocalExecutor(1),
                   out=tmp_path / "lr-search")["lstm"]
    assert found.lr == 3e-2
    assert found.rungs == (40, 80)
    trials = {t.lr: t.values for t in found.trials}
    assert len(trials[1e3]) == 1 and len(trials[3e-2]) == 2  # the diverging rate went no further
    assert set(read) == {"val"}
    runs = sorted(p.name for p in (tmp_path / "lr-search").iterdir())
    assert "lstm-adding-L10-s0-lr0.03-r1" in runs and "lstm-adding-L10-s0-lr1000-r1" not in runs


def test_lr_search_budget_too_small_to_halve_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(Exception, match="first rung would train 5 steps"):
        rungs(4, tiny(tmp_path, steps=40), 0.25, time_budget=False)
    for args, words in [(["--steps", "40"], "first rung would train"),
                        (["--lr-grid", ","], "--lr-grid lists no learning rate"),
                        (["--lr-grid", "1e-3,abc"], "--lr-grid expects a comma-separated list"),
                        (["--lr-grid", "1e-3,-1"], "lr_grid must hold positive numbers"),
                        (["--lr-grid", "1e-3,1e-3"], "lr_grid lists a value twice"),
                        (["--jobs", "0"], "jobs must be a positive integer"),
                        (["--lr", "fast"], "--lr expects a number")]:
        with pytest.raises(SystemExit) as e:
            main(["compare", "--models", "lstm", "--seq-lens", "10", "--out",
                  str(tmp_path / "x"), *args])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and words in err, (args, err)


class Scripted:
    """An executor that trains nothing: each run's validation score and interval come from
    `score(lr, steps)`, so the search's choices can be checked on hand-made numbers."""

    jobs = 1

    def __init__(self, score):
        self.score, self.asked = score, []

    def run(self, specs, done=None):
        out = []
        for spec in specs:
            lr, steps = spec.config["lr"], spec.config["steps"]
            self.asked.append((lr, steps))
            value, ci = self.score(lr, steps)
            out.append(SimpleNamespace(status="ok", metric=value, metric_ci=ci))
        return out


GRID = (3e-4, 1e-3, 3e-3, 1e-2)


def scripted_search(tmp_path, score):
    lines = []
    executor = Scripted(score)
    found = search([tiny(tmp_path, steps=400)], GRID, budget=0.5, executor=executor,
                   out=tmp_path / "lr-search", echo=lines.append)["lstm"]
    return found, executor.asked, lines


def test_lr_search_on_a_plateau_takes_the_largest_rate_within_noise(tmp_path):
    # every rate still at the baseline, the smallest a hair lower: ranked by the score alone,
    # the search would keep 3e-4 and 1e-3 and choose 3e-4
    def plateau(lr, steps):
        value = 0.17 + lr
        return value, (value - 0.02, value + 0.02)

    found, asked, lines = scripted_search(tmp_path, plateau)
    assert asked == [(lr, 100) for lr in GRID] + [(3e-3, 200), (1e-2, 200)]
    assert found.lr == 1e-2 and found.tied == (3e-3,)
    assert any("lstm: 0.003, 0.01 within noise of the best score at 200 steps; took the largest, "
               "0.01" in line for line in lines), lines


def test_lr_search_names_a_clear_winner_over_larger_rates(tmp_path):
    # 1e-3 learns; every other rate is clearly worse, the larger ones too
    scores = {3e-4: 0.16, 1e-3: 0.01, 3e-3: 0.05, 1e-2: 0.12}

    def learns(lr, steps):
        value = scores[lr] / (steps / 100)
        return value, (value * 0.9, value * 1.1)

    found, asked, lines = scripted_search(tmp_path, learns)
    assert asked[4:] == [(1e-3, 200), (3e-3, 200)]
    assert found.lr == 1e-3 and found.tied == ()
    assert not any("within noise" in line for line in lines)


def test_lr_search_without_intervals_ranks_by_the_score_alone(tmp_path):
    found, asked, _ = scripted_search(tmp_path, lambda lr, steps: (0.17 + lr, None))
    assert asked[4:] == [(3e-4, 200), (1e-3, 200)]
    assert found.lr == 3e-4 and found.tied == ()


# --- --jobs and --resume ----------------------------------------------------------------------

def summary_numbers(out):
    doc = read_results(out / "summary.json")
    runs = sorted((r.model, r.seq_len, r.seed, r.steps, r.metric, tuple(r.metric_ci), r.lr)
                  for r in doc["results"])
    return runs, [v["text"].split(";")[0] for v in doc["summary"]["verdicts"]
                  if v["question"] == "steps"]


def small_compare(tmp_path, name, **fields):
    return CompareConfig(models=("lstm", "gru"), seq_lens=(10,), seeds=(0,),
                         out=str(tmp_path / name), lr_grid=(1e-3, 1e-2), lr_budget=0.25,
                         train=tiny(tmp_path, **fields), **{"jobs": 1})


def test_two_jobs_give_the_numbers_of_one(tmp_path):
    one = compare(small_compare(tmp_path, "one"))
    two = compare(dataclasses.replace(small_compare(tmp_path, "two"), jobs=2))
    assert [r.lr for r in one.summary.rows] == [r.lr for r in two.summary.rows]
    assert summary_numbers(tmp_path / "one") == summary_numbers(tmp_path / "two")


class StopAfter:
    """An executor that runs the first `n` specs of a call, then stops as Ctrl-C would."""

    jobs = 1

    def __init__(self, n):
        self.n = n

    def run(self, specs, done=None):
        results = []
        for i, spec in enumerate(specs):
            if len(results) == self.n:
                raise KeyboardInterrupt
            results.append(execute(spec))
            if done:
                done(i, results[-1])
        return results


def test_resume_continues_a_stopped_comparison_to_the_same_numbers(tmp_path):
    cfg = dataclasses.replace(small_compare(tmp_path, "whole"), lr_auto=False)
    compare(cfg)
    stopped = dataclasses.replace(cfg, out=str(tmp_path / "stopped"))
    with pytest.raises(KeyboardInterrupt):
        compare(stopped, executor=StopAfter(1))
    assert not (tmp_path / "stopped" / "summary.json").exists()
    lines = []
    compare(stopped, echo=lines.append, resume=True)
    assert summary_numbers(tmp_path / "whole") == summary_numbers(tmp_path / "stopped")
    with pytest.raises(Exception, match="started with"):
        compare(dataclasses.replace(stopped, seeds=(0, 1)), resume=True)


# --- exact resume under a time budget -----------------------------------------------------------

class Clock:
    """perf_counter that moves one second per call: every training step takes exactly 1 s."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


def test_resume_with_a_time_budget_gives_the_losses_of_an_uninterrupted_run(tmp_path, monkeypatch):
    # evaluations every 5 steps: they read the clock too, and must not count as training time
    cfg = tiny(tmp_path, steps=10**9, budget_seconds=30.0, log_every=1, eval_every=5,
               checkpoint_every=10)
    monkeypatch.setattr(train_module, "time", Clock())
    whole = execute(RunSpec(dataclasses.asdict(dataclasses.replace(cfg, name="whole"))))

    calls = {"n": 0}
    factor = train_module.lr_factor

    def stop_at_step_25(*args):
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt
        return factor(*args)

    part = dataclasses.replace(cfg, name="part")
    monkeypatch.setattr(train_module, "time", Clock())
    monkeypatch.setattr(train_module, "lr_factor", stop_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        execute(RunSpec(dataclasses.asdict(part)))
    monkeypatch.setattr(train_module, "lr_factor", factor)
    monkeypatch.setattr(train_module, "time", Clock())  # a new process: its clock starts anew
    resumed = execute(RunSpec(dataclasses.asdict(part), resume=True))

    def losses(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        return [(r["step"], r["loss"], r["lr"]) for r in rows if "loss" in r]

    assert whole.steps == resumed.steps == 30 and whole.train_s == resumed.train_s == 30.0
    assert losses("whole") == losses("part")
    assert whole.metric == resumed.metric


def test_resume_through_the_cli_continues_a_run_killed_mid_way(tmp_path):
    """`seqarena compare` dies at step 15 of its second run (its process ends at once, as on a
    power cut); `--resume` continues that run from its step-10 checkpoint to the numbers of a
    comparison that never stopped."""
    (tmp_path / "every10.toml").write_text("checkpoint_every = 10\neval_every = 10\n")
    args = ["compare", "--models", "lstm,gru", "--task", "adding", "--seq-lens", "10", "--steps",
            "30", "--lr", "3e-3", "--d-model", "8", "--batch-size", "4", "--threads", "1",
            "--config", str(tmp_path / "every10.toml")]

    def cli(out, *extra, exit_at=None):
        env = {k: v for k, v in os.environ.items() if k != "SEQARENA_TEST_EXIT_AT"}
        if exit_at:
            env["SEQARENA_TEST_EXIT_AT"] = exit_at
        return subprocess.run([sys.executable, "-m", "seqarena", *args, "--out", str(out),
                               *extra], capture_output=True, text=True, env=env, timeout=600)

    assert cli(tmp_path / "whole").returncode == 0
    marker = tmp_path / "died"
    # the first run (lstm) passes step 15 first; the hook fires once, so it is that run that dies
    died = cli(tmp_path / "cut", exit_at=f"15:{marker}")
    assert died.returncode != 0 and marker.exists()
    assert not (tmp_path / "cut" / "summary.json").exists()
    assert (tmp_path / "cut" / "lstm-L10-s0" / "checkpoints").is_dir()
    resumed = cli(tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert summary_numbers(tmp_path / "whole") == summary_numbers(tmp_path / "cut")
