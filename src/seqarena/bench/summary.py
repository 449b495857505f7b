"""What a sweep means: crossovers, thread and GPU speed-ups, the terminal table, CSV and JSON."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from seqarena.fileio import atomic_write_text
from seqarena.results import BenchResult, write_results
from seqarena.table import format_table

CROSSOVER_MODES = ("train", "prefill", "decode")
# what a comparison holds fixed
CONTEXT = ("batch", "d_model", "layers", "threads", "device", "dtype")


def _context_label(key: tuple) -> str:
    batch, d_model, layers, threads, device, dtype = key
    return (f"{device} {dtype}, {threads} thread{'s' * (threads != 1)}, B={batch}, D={d_model}, "
            f"{layers} layer{'s' * (layers != 1)}")


def crossovers(results: Iterable[BenchResult]) -> list[str]:
    """For each mode and pair of our architectures, the shortest L at which one overtakes the
    other (decode: the position), in one line each. Throughput decides: tokens/s. A crossover
    whose two timings overlap within their quartile spreads says so: it may be noise."""
    table: dict[tuple, dict[str, dict[int, BenchResult]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        if r.status == "ok" and r.impl == "seqarena" and r.mode in CROSSOVER_MODES:
            key = (r.mode, *(getattr(r, c) for c in CONTEXT))
            table[key][r.model][r.seq_len] = r
    several = len({key[1:] for key in table}) > 1
    lines = []
    for key in sorted(table, key=lambda k: (CROSSOVER_MODES.index(k[0]), k[1:])):
        rows = table[key]
        prefix = f"{key[0]}" + (f" [{_context_label(key[1:])}]" if several else "")
        for a, b in itertools.combinations(sorted(rows), 2):
            lengths = sorted(set(rows[a]) & set(rows[b]))
            if lengths:
                lines.append(f"{prefix}: {_crossover(a, b, lengths, rows)}")
    return lines


def _crossover(a: str, b: str, lengths: list[int], rows: dict[str, dict[int, BenchResult]]) -> str:
    speed = {m: {L: rows[m][L].tokens_per_s for L in lengths} for m in (a, b)}
    faster = [a if speed[a][L] > speed[b][L] else b for L in lengths]
    leader = faster[0]
    other = b if leader == a else a
    for i, L in enumerate(lengths):
        if faster[i] != leader:
            ratio = speed[other][L] / speed[leader][L]
            noise = "; within the timing spread" if _overlap(rows[a][L], rows[b][L]) else ""
            back = next((M for M, f in zip(lengths[i:], faster[i:]) if f == leader), None)
            again = f"; {leader} ahead again from L={back}" if back is not None else ""
            return (f"{other} overtakes {leader} at L={L} ({ratio:.2f}x; {leader} faster up to "
                    f"L={lengths[i - 1]}{noise}){again}")
    ratio = speed[leader][lengths[-1]] / speed[other][lengths[-1]]
    span = f"L={lengths[0]}" if len(lengths) == 1 else f"L={lengths[0]}..{lengths[-1]}"
    return (f"{leader} faster than {other} at every length measured ({span}; {ratio:.2f}x at "
            f"the longest)")


def _overlap(r: BenchResult, s: BenchResult) -> bool:
    """Whether the two results' latencies, each +- half its quartile spread, overlap."""
    def interval(x):
        half = 0.5 * (x.extra.get("iqr_s") or 0.0)
        return x.latency_s - half, x.latency_s + half

    (lo_r, hi_r), (lo_s, hi_s) = interval(r), interval(s)
    return lo_r <= hi_s and lo_s <= hi_r


KEY = ("model", "impl", "mode", "seq_len", "batch", "d_model", "layers", "dtype")


def _by_key(results: Iterable[BenchResult], device: str) -> dict[tuple, dict[int, float]]:
    """tokens/s of the ok results on one device type, by KEY, then by thread count."""
    groups: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in results:
        if r.status == "ok" and r.device.split(":")[0] == device:
            groups[tuple(getattr(r, k) for k in KEY)][r.threads] = r.tokens_per_s
    return groups


def thread_scaling(results: Iterable[BenchResult]) -> list[dict[str, Any]]:
    """CPU speed-up of the most threads measured over the fewest: the parallelism each
    architecture gets from more cores."""
    rows = []
    for key, speed in _by_key(results, "cpu").items():
        if len(speed) > 1:
            few, many = min(speed), max(speed)
            rows.append({**dict(zip(KEY, key)), "threads_from": few, "threads_to": many,
                         "speedup": speed[many] / speed[few]})
    return rows


