"""Find and read what a report shows: run directories, compare directories, bench results and the
JSON files of `seqarena analyze`.

Everything is read through the results schema (seqarena.results.read_results) and nothing else:
a run's summary.json holds its learning curve (written at every evaluation while it trains, so a
run that crashed half way still shows what it logged), a compare summary holds every run's. What
cannot be read is not fatal: it is skipped with one line that says which file and why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqarena.errors import UserError
from seqarena.results import BenchResult, RunResult, Summary, read_results

ANALYSIS_KINDS = ("gradients", "attention")  # kinds of the JSON files `seqarena analyze` writes
MAX_DEPTH = 4  # how deep a directory is searched: a compare dir holds runs, runs hold analyses
RESULTS_FILES = ("summary.json", "bench.json", "results.json", "gradients.json",
                 "attention.json")  # the results files a directory may hold
NOT_SEARCHED = {"checkpoints", "__pycache__", "tensorboard", "lr-search"}  # never hold results
# (lr-search: compare's learning-rate trials, scored on val; the report shows the chosen rates)


@dataclass
class Source:
    """A file the report read: the machine and the command that produced it."""

    path: Path
    kind: str
    machine: dict[str, Any]
    command: list[str]


@dataclass
class Run:
    """One trained model: its result, whose history holds its curves."""

    result: RunResult
    source: Source  # the results file the row came from

    @property
    def model(self) -> str:
        return self.result.model

    @property
    def task(self) -> str:
        return self.result.task

    @property
    def seq_len(self) -> int:
        return self.result.seq_len

    @property
    def seed(self) -> int:
        return self.result.seed

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The logged records (step, loss, train_s, val_<metric>, ...), in order."""
        return self.result.history


@dataclass
class Bench:
    """One bench results file."""

    source: Source
    results: list[BenchResult]
    # the bench's crossover records (bench/summary.py), each with its "text"; the report draws
    # these rather than finding crossings of its own
    crossovers: list[dict[str, Any]] = field(default_factory=list)
    peak_flops: dict[str, float] = field(default_factory=dict)  # "cpu/float32/2t" -> FLOP/s
    peak_bandwidth: dict[str, float] = field(default_factory=dict)  # the same keys -> bytes/s
    serving: dict[str, list] = field(default_factory=dict)  # the ledger and its break-evens


@dataclass
class Analysis:
    """One file of `seqarena analyze`: its typed results and the settings beside them."""

    source: Source
    results: list  # GradientResult or AttentionMap rows
    doc: dict[str, Any]  # the rest of the file: task, seq_len, model, hidden states, ...

    @property
    def kind(self) -> str:
        return self.source.kind


@dataclass
class Inputs:
    runs: list[Run] = field(default_factory=list)
    benches: list[Bench] = field(default_factory=list)
    analyses: list[Analysis] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: why", one per thing not shown
    held_equal: list[str] = field(default_factory=list)  # what each comparison held equal
    verdicts: list[str] = field(default_factory=list)  # each comparison's verdict lines
    comparisons: list[Summary] = field(default_factory=list)  # each comparison's Summary

    def named_best(self, task: str, seq_len: int) -> str | None:
        """The model a comparison's equal-steps verdict named best; None on a tie or none."""
        return next((s.winner(seq_len) for s in self.comparisons if s.task == task), None)

    def empty(self) -> bool:
        return not (self.runs or any(b.results for b in self.benches) or self.analyses)

    def sources(self) -> list[Source]:
        seen: dict[Path, Source] = {}
        for s in [r.source for r in self.runs] + [b.source for b in self.benches] + \
                [a.source for a in self.analyses]:
            seen.setdefault(s.path, s)
        return list(seen.values())


def collect(paths: list[str | os.PathLike]) -> Inputs:
    """Read every run, compare, bench result and analysis under `paths`."""
    found = _Collector()
    for p in paths:
        found.add_path(Path(p))
    return found.inputs()


