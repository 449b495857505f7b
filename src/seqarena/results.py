"""The one results schema: written by train, compare and bench, read by the report.

Every file carries `schema_version` and the machine it came from, so old results can be told
apart from new ones and a figure is never separated from the hardware that produced it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqarena import __version__
from seqarena.errors import UserError
from seqarena.fileio import atomic_write_json
from seqarena.runtime import float_settings

SCHEMA_VERSION = 3  # 2: RunResult's extra dict became named fields; analyses use this schema
#                    3: BenchResult's extra dict became named fields; per-example scores in RunResult


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What a reader needs to know to compare our numbers with theirs."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seqarena": __version__,
        **float_settings(),
    }


def machine_label(machine: dict[str, Any]) -> str:
    """One short line naming a machine, for tables and chart captions."""
    where = machine.get("gpu") or f"{machine.get('cpu')}, {machine.get('threads')} threads"
    return f"{where}, torch {machine.get('torch')}"


@dataclass(frozen=True)
class RunResult:
    """One trained model on one task at one length and seed: everything a consumer reads.
    Frozen: the trainer returns it complete, and nothing patches it afterwards."""

    model: str
    task: str
    seq_len: int
    params: int
    metric_name: str
    metric: float | None  # None when the run stopped before its first evaluation
    higher_is_better: bool
    train_tokens_per_s: float
    peak_mem_bytes: int
    wall_s: float
    steps: int
    seed: int
    status: str = "ok"  # "ok", "running" (written mid-run), "nan", "oom", "timeout", "error"
    family: str = ""  # the backbone's family ("recurrent", "scan", "attention", ...)
    split: str = "test"  # the held-out split `metric` was measured on ("val" when tuning)
    metric_ci: list | None = None  # 95 % bootstrap interval of metric over the split's examples
    lr: float | None = None  # the peak learning rate the run trained with
    lr_tuned: bool = False  # True: lr was chosen by the validation search of `compare --lr auto`
    train_tokens_per_s_spread: list | None = None  # 25th, 75th percentile of the logged windows
    metrics: dict = field(default_factory=dict)  # every final metric, "<split>_<name>" -> value
    best_val: float | None = None  # best validation metric seen during training
    baselines: dict = field(default_factory=dict)  # trivial predictors' metric, name -> value
    train_s: float = 0.0  # seconds inside training steps: no evaluation, no saving
    stopped: str = ""  # why the run stopped before its budget; "" when it did not
    device: str = ""  # "cpu", "cuda:0", ...
    threads: int = 0  # CPU threads per process
    world_size: int = 1  # data-parallel processes
    d_model: int = 0  # the width the model was built at (after parameter matching)
    layers: int = 0
    model_args: dict = field(default_factory=dict)  # other model config fields set for the run
    truncated: int | None = None  # examples of the task's data cut to seq_len; None: none can be
    task_version: int = 1  # the task's version: results of another version are not comparable
    run_dir: str = ""  # where the run's checkpoints and logs are
    history: list = field(default_factory=list)  # every logged record: step, loss, lr, train_s,
    #                                             wall_s, tokens_per_s, val_<metric> when evaluated
    examples: dict | None = None  # the final split's per-example sums, {"totals": {key: [N]},
    #                               "counts": {key: [N]}}: paired tests and pooled intervals
    eval_examples: list = field(default_factory=list)  # the same on "val" at every evaluation,
    #                                                    with its step and train_s: equal-time tests
    example_lengths: list | None = None  # the input length of each of `examples`, for tasks
    #                                      tested at lengths they were not trained on
    outputs: list | None = None  # a corpus-scored task's outputs on the final split (translate's
    #                              hypotheses), in the order of `references`
    references: list | None = None  # the references `outputs` are scored against


# --- a comparison's summary -----------------------------------------------------------------

@dataclass
class Row:
    """One model at one length, its seeds pooled."""

    model: str
    seq_len: int
    family: str
    params: int
    lr: float | None
    lr_tuned: bool
    seeds: int  # runs asked for
    finished: int  # runs with a metric
    metric: float | None  # mean over the finished seeds
    metric_ci: list | None  # 95 % interval: test examples (one seed) or seeds and examples
    metric_at_time: float | None  # validation metric at the equal training time T
    metric_at_time_ci: list | None
    train_tokens_per_s: float | None  # median over the runs' logged windows
    train_tokens_per_s_spread: list | None  # 25-75 % of the same windows
    peak_mem_bytes: int
    train_s: float
    steps: float
    status: str  # the runs' statuses, e.g. "ok" or "ok,oom"
    by_length: list | None = None  # [input length, metric, low, high] per held-out length, for
    #                                tasks tested at lengths they were not trained on


@dataclass
class Failed:
    model: str
    seq_len: int
    seed: int
    status: str  # "oom", "error", "nan", "timeout"
    why: str


@dataclass
class Summary:
    """Everything a comparison concluded (seqarena.experiment.summary builds it once); written into
    a compare's summary.json as its `summary`, and only rendered by the views."""

    task: str
    metric_name: str
    higher_is_better: bool
    baselines: dict
    coverage: str  # what the intervals and tests cover (test sample, seeds)
    rows: list[Row]
    verdicts: list[dict]  # Verdict.as_dict(), tests included
    failed: list[Failed] = field(default_factory=list)
    held_equal: dict = field(default_factory=dict)
    sizes: list = field(default_factory=list)
    lr_search: dict | None = None  # per length: rates tried, kept, chosen, ties
    equal_time_s: dict = field(default_factory=dict)  # L -> T
    trained_lengths: list | None = None  # [shortest, longest] trained on, when tested elsewhere
    wall_s: float = 0.0

    def winner(self, seq_len: int, question: str = "steps") -> str | None:
        return next((d["winner"] for d in self.verdicts
                     if d["seq_len"] == seq_len and d["question"] == question), None)

    @classmethod
    def from_dict(cls, doc: dict) -> "Summary":
        doc = dict(doc)
        doc["rows"] = [Row(**r) for r in doc.get("rows", [])]
        doc["failed"] = [Failed(**f) for f in doc.get("failed", [])]
        doc["equal_time_s"] = {int(k): t for k, t in (doc.get("equal_time_s") or {}).items()}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: x for k, x in doc.items() if k in names})