def device_speedup(results: Iterable[BenchResult]) -> list[dict[str, Any]]:
    """GPU over CPU tokens/s (CPU at its most threads), per model, mode and length."""
    results = list(results)
    cpu, gpu = _by_key(results, "cpu"), _by_key(results, "cuda")
    rows = []
    for key in cpu.keys() & gpu.keys():
        threads = max(cpu[key])
        rows.append({**dict(zip(KEY, key)), "cpu_threads": threads,
                     "speedup": max(gpu[key].values()) / cpu[key][threads]})
    return sorted(rows, key=lambda row: tuple(row[k] for k in KEY))


def speedup_lines(rows: list[dict[str, Any]], what: str) -> list[str]:
    """One line per model and mode: its speed-ups along L, e.g. 'lstm train: 1.2x 1.5x ...'."""
    by_model: dict[tuple, list[str]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r["model"], r["impl"], r["mode"], r["seq_len"])):
        name = row["model"] if row["impl"] == "seqarena" else f"{row['model']} ({row['impl']})"
        by_model[(name, row["mode"])].append(f"L={row['seq_len']} {row['speedup']:.2f}x")
    return [f"{what} {name} {mode}: " + ", ".join(cells)
            for (name, mode), cells in by_model.items()]


# --- the terminal table ----------------------------------------------------------------------

TABLE_COLUMNS = [("model", "model"), ("impl", "impl"), ("mode", "mode"), ("seq_len", "L"),
                 ("batch", "B"), ("d_model", "D"), ("layers", "K"), ("threads", "thr"),
                 ("device", "device"), ("dtype", "dtype"), ("tokens_per_s", "tok/s"),
                 ("latency_ms", "ms"), ("spread_ms", "+-ms"), ("gflop", "GFLOP"),
                 ("mfu_pct", "MFU%"), ("peak_mb", "peak MB"), ("state_mb", "state MB"),
                 ("status", "status")]
FOLDABLE = ("batch", "d_model", "layers", "threads", "device", "dtype")  # shown once if constant


def table_rows(results: Iterable[BenchResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        state = r.extra.get("state_bytes")
        rows.append({
            "model": r.model, "impl": r.impl, "mode": r.mode, "seq_len": r.seq_len,
            "batch": r.batch, "d_model": r.d_model, "layers": r.layers, "threads": r.threads,
            "device": r.device, "dtype": r.dtype,
            "tokens_per_s": None if r.tokens_per_s is None else round(r.tokens_per_s),
            "latency_ms": _scaled(r.latency_s, 1e3),
            "spread_ms": _scaled(r.extra.get("iqr_s"), 1e3),
            "gflop": _scaled(r.flops, 1e-9), "mfu_pct": _scaled(r.mfu, 100),
            "peak_mb": _scaled(r.peak_mem_bytes, 2 ** -20), "state_mb": _scaled(state, 2 ** -20),
            "status": r.status})
    return rows


def _scaled(value, factor):
    return None if value is None else float(value) * factor


def format_results(results: list[BenchResult]) -> str:
    """The results table, with columns that hold one value for every row folded into a header."""
    rows = table_rows(results)
    if not rows:
        return "no results"
    folded = [c for c in FOLDABLE if len({row[c] for row in rows}) == 1]
    header = ", ".join(f"{c}={rows[0][c]}" for c in folded)
    columns = [(key, title) for key, title in TABLE_COLUMNS if key not in folded]
    table = format_table(rows, [k for k, _ in columns], [t for _, t in columns])
    return (header + "\n" + table) if header else table


# --- files -----------------------------------------------------------------------------------

def csv_text(results: list[BenchResult]) -> str:
    """One row per result: BenchResult's fields, then each key of `extra` as its own column."""
    fields = [f.name for f in dataclasses.fields(BenchResult) if f.name != "extra"]
    extras = list(dict.fromkeys(k for r in results for k in r.extra))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields + extras)
    for r in results:
        writer.writerow([getattr(r, f) for f in fields] + [r.extra.get(k) for k in extras])
    return out.getvalue()


def write_outputs(out_dir: str | os.PathLike, results: list[BenchResult],
                  peak_flops: dict[str, float], **extra: Any) -> tuple[dict[str, Any], list[Path]]:
    """bench.json (the results schema, plus peak_flops and the summaries) and bench.csv;
    returns the JSON document and both paths."""
    out = Path(out_dir)
    json_path, csv_path = out / "bench.json", out / "bench.csv"
    doc = write_results(json_path, "bench", results, peak_flops=peak_flops, **extra)
    atomic_write_text(csv_path, csv_text(results))
    return doc, [json_path, csv_path]
