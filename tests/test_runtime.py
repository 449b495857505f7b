"""Subnormal floats are flushed to zero by default in every command's process, can be kept, and
the setting in force is recorded in the machine block of the results files."""

import json
import os
import subprocess
import sys

import pytest
import torch

from seqarena import runtime

TRAIN = ["train", "--model", "rnn", "--task", "adding", "--seq-len", "8", "--steps", "2",
         "--d-model", "8"]
BENCH = ["bench", "--models", "rnn", "--seq-lens", "8", "--batch-size", "2", "--d-model", "8",
         "--threads", "1", "--modes", "prefill", "--min-run-time", "0.001"]

# run inside the training process, at the end of the run: what would 1e-39 * 1.0 be there?
PROBE = ("import sys, torch, seqarena.cli as c, seqarena.training.train as t\n"
         "real = t.Trainer.run\n"
         "def run(self):\n"
         "    out = real(self)\n"
         "    print('PRODUCT', (torch.tensor(1e-39) * 1.0).item(), file=sys.stderr)\n"
         "    return out\n"
         "t.Trainer.run = run\n"
         "c.main(sys.argv[1:])\n")


def seqarena(*args, env=None, probe=False):
    env = {**{k: v for k, v in os.environ.items() if k != runtime.KEEP_DENORMALS_ENV},
           **(env or {})}
    command = [sys.executable, "-c", PROBE] if probe else [sys.executable, "-m", "seqarena"]
    r = subprocess.run(command + list(args), capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def product(stderr: str) -> float:
    return float(next(line for line in stderr.splitlines() if line.startswith("PRODUCT"))
                 .split()[1])


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
def test_a_training_run_flushes_subnormals_and_records_it(tmp_path):
    r = seqarena(*TRAIN, "--out", str(tmp_path), "--name", "flush", probe=True)
    assert product(r.stderr) == 0.0
    summary = json.loads((tmp_path / "flush" / "summary.json").read_text())
    assert summary["machine"]["flush_denormal"] is True


@pytest.mark.parametrize("how", ["flag", "env"])
def test_keep_denormals_keeps_them_and_records_it(tmp_path, how):
    flag = ["--keep-denormals"] if how == "flag" else []
    env = {runtime.KEEP_DENORMALS_ENV: "1"} if how == "env" else {}
    r = seqarena(*TRAIN, *flag, "--out", str(tmp_path), "--name", "keep", env=env, probe=True)
    assert product(r.stderr) == pytest.approx(1e-39, rel=1e-3)
    summary = json.loads((tmp_path / "keep" / "summary.json").read_text())
    assert summary["machine"]["flush_denormal"] is False


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
def test_bench_records_the_setting_in_bench_json(tmp_path):
    seqarena(*BENCH, "--out", str(tmp_path / "flush"))
    seqarena(*BENCH, "--keep-denormals", "--out", str(tmp_path / "keep"))
    machine = {k: json.loads((tmp_path / k / "bench.json").read_text())["machine"]
               for k in ("flush", "keep")}
    assert machine["flush"]["flush_denormal"] is True
    assert machine["keep"]["flush_denormal"] is False


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_every_run_of_a_comparison_flushes_in_its_own_process(tmp_path, jobs):
    # --jobs 2 trains in spawned processes, which start with torch's defaults
    seqarena("compare", "--models", "rnn,lstm", "--seq-lens", "8", "--steps", "2", "--lr", "1e-3",
             "--d-model", "8", "--jobs", jobs, "--out", str(tmp_path / "cmp"))
    runs = sorted((tmp_path / "cmp").glob("*/summary.json"))
    assert len(runs) == 2
    assert all(json.loads(p.read_text())["machine"]["flush_denormal"] is True for p in runs)


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
def test_train_called_from_python_flushes_too(tmp_path):
    code = ("import sys, torch\nfrom seqarena.config import TrainConfig\nfrom seqarena.training.train "
            "import train\ntrain(TrainConfig(model='rnn', steps=2, seq_len=8, d_model=8, "
            f"out={str(tmp_path)!r}, name='lib'))\n"
            "print('PRODUCT', (torch.tensor(1e-39) * 1.0).item(), file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != runtime.KEEP_DENORMALS_ENV}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert product(r.stderr) == 0.0