class _Collector:
    def __init__(self):
        self.runs: dict[Any, Run] = {}  # keyed by run dir (or row), so a run is shown once
        self.benches: dict[Path, Bench] = {}
        self.analyses: dict[Path, Analysis] = {}
        self.skipped: list[str] = []
        self.held_equal: list[str] = []
        self.verdicts: list[str] = []
        self.comparisons: list[Summary] = []

    def inputs(self) -> Inputs:
        return Inputs(list(self.runs.values()), list(self.benches.values()),
                      list(self.analyses.values()), list(dict.fromkeys(self.skipped)),
                      list(dict.fromkeys(self.held_equal)), list(dict.fromkeys(self.verdicts)),
                      self.comparisons)

    def skip(self, path: Path, why: str) -> None:
        self.skipped.append(f"{path}: {why}")

    def add_path(self, path: Path) -> None:
        if not path.exists():
            self.skip(path, "no such file or directory")
        elif path.is_file():
            if not self.add_file(path):
                self.skip(path, "not a seqarena results file")
        elif not self.add_dir(path, 0):
            self.skip(path, "no runs, compare or bench results, or analyses found in it")

    def add_file(self, path: Path) -> bool:
        if path.suffix != ".json":
            return False
        return self.add_results(path)

    def add_dir(self, d: Path, depth: int) -> bool:
        """Read the results files `d` holds, then search below it; True if anything was found."""
        found = False
        for name in RESULTS_FILES:
            if (d / name).is_file():
                found |= self.add_results(d / name)
        if not (d / "summary.json").is_file() and (d / "metrics.jsonl").is_file():
            self.skip(d, "no summary.json: the run stopped before its first evaluation")
            found = True
        if depth < MAX_DEPTH:
            for sub in sorted(p for p in d.iterdir() if p.is_dir()):
                if sub.name.startswith(".") or sub.name in NOT_SEARCHED \
                        or sub.name.endswith("_figures"):
                    continue
                found |= self.add_dir(sub, depth + 1)
        return found

    def add_results(self, path: Path) -> bool:
        try:
            doc = read_results(path)
        except UserError as e:
            self.skipped.append(str(e))
            return True  # found, but unreadable: said why, so not "nothing here" as well
        source = Source(path, doc["kind"], doc.get("machine") or {}, doc.get("command") or [])
        if doc["kind"] == "bench":
            records = doc.get("crossovers")
            records = [r if isinstance(r, dict) else {"text": str(r)}  # files before records
                       for r in records] if isinstance(records, list) else []
            serving = doc.get("serving") if isinstance(doc.get("serving"), dict) else {}
            self.benches[path.resolve()] = Bench(source, doc["results"], records,
                                                 _floats(doc.get("peak_flops")),
                                                 _floats(doc.get("peak_bandwidth")), serving)
        elif doc["kind"] in ANALYSIS_KINDS:
            rest = {k: v for k, v in doc.items() if k != "results"}
            self.analyses[path.resolve()] = Analysis(source, doc["results"], rest)
        else:
            summary = doc.get("summary")
            if doc["kind"] == "compare" and isinstance(summary, dict):
                try:
                    found = Summary.from_dict(summary)
                except TypeError as e:
                    self.skip(path, f"malformed comparison summary ({e})")
                else:
                    self.comparisons.append(found)
                    self.held_equal.append(_describe(found.held_equal))
                    self.verdicts += [str(v["text"]) for v in found.verdicts]
            elif doc["kind"] == "compare":  # written before the summary (schema 2): its lines
                if isinstance(doc.get("held_equal"), dict):
                    self.held_equal.append(_describe(doc["held_equal"]))
                self.verdicts += [str(v["text"]) for v in doc.get("verdicts") or []
                                  if isinstance(v, dict) and "text" in v]
            for r in doc["results"]:
                self.add_run(path, r, source)
        return True

    def add_run(self, path: Path, result: RunResult, source: Source) -> None:
        """A run's row; a compare summary's row wins over the run's own summary.json."""
        # a run's own summary sits in its run dir; a compare's runs sit inside the compare dir
        run_dir = path.parent if source.kind == "train" else \
            path.parent / Path(result.run_dir or "?").name
        key = run_dir.resolve() if run_dir.is_dir() else \
            (path.resolve(), result.model, result.seq_len, result.seed)
        if key in self.runs and source.kind == "train":
            return
        if result.status == "running":
            self.skip(path, f"{result.model} at L={result.seq_len} did not finish; showing the "
                            f"{len(result.history)} records it logged")
        self.runs[key] = Run(result, source)


def _floats(value: Any) -> dict[str, float]:
    """A {key: number} mapping from a results file, without entries that are not numbers."""
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float))}


def _describe(held: dict[str, Any]) -> str:
    """A compare's held_equal as one line: "task adding, steps 300, batch_size 32, ..."."""
    parts = []
    for k, v in held.items():
        if isinstance(v, dict):
            v = " ".join(f"{a}={b}" for a, b in v.items()) or None
        elif isinstance(v, list):
            v = ", ".join(map(str, v))
        if v not in (None, ""):
            parts.append(f"{k.replace('_', ' ')} {v}")
    return "; ".join(parts)
