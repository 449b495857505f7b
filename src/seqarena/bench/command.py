"""`seqarena bench` as library calls: options -> SweepConfig -> sweep -> files and text."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from seqarena.bench.ledger import break_even, ledger, map_grid
from seqarena.bench.openmp import load_average
from seqarena.bench.summary import (baseline_lines, baseline_ratios, crossovers, device_speedup,
                                    format_results, peer_ratios, speedup_lines, thread_scaling,
                                    write_outputs)
from seqarena.bench.sweep import SweepConfig, all_cores, quick_layer, run_sweep
from seqarena.config import default, layered
from seqarena.errors import UserError
from seqarena.results import BenchResult, machine_info, read_results


def parse_list(flag: str, text: str | None, kind: type = str) -> tuple | None:
    """Split "a,b,c" into a tuple of `kind`; --threads also takes "all" (every core)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = tuple(all_cores() if (flag == "--threads" and t == "all") else kind(t)
                       for t in items)
    except ValueError:
        raise UserError(f"{flag} expects a comma-separated list of {kind.__name__}s, "
                        f"got {text!r}") from None
    if not values:
        raise UserError(f"{flag} is empty; give at least one value")
    if kind is int and any(v <= 0 for v in values):
        raise UserError(f"{flag} values must be positive, got {text!r}")
    return values


def config_from_options(quick: bool = False, file_layer: dict[str, Any] | None = None,
                        where: str = "flags", **options: Any) -> SweepConfig:
    """The sweep's settings: SweepConfig's defaults < --quick's < a TOML file < the options
    given (None: not given), as every command layers its config (seqarena.config)."""
    given = {k: v for k, v in options.items() if v is not None}
    return layered(SweepConfig, quick_layer() if quick else {}, file_layer or {}, given,
                   where=where)


