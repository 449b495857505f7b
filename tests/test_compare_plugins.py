"""`seqarena compare` with a `module:factory` plug-in: safe, unique run directory names."""

import json
import os
import subprocess
import sys

import pytest
from test_plugins import PLUGIN_MODULE

from seqarena.experiment.compare import run_dir_name


@pytest.fixture()
def plugin_path(tmp_path):
    """A directory holding the tinyplug module, importable as `tinyplug:factory`."""
    (tmp_path / "tinyplug.py").write_text(PLUGIN_MODULE)
    return tmp_path


def run_cli(plugin_path, *args):
    path = os.pathsep.join(p for p in (str(plugin_path), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "seqarena", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": path}, timeout=300)


def test_plugin_names_become_plain_directory_names_that_stay_unique():
    names = {run_dir_name(m, 32, 0) for m in ("mymod:factory", "mymod.factory", "mymod+factory",
                                              "pkg/mod:f", "lstm")}
    assert len(names) == 5
    assert run_dir_name("lstm", 32, 0) == "lstm-L32-s0"
    assert all(":" not in n and "/" not in n for n in names)


def test_compare_runs_a_module_factory_plugin_beside_a_builtin_end_to_end(plugin_path):
    out = plugin_path / "cmp"
    r = run_cli(plugin_path, "compare", "--models", "tinyplug:factory,lstm", "--task", "adding",
                "--seq-lens", "8", "--steps", "3", "--lr", "1e-3", "--d-model", "8", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [(x["model"], x["status"]) for x in summary["results"]] == \
        [("tinyplug:factory", "ok"), ("lstm", "ok")]
    dirs = sorted(p.name for p in out.iterdir() if (p / "config.json").is_file())
    assert len(dirs) == 2 and dirs[0] == "lstm-L8-s0" and dirs[1].startswith("tinyplug+factory")


OOMER = '''
import torch
from torch import nn


class Oomer(nn.Module):
    """A mixer that runs out of memory at its fourth training call, as a large model would."""

    def __init__(self, d):
        super().__init__()
        self.proj = nn.Linear(d, d)
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == 4:
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.proj(x)


def factory(config):
    return Oomer(config.d_model)
'''


def test_a_run_that_fails_mid_training_changes_nothing_about_the_others(tmp_path):
    (tmp_path / "oomer.py").write_text(OOMER)
    common = ["compare", "--task", "adding", "--seq-lens", "32", "--steps", "60", "--lr", "3e-3"]
    alone = run_cli(tmp_path, *common, "--models", "lstm,gru", "--out", str(tmp_path / "a"))
    mixed = run_cli(tmp_path, *common, "--models", "oomer:factory,lstm,gru",
                    "--out", str(tmp_path / "b"))
    assert alone.returncode == 0, alone.stderr
    assert mixed.returncode == 0, mixed.stderr
    a = json.loads((tmp_path / "a" / "summary.json").read_text())["summary"]
    b = json.loads((tmp_path / "b" / "summary.json").read_text())["summary"]
    assert (b["metric_name"], b["higher_is_better"]) == ("mse", False)
    assert b["failed"] == [{"model": "oomer:factory", "seq_len": 32, "seed": 0, "status": "oom",
                            "why": "RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB"}]

    def said(summary, question):
        return [v["text"] for v in summary["verdicts"] if v["question"] == question]

    # training is deterministic, so every metric line is the same; timings are not
    assert said(b, "steps") == said(a, "steps")
    assert said(b, "baseline") == said(a, "baseline") == [
        "L=32: no model beats the baseline (predict_one_mse 0.1667) by a clear margin (10%); "
        "the task is not learned at this budget: raise --steps (now 60)"]
    header = next(line for line in mixed.stdout.splitlines() if line.startswith("model "))
    assert "mse [95 % interval] (lower is better; * named best)" in header
    assert "failed: oomer:factory L=32 seed 0: oom (RuntimeError: CUDA out of memory." \
        in mixed.stdout
    page = (tmp_path / "b" / "report.html").read_text()
    assert "Failed runs" in page and "oomer:factory L = 32 seed 0" in page
