"""Results laid out as train, compare and bench write them, for the report's tests (no tests
here): runs/<name>/{metrics.jsonl, summary.json}, a compare dir of such runs with its own
summary.json, and a bench dir with bench.json."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from seqarena.bench.command import serving
from seqarena.bench.summary import crossovers
from seqarena.experiment.summary import TaskInfo, summarize
from seqarena.results import SCHEMA_VERSION, BenchResult, RunResult, write_results

MACHINE = {"cpu": "Test CPU 9000", "cores": 2, "threads": 2, "gpu": None, "torch": "2.13.0",
           "python": "3.11", "platform": "Linux", "seqarena": "0.1.0"}
MODELS = ["rnn", "lstm", "gru", "mingru", "transformer"]
LENGTHS = [32, 128]
STEPS = 60


FAMILIES = {"rnn": "recurrent", "lstm": "recurrent", "gru": "recurrent", "mingru": "scan",
            "transformer": "attention"}


def history(model: str, steps: int = STEPS) -> list[dict]:
    """The records a run logs: every step, with the validation metric every 10 steps."""
    i, rows = MODELS.index(model), []
    for step in range(1, steps + 1):
        loss = 0.2 * math.exp(-step / (15 + 5 * i)) + 0.01 + 0.002 * (step % 3)
        row = {"step": step, "loss": loss, "lr": 1e-3, "grad_norm": 1.0 / step,
               "tokens_per_s": 50_000.0, "train_s": step * 0.04, "wall_s": step * 0.05}
        if step % 10 == 0:
            row["val_mse"] = 0.2 * math.exp(-step / (20 + 5 * i)) + 0.01
        rows.append(row)
    return rows


TIED = ("lstm", 128)  # lstm scores as rnn here, example by example: a tie at L = 128
WEIGHTS = [0.5 + (7 * j % 11) / 10 for j in range(64)]  # each test example's share of the mean


def metric_of(model: str, seq_len: int, seed: int = 0) -> float:
    i = 0 if (model, seq_len) == TIED else MODELS.index(model)
    return round(0.01 + 0.03 * i + seq_len / 4000 + 0.002 * seed, 6)


def example_sums(metric: float) -> dict:
    """64 test examples whose mean squared error is `metric`, the same spread for every model."""
    mean = sum(WEIGHTS) / len(WEIGHTS)
    return {"totals": {"mse": [metric * w / mean for w in WEIGHTS]},
            "counts": {"mse": [1.0] * len(WEIGHTS)}}


def run_result(model: str, seq_len: int, seed: int = 0, run_dir: str = "", steps: int = STEPS,
               status: str = "ok") -> RunResult:
    i = MODELS.index(model)
    metric = metric_of(model, seq_len, seed)
    return RunResult(model=model, task="adding", seq_len=seq_len, params=10_000 + 137 * i,
                     metric_name="mse", metric=metric, lr=3e-3 * (1 + i % 2), lr_tuned=True,
                     metric_ci=[metric * 0.9, metric * 1.1], examples=example_sums(metric),
                     higher_is_better=False, train_tokens_per_s=50_000.0 + 1_000 * i,
                     peak_mem_bytes=(12 + i) * 2**20, wall_s=3.5 + i, steps=steps, seed=seed,
                     status=status, family=FAMILIES[model],
                     baselines={"predict_one_mse": 1 / 6}, run_dir=run_dir,
                     history=history(model, steps))


def write_run(d: Path, model: str, seq_len: int, seed: int = 0, summary: bool = True,
              crashed_at: int = 0) -> Path:
    """A train run directory: metrics.jsonl and summary.json. A run that crashed at step N has
    the summary of its last evaluation (status "running"); with summary=False it crashed before
    its first."""
    d.mkdir(parents=True, exist_ok=True)
    steps = crashed_at or STEPS
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history(model, steps)))
    if summary:
        last_eval = steps - steps % 10 if crashed_at else steps
        write_results(d / "summary.json", "train",
                      [run_result(model, seq_len, seed, run_dir=str(d), steps=last_eval,
                                  status="running" if crashed_at else "ok")],
                      command=["seqarena", "train", "--model", model, "--seq-len", str(seq_len)],
                      machine=MACHINE)
    return d


def write_compare(d: Path, models=MODELS, lengths=LENGTHS, seeds=(0,)) -> Path:
    """A compare dir; like compare, each row names its run dir as the path compare used."""
    rows = []
    for L in lengths:
        for m in models:
            for s in seeds:
                name = f"{m}-L{L}-s{s}"
                write_run(d / name, m, L, s)
                rows.append(run_result(m, L, s, run_dir=str(d / name)))
    lr_search = {"searched_at": lengths[0], "seed": 0, "split": "val",
                 "grid": [1e-3, 3e-3, 6e-3], "runs": [
                     {"model": m, "lr": 3e-3 * (1 + i % 2), "seq_len": L, "searched_at": lengths[0],
                      "rungs": [15, 30], "tied": [], "trials": [
                          {"lr": lr, "values": [0.1 / (1 + k + i), 0.05 / (1 + k + i)],
                           "intervals": [None, None]} for k, lr in enumerate((1e-3, 3e-3, 6e-3))]}
                     for L in lengths for i, m in enumerate(models)]}
    summary = summarize(rows, TaskInfo("adding", "mse", False, {"predict_one_mse": 1 / 6},
                                       finish=lambda m: m), "--steps (now 60)",
                        held_equal={"task": "adding", "steps": STEPS, "seeds": list(seeds)},
                        lr_search=lr_search)
    write_results(d / "summary.json", "compare", rows, machine=MACHINE,
                  command=["seqarena", "compare", "--out", str(d)],
                  summary=dataclasses.asdict(summary))
    return d


def bench_rows() -> list[BenchResult]:
    rows = []
    common = dict(batch=16, d_model=128, layers=1, threads=2, device="cpu", dtype="float32")
    for i, m in enumerate(MODELS):
        attention = m == "transformer"
        for L in (64, 256, 1024, 4096):
            # recurrent throughput is flat in L; attention falls off with L: they cross.
            tps = 2e6 * 64 / L if attention else 2e5 * (1 + i / 4)
            mem = L * (2**14 if attention else int(2**12 * (1 + i / 3)))
            for mode, f in (("train", 1.0), ("forward", 3.0), ("prefill", 3.2)):
                oom = attention and L == 4096 and mode == "train"
                rows.append(BenchResult(
                    model=m, impl="seqarena", mode=mode, seq_len=L, **common,
                    tokens_per_s=None if oom else tps * f,
                    latency_s=None if oom else 16 * L / (tps * f), flops=1e9,
                    mfu=None if oom else 0.1 + 0.05 * i, peak_mem_bytes=None if oom else mem,
                    status="oom" if oom else "ok", bytes_moved=1e9 / (2 + i) / (L / 64),
                    intensity=None if oom else (2 + i) * (L / 64), family=FAMILIES[m]))
        for pos in (64, 256, 1024, 4096):
            lat = 2e-4 * (1 + pos / 512) if attention else 2e-4
            state = 16 * 128 * 4 * (pos * 2 if attention else 1)  # KV cache grows, h_t does not
            rows.append(BenchResult(model=m, impl="seqarena", mode="decode", seq_len=pos, **common,
                                    tokens_per_s=16 / lat, latency_s=lat, flops=None, mfu=None,
                                    peak_mem_bytes=None,
                                    family=FAMILIES[m],
                                    position=pos, state_bytes=state))
    for L in (64, 256, 1024, 4096):
        rows.append(BenchResult(model="lstm", impl="torch.nn", mode="train", seq_len=L, **common,
                                tokens_per_s=2.4e5, latency_s=16 * L / 2.4e5, flops=1e9, mfu=0.2,
                                peak_mem_bytes=L * 2**12, family="recurrent"))
    return rows


def write_bench(d: Path) -> Path:
    write_results(d / "bench.json", "bench", bench_rows(), machine=MACHINE,
                  command=["seqarena", "bench", "--quick"], peak_flops={"cpu/float32/2t": 1e11},
                  peak_bandwidth={"cpu/float32/2t": 2e10}, crossovers=crossovers(bench_rows()),
                  serving=serving(bench_rows(), note=print))
    return d


def write_newer_schema(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    doc = {"schema_version": SCHEMA_VERSION + 1, "kind": "train", "machine": MACHINE,
           "command": ["seqarena", "train"], "results": []}
    (d / "summary.json").write_text(json.dumps(doc))
    return d