def defaults_text() -> dict[str, str]:
    """What `seqarena bench --help` lists as defaults, read from SweepConfig and --quick."""
    def text(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

    quick, shown = quick_layer(), {}
    for f in dataclasses.fields(SweepConfig):
        shown[f.name] = text(default(SweepConfig, f.name)) or _CHOSEN_AT_RUN_TIME.get(f.name, "-")
        if f.name in quick:
            shown[f.name] += f" (quick: {text(quick[f.name])})"
    return shown


# what an empty tuple in SweepConfig stands for (see its field comments)
_CHOSEN_AT_RUN_TIME = {"models": "every registered model", "threads": "1 and every core",
                       "devices": "cpu, and cuda when a GPU is visible", "peers": "none"}


def default_out() -> Path:
    return Path("runs") / time.strftime("bench-%Y%m%d-%H%M%S")


@dataclass
class BenchRun:
    """A finished sweep: its results, the document written to bench.json, and the files."""

    results: list[BenchResult]
    doc: dict[str, Any]
    files: list[Path]
    out: Path  # the directory they were written into


def read_bench(path: str | Path, use: str) -> dict[str, Any]:
    """A bench.json read back, one line if it is another results file; `use` names its role."""
    doc = read_results(path)
    if doc.get("kind") != "bench":
        raise UserError(f"{path}: {use} must be a bench.json, this is a {doc.get('kind')} "
                        f"results file")
    return doc


def read_baseline(path: str | Path) -> list[BenchResult]:
    """The results of an earlier bench.json, to compare against (one line if it is not one)."""
    return read_bench(path, "a baseline")["results"]


def bench(config: SweepConfig, out: str | Path | None = None,
          on_result: Callable[[BenchResult], None] | None = None,
          baseline: str | Path | None = None) -> BenchRun:
    """Run the sweep, then write bench.json and bench.csv into `out` (default runs/bench-*);
    with `baseline` (an earlier bench.json), each point is also set against its figure there."""
    old = read_baseline(baseline) if baseline is not None else None
    started, load = time.perf_counter(), load_average()
    report = run_sweep(config, on_result)
    if load >= 0.5 * all_cores():
        report.note(f"the machine was busy when the sweep started (load average {load:.1f} on "
                    f"{all_cores()} cores): timings are noisy and more threads can look slower")
    summary = {
        "crossovers": crossovers(report.results),
        "peer_ratios": peer_ratios(report.results),
        "thread_scaling": thread_scaling(report.results),
        "device_speedup": device_speedup(report.results),
        "peak_paths": report.peak_paths,
        "peak_bandwidth": report.peak_bandwidth,
        "notes": report.notes,
        "sweep": dataclasses.asdict(config),
        "wall_s": time.perf_counter() - started,
    }
    summary["serving"] = serving(report.results, report.note)
    if old is not None:
        summary["baseline"] = {"path": str(baseline),
                               "points": baseline_ratios(report.results, old)}
    out = Path(out) if out is not None else default_out()
    machine = {**machine_info(), "load_average": load, "omp_wait_policy": os.environ.get(
        "OMP_WAIT_POLICY")}
    doc, files = write_outputs(out, report.results, report.peak_flops, machine=machine, **summary)
    return BenchRun(report.results, doc, files, out)


def serving(results: list[BenchResult], note: Callable[[str], None]) -> dict[str, list] | None:
    """The serving ledger of a sweep that timed prefill and decode: every model's request cost
    at each measured prompt length P and G = 1, 2, 4, ... generated tokens, and the break-even
    G of each recurrence against attention (seqarena.bench.ledger)."""
    modes = {r.mode for r in results if r.status == "ok"}
    if not {"prefill", "decode"} <= modes:
        return None
    prompts, generated = map_grid(results)
    try:
        rows, breaks = ledger(results, prompts, generated), break_even(results, prompts)
    except UserError as e:
        note(f"no serving ledger: {e}")
        return None
    return {"ledger": [dataclasses.asdict(r) for r in rows],
            "break_even": [dataclasses.asdict(b) for b in breaks]}


def serving_lines(serving: dict | None) -> list[str]:
    """The break-even lines that could be computed, then how many prompts lay beyond."""
    breaks = (serving or {}).get("break_even", [])
    said = [f"{b['text']} (vs {b['attention']})" for b in breaks if b["up_to"] is not None]
    beyond = sorted({b["prompt"] for b in breaks if b["up_to"] is None})
    if beyond:
        said.append(f"P={', '.join(map(str, beyond))}: no decode position measured beyond the "
                    f"prompt; a sweep with longer decode positions (--seq-lens) computes these")
    return said


def render(run: BenchRun) -> str:
    """The terminal view: the table, peaks, crossovers, speed-ups, notes and where files went."""
    doc = run.doc
    lines = [format_results(run.results), ""]
    lines += ["machine peak (best large matmul), MFU's denominator:"]
    lines += [f"  {key} {flops / 1e9:.1f} GFLOP/s (" + ", ".join(
        f"{path} {f / 1e9:.1f}" for path, f in doc["peak_paths"].get(key, {}).items()) + ")"
        for key, flops in doc["peak_flops"].items()]
    lines += ["memory bandwidth (STREAM triad), the second roof:"]
    lines += [f"  {key} {bw / 1e9:.1f} GB/s" for key, bw in doc["peak_bandwidth"].items()]
    crossing = [c["text"] for c in doc["crossovers"] if c["kind"] == "overtakes"]
    steady = len(doc["crossovers"]) - len(crossing)
    if steady:
        crossing.append(f"{steady} other pairs: the same one faster at every length measured "
                        f"(each in bench.json)")
    baseline = doc.get("baseline")
    sections = [("crossovers", crossing),
                ("ours over peers (median of per-round ratios [interval])",
                 [row["text"] for row in doc["peer_ratios"]]),
                (f"against the baseline {baseline['path']}" if baseline else "",
                 baseline_lines(baseline["points"]) if baseline else []),
                ("thread scaling", speedup_lines(doc["thread_scaling"], "threads")),
                ("GPU over CPU", speedup_lines(doc["device_speedup"], "GPU/CPU")),
                ("serving: from which G a recurrence costs no more than attention (decode "
                 "latencies interpolated between the timed positions)",
                 serving_lines(doc.get("serving"))),
                ("notes", doc["notes"])]
    for title, items in sections:
        if items:
            lines += ["", f"{title}:"] + [f"  {item}" for item in items]
    lines += ["", f"{doc['wall_s']:.0f} s; wrote " + ", ".join(str(f) for f in run.files)]
    return "\n".join(lines)