@dataclass
class BenchResult:
    """One timed point of a sweep."""

    model: str
    impl: str  # "seqarena" or the peer's name
    mode: str  # "train", "forward", "prefill", "decode"
    seq_len: int
    batch: int
    d_model: int
    layers: int
    threads: int
    device: str
    dtype: str
    tokens_per_s: float | None
    latency_s: float | None  # median seconds per step (train/forward/prefill) or per token (decode)
    flops: float | None  # counted FLOPs per step (per token for decode); None: not counted
    mfu: float | None
    peak_mem_bytes: int | None
    status: str = "ok"  # "ok", "oom", "timeout", "error", "unsupported"
    family: str = ""  # the family of the model timed ("recurrent", "attention", ...)
    error: str = ""  # why the point has no figures (status not "ok"): the failure or the skip
    iqr_s: float | None = None  # interquartile range of the rounds' medians, seconds
    runs: int | None = None  # timed rounds the median is taken over
    position: int | None = None  # decode: the position timed (the state holds position - 1 tokens)
    state_bytes: int | None = None  # decode: bytes of the state at that position (cache or hidden)
    wall_s: float | None = None  # seconds the point cost the sweep, preparation included
    round_s: list[float] = field(default_factory=list)  # each round's median seconds, in order
    bytes_moved: float | None = None  # bytes the step's ops read and write (seqarena.flops)
    mbu: float | None = None  # bytes/s over the measured memory bandwidth (the second roof)
    intensity: float | None = None  # arithmetic intensity: FLOPs per byte moved


@dataclass
class GradientResult:
    """One model under one condition of `seqarena analyze gradients`."""

    model: str
    condition: str  # "at initialisation", "trained, no clipping", "trained, clipped at 1"
    trained: bool
    clip: float | None  # the clipping threshold of a clipped run
    status: str  # the training run's status ("ok" at initialisation)
    distance: list  # positions between x_t and the output, one per t
    grad_norm: list  # ||d loss / d x_t|| per t; None where it was not finite
    stopped: str = ""  # why training stopped early
    train: dict = field(default_factory=dict)  # step, loss, grad_norm of every logged step
    family: str = ""
    rate: float | None = None  # per-step geometric rate of grad_norm with distance (> 1: grows)


@dataclass
class AttentionMap:
    """The softmax weights of one layer and head on one example."""

    layer: int
    head: int
    name: str  # the module the weights came from
    weights: list  # (queries, keys) nested lists


RESULT_TYPES = {"train": RunResult, "compare": RunResult, "bench": BenchResult,
                "gradients": GradientResult, "attention": AttentionMap}


def write_results(path: str | os.PathLike, kind: str, results: list, command: list[str] | None = None,
                  machine: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Write a results file atomically; `extra` holds kind-specific keys such as peak_flops."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "machine": machine or machine_info(),
        "command": command if command is not None else ["seqarena", *sys.argv[1:]],
        **extra,
        "results": [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in results],
    }
    atomic_write_json(path, doc)
    return doc


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a results file; `results` come back as RunResult/BenchResult objects."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a seqarena results file ({e})") from None
    if not isinstance(doc, dict) or "schema_version" not in doc or "results" not in doc:
        raise UserError(f"{path}: not a seqarena results file (no schema_version or results)")
    if doc["schema_version"] > SCHEMA_VERSION:
        raise UserError(f"{path}: written by a newer seqarena (schema {doc['schema_version']}, "
                        f"this one reads up to {SCHEMA_VERSION}); upgrade seqarena to read it")
    cls = RESULT_TYPES.get(doc.get("kind"))
    if cls is None:
        raise UserError(f"{path}: unknown results kind {doc.get('kind')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    rows = doc["results"] if isinstance(doc["results"], list) else None
    if rows is None or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path}: malformed results (a list of objects expected)")
    if doc["schema_version"] < {RunResult: 2, BenchResult: 3}.get(cls, 0):  # fields were in extra
        rows = [{**(r.get("extra") or {}), **r} for r in rows]
    try:
        doc["results"] = [cls(**{k: v for k, v in r.items() if k in names}) for r in rows]
    except TypeError as e:
        raise UserError(f"{path}: malformed result ({e})") from None
    return doc
