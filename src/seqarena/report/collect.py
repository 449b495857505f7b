"""Find and read what a report shows: run directories, compare directories, bench results and the
JSON files of `seqarena analyze`.

Everything is read through the results schema (seqarena.results.read_results) plus each run's
metrics.jsonl and config.json. What cannot be read is not fatal: it is skipped with one line that
says which file and why, so a run that crashed half way still shows the steps it logged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqarena.errors import UserError
from seqarena.results import SCHEMA_VERSION, BenchResult, RunResult, read_results

ANALYSIS_KINDS = ("gradients", "attention")  # kinds of the JSON files `seqarena analyze` writes
MAX_DEPTH = 4  # how deep a directory is searched: a compare dir holds runs, runs hold analyses
RESULTS_FILES = ("bench.json", "results.json")  # what a bench results directory holds
NOT_SEARCHED = {"checkpoints", "__pycache__", "tensorboard"}  # never hold results


@dataclass
class Source:
    """A file the report read: the machine and the command that produced it."""

    path: Path
    kind: str
    machine: dict[str, Any]
    command: list[str]


@dataclass
class Run:
    """One trained model: its summary row (None when the run stopped early) and its curves."""

    model: str
    task: str
    seq_len: int | None
    seed: int | None
    run_dir: Path | None
    result: RunResult | None
    metrics: list[dict[str, Any]]  # the metrics.jsonl rows that parsed, in order
    config: dict[str, Any]
    source: Source | None  # the summary the row came from; None for a run without one


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


@dataclass
class Inputs:
    runs: list[Run] = field(default_factory=list)
    benches: list[Bench] = field(default_factory=list)
    analyses: list[dict[str, Any]] = field(default_factory=list)  # docs, with "path" added
    skipped: list[str] = field(default_factory=list)  # "path: why", one per thing not shown
    held_equal: list[str] = field(default_factory=list)  # what each comparison held equal

    def empty(self) -> bool:
        return not (self.runs or any(b.results for b in self.benches) or self.analyses)

    def sources(self) -> list[Source]:
        seen: dict[Path, Source] = {}
        for s in [r.source for r in self.runs] + [b.source for b in self.benches]:
            if s is not None:
                seen.setdefault(s.path, s)
        for a in self.analyses:
            p = Path(a["path"])
            seen.setdefault(p, Source(p, a["kind"], a.get("machine") or {}, a.get("command") or []))
        return list(seen.values())


def collect(paths: list[str | os.PathLike]) -> Inputs:
    """Read every run, compare, bench result and analysis under `paths`."""
    found = _Collector()
    for p in paths:
        found.add_path(Path(p))
    return found.inputs()


class _Collector:
    def __init__(self):
        self.runs: dict[Any, Run] = {}  # keyed by resolved run dir, so a run is shown once
        self.from_compare: set[Path] = set()  # run dirs already described by a compare summary
        self.benches: dict[Path, Bench] = {}
        self.analyses: dict[Path, dict[str, Any]] = {}
        self.skipped: list[str] = []
        self.held_equal: list[str] = []

    def inputs(self) -> Inputs:
        return Inputs(list(self.runs.values()), list(self.benches.values()),
                      list(self.analyses.values()), list(dict.fromkeys(self.skipped)),
                      list(dict.fromkeys(self.held_equal)))

    def skip(self, path: Path, why: str) -> None:
        self.skipped.append(f"{path}: {why}")

    def add_path(self, path: Path) -> None:
        if not path.exists():
            self.skip(path, "no such file or directory")
        elif path.is_file():
            if not self.add_file(path):
                self.skip(path, "not a seqarena results file, metrics.jsonl or analysis")
        elif not self.add_dir(path, 0):
            self.skip(path, "no runs, compare or bench results, or analyses found in it")

    def add_file(self, path: Path) -> bool:
        if path.name == "metrics.jsonl":
            return self.add_dir(path.parent, MAX_DEPTH)
        if path.suffix != ".json":
            return False
        kind = _peek_kind(path)
        if kind in ANALYSIS_KINDS:
            return self.add_analysis(path)
        if path.name == "summary.json":
            return self.add_dir(path.parent, MAX_DEPTH)
        return self.add_results(path)

    def add_dir(self, d: Path, depth: int) -> bool:
        """Read what `d` holds, then search its subdirectories; True if anything was found."""
        found = False
        if (d / "summary.json").is_file():
            found |= self.add_results(d / "summary.json")
        elif (d / "metrics.jsonl").is_file() or (d / "config.json").is_file():
            if d.resolve() not in self.from_compare:
                self.add_run(d, None, None)
            found = True
        for name in RESULTS_FILES:
            if (d / name).is_file():
                found |= self.add_results(d / name)
        for kind in ANALYSIS_KINDS:
            if (d / f"{kind}.json").is_file():
                found |= self.add_analysis(d / f"{kind}.json")
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
            self.benches[path.resolve()] = Bench(source, doc["results"], records,
                                                 _floats(doc.get("peak_flops")),
                                                 _floats(doc.get("peak_bandwidth")))
        elif doc["kind"] == "train":
            for r in doc["results"]:
                self.add_run(path.parent, r, source)
        else:
            if isinstance(doc.get("held_equal"), dict):
                self.held_equal.append(_describe(doc["held_equal"]))
            for r in doc["results"]:
                run_dir = _find_run_dir(path.parent, r)
                if run_dir is not None:
                    self.from_compare.add(run_dir.resolve())
                elif r.extra.get("run_dir"):
                    self.skip(path.parent / r.extra["run_dir"],
                              f"run dir of {r.model} at L={r.seq_len} is missing; showing its "
                              "summary row only")
                self.add_run(run_dir, r, source)
        return True

    def add_run(self, run_dir: Path | None, result: RunResult | None,
                source: Source | None) -> None:
        key = run_dir.resolve() if run_dir is not None else object()
        if key in self.runs and (source is None or source.kind == "train"):
            return  # a compare summary already describes this run, with its command
        config = _read_config(run_dir, self) if run_dir is not None else {}
        metrics = _read_metrics(run_dir / "metrics.jsonl", self) if run_dir is not None else []
        model = result.model if result else _config_field(config, "model")
        task = result.task if result else _config_field(config, "task")
        seq_len = result.seq_len if result else _config_field(config, "seq_len")
        seed = result.seed if result else _config_field(config, "seed")
        if not model:
            self.skip(run_dir, "neither summary.json nor config.json names the model")
            return
        if result is None:
            if not metrics:
                self.skip(run_dir, "no summary.json and no logged steps (the run stopped before "
                                   "its first step)")
                return
            self.skip(run_dir, f"no summary.json (the run stopped before it finished); showing "
                               f"the {len(metrics)} steps it logged")
        self.runs[key] = Run(str(model), str(task or "?"), _int_or_none(seq_len),
                             _int_or_none(seed), run_dir, result, metrics, config, source)

    def add_analysis(self, path: Path) -> bool:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            self.skip(path, f"unreadable JSON ({e})")
            return True
        if not isinstance(doc, dict) or doc.get("kind") not in ANALYSIS_KINDS:
            self.skip(path, "not a seqarena analysis (no kind 'gradients' or 'attention')")
            return True
        if not isinstance(doc.get("schema_version"), int) or doc["schema_version"] > SCHEMA_VERSION:
            self.skip(path, f"written by a newer seqarena (schema {doc.get('schema_version')}, "
                            f"this one reads up to {SCHEMA_VERSION}); upgrade seqarena to read it")
            return True
        doc["path"] = str(path)
        self.analyses[path.resolve()] = doc
        return True


def _peek_kind(path: Path) -> str | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc.get("kind") if isinstance(doc, dict) else None


def _find_run_dir(compare_dir: Path, r: RunResult) -> Path | None:
    """The run dir of a compare row: extra["run_dir"], else the one subdirectory whose config
    names the same model, task, length and seed."""
    named = r.extra.get("run_dir")
    if named:
        # Written relative to the compare dir, or to wherever compare ran (then the compare dir
        # may have moved since): try both, then the run's own name inside the compare dir.
        for d in (compare_dir / named, Path(named), compare_dir / Path(named).name):
            if d.is_dir() and ((d / "config.json").is_file() or (d / "metrics.jsonl").is_file()):
                return d
        return None
    matches = []
    configs = sorted(compare_dir.glob("*/config.json")) + \
        sorted(compare_dir.glob("*/*/config.json"))
    for config_path in configs:
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        want = {"model": r.model, "task": r.task, "seq_len": r.seq_len, "seed": r.seed}
        if all(_config_field(config, k) in (v, None) for k, v in want.items()) \
                and _config_field(config, "model") == r.model:
            matches.append(config_path.parent)
    return matches[0] if len(matches) == 1 else None


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


def _config_field(config: dict[str, Any], key: str) -> Any:
    """A field of a run's config.json, flat or one level down (e.g. {"train": {...}})."""
    if key in config and not isinstance(config[key], dict):
        return config[key]
    if isinstance(config.get(key), dict) and "name" in config[key]:
        return config[key]["name"]  # e.g. {"model": {"name": "lstm", "d_model": 64}}
    for v in config.values():
        if isinstance(v, dict) and key in v and not isinstance(v[key], dict):
            return v[key]
    return None


def _read_config(run_dir: Path, c: _Collector) -> dict[str, Any]:
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        c.skip(path, f"unreadable JSON ({e})")
        return {}
    return config if isinstance(config, dict) else {}


def _read_metrics(path: Path, c: _Collector) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl; a line cut short by a crash is skipped, not fatal."""
    if not path.is_file():
        return []
    rows, bad = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad.append(i)
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
                rows.append(row)
            else:
                bad.append(i)
    if bad:
        where = f"line {bad[0]}" if len(bad) == 1 else f"lines {bad[0]}..{bad[-1]}"
        c.skip(path, f"skipped {len(bad)} malformed line{'s' if len(bad) > 1 else ''} ({where}; "
                     f"a run that stopped while writing); kept {len(rows)}")
    return rows


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
