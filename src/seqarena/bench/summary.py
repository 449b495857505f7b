"""What a sweep means: crossovers, ratios to peers and to a baseline, thread and GPU speed-ups,
the terminal table, CSV and JSON. Computed here once; bench.json holds them as named records and
the report draws those."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import math
import os
import statistics
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


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median: the order statistics x_(k) and x_(n+1-k)
    with the largest k whose binomial tails stay within 1 - confidence; with few values
    (n < 6 at 95 %) the full range, which covers the median with probability 1 - 2^(1-n)."""
    xs, n = sorted(values), len(values)
    k, tail = 0, 0.0
    while k < n // 2:
        p = math.comb(n, k) / 2 ** n
        if 2 * (tail + p) > 1 - confidence:
            break
        tail, k = tail + p, k + 1
    k = max(k, 1)
    return xs[k - 1], xs[n - k]


def speed_ratio(a: BenchResult, b: BenchResult) -> dict[str, Any]:
    """a's speed over b's at the same point: the median of the per-round ratios (each round
    timed both side by side), with its interval; from the medians alone when rounds are
    missing (then low = high = None)."""
    if a.round_s and len(a.round_s) == len(b.round_s):
        ratios = [tb / ta for ta, tb in zip(a.round_s, b.round_s)]
        low, high = median_interval(ratios)
        return {"ratio": statistics.median(ratios), "low": low, "high": high,
                "rounds": len(ratios)}
    return {"ratio": a.tokens_per_s / b.tokens_per_s, "low": None, "high": None, "rounds": 0}


def _interval_text(r: dict[str, Any]) -> str:
    return "" if r["low"] is None else f" [{r['low']:.2f}-{r['high']:.2f}]"


def _within_noise(r: dict[str, Any], a: BenchResult, b: BenchResult) -> bool:
    """Whether the ratio's interval holds 1 (or, without rounds, the quartile spreads overlap)."""
    if r["low"] is not None:
        return r["low"] <= 1.0 <= r["high"]
    return _overlap(a, b)


def _context(key: tuple) -> dict[str, Any]:
    return dict(zip(CONTEXT, key))


def crossovers(results: Iterable[BenchResult]) -> list[dict[str, Any]]:
    """For each mode and pair of our architectures, the shortest L at which one overtakes the
    other (decode: the position), or that one leads at every length. Throughput decides:
    tokens/s, as the median of per-round ratios. Each crossover is a record with named fields
    (the report draws these) and its line of text; one whose interval holds 1 says so."""
    table: dict[tuple, dict[str, dict[int, BenchResult]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        if r.status == "ok" and r.impl == "seqarena" and r.mode in CROSSOVER_MODES:
            key = (r.mode, *(getattr(r, c) for c in CONTEXT))
            table[key][r.model][r.seq_len] = r
    several = len({key[1:] for key in table}) > 1
    records = []
    for key in sorted(table, key=lambda k: (CROSSOVER_MODES.index(k[0]), k[1:])):
        rows = table[key]
        prefix = f"{key[0]}" + (f" [{_context_label(key[1:])}]" if several else "")
        for a, b in itertools.combinations(sorted(rows), 2):
            lengths = sorted(set(rows[a]) & set(rows[b]))
            if lengths:
                record = {"mode": key[0], **_context(key[1:]),
                          **_crossover(a, b, lengths, rows)}
                record["text"] = f"{prefix}: {record['text']}"
                records.append(record)
    return records


def _crossover(a: str, b: str, lengths: list[int],
               rows: dict[str, dict[int, BenchResult]]) -> dict[str, Any]:
    ratio = {L: speed_ratio(rows[a][L], rows[b][L]) for L in lengths}  # a over b
    faster = [a if ratio[L]["ratio"] > 1 else b for L in lengths]
    leader = faster[0]
    other = b if leader == a else a

    def of(winner, L):  # winner's speed over the loser's, with its interval
        r = ratio[L]
        if winner == a:
            return r
        flip = {"ratio": 1 / r["ratio"], "rounds": r["rounds"], "low": None, "high": None}
        if r["low"] is not None:
            flip["low"], flip["high"] = 1 / r["high"], 1 / r["low"]
        return flip

    for i, L in enumerate(lengths):
        if faster[i] != leader:
            r = of(other, L)
            noise = _within_noise(r, rows[a][L], rows[b][L])
            back = next((M for M, f in zip(lengths[i:], faster[i:]) if f == leader), None)
            again = f"; {leader} ahead again from L={back}" if back is not None else ""
            text = (f"{other} overtakes {leader} at L={L} ({r['ratio']:.2f}x{_interval_text(r)}; "
                    f"{leader} faster up to L={lengths[i - 1]}"
                    f"{'; within the timing spread' if noise else ''}){again}")
            return {"kind": "overtakes", "leader": leader, "other": other, "at": L,
                    "up_to": lengths[i - 1], "again_at": back, "ratio": r["ratio"],
                    "low": r["low"], "high": r["high"], "within_noise": noise, "text": text}
    last = lengths[-1]
    r = of(leader, last)
    span = f"L={lengths[0]}" if len(lengths) == 1 else f"L={lengths[0]}..{last}"
    text = (f"{leader} faster than {other} at every length measured ({span}; "
            f"{r['ratio']:.2f}x{_interval_text(r)} at the longest)")
    return {"kind": "steady", "leader": leader, "other": other, "at": None, "up_to": last,
            "again_at": None, "ratio": r["ratio"], "low": r["low"], "high": r["high"],
            "within_noise": _within_noise(r, rows[a][last], rows[b][last]), "text": text}


def _overlap(r: BenchResult, s: BenchResult) -> bool:
    """Whether the two results' latencies, each +- half its quartile spread, overlap."""
    def interval(x):
        half = 0.5 * (x.iqr_s or 0.0)
        return x.latency_s - half, x.latency_s + half

    (lo_r, hi_r), (lo_s, hi_s) = interval(r), interval(s)
    return lo_r <= hi_s and lo_s <= hi_r


def peer_ratios(results: Iterable[BenchResult]) -> list[dict[str, Any]]:
    """Our model's speed over each peer of its architecture at every point both ran."""
    ours: dict[tuple, BenchResult] = {}
    peers: list[BenchResult] = []
    for r in results:
        if r.status == "ok":
            if r.impl == "seqarena":
                ours[_point(r)] = r
            elif not r.impl.startswith("seqarena"):
                peers.append(r)
    rows = []
    for p in peers:
        mine = ours.get(_point(p))
        if mine is not None:
            r = speed_ratio(mine, p)
            rows.append({"model": p.model, "peer": p.impl, "mode": p.mode, "seq_len": p.seq_len,
                         **{c: getattr(p, c) for c in CONTEXT}, **r,
                         "text": f"{p.model} {p.mode} L={p.seq_len}: {r['ratio']:.2f}x"
                                 f"{_interval_text(r)} {p.impl}"})
    return rows


def _point(r: BenchResult) -> tuple:
    return (r.model, r.mode, r.seq_len, *(getattr(r, c) for c in CONTEXT))


def baseline_ratios(results: Iterable[BenchResult], old: list[BenchResult]) -> list[dict]:
    """Each point's speed now over the baseline's, with an interval from both runs' rounds
    (the ratio of the intervals' far ends); `moved` when the interval excludes 1."""
    before = {(r.impl, *_point(r)): r for r in old if r.status == "ok"}
    rows = []
    for r in results:
        b = before.get((r.impl, *_point(r)))
        if r.status != "ok" or b is None:
            continue
        ratio = b.latency_s / r.latency_s
        low = high = None
        if r.round_s and b.round_s:
            (new_lo, new_hi), (old_lo, old_hi) = median_interval(r.round_s), \
                median_interval(b.round_s)
            low, high = old_lo / new_hi, old_hi / new_lo
        moved = None if low is None else ("faster" if low > 1 else "slower" if high < 1 else None)
        rows.append({"model": r.model, "impl": r.impl, "mode": r.mode, "seq_len": r.seq_len,
                     **{c: getattr(r, c) for c in CONTEXT}, "ratio": ratio, "low": low,
                     "high": high, "moved": moved})
    return rows


def baseline_lines(rows: list[dict]) -> list[str]:
    """One line per point: now / before, its interval, and a flag when it moved past the noise."""
    lines = []
    for row in rows:
        name = row["model"] if row["impl"] == "seqarena" else f"{row['model']} ({row['impl']})"
        flag = f"  <- {row['moved'].upper()}" if row["moved"] else ""
        lines.append(f"{name} {row['mode']} L={row['seq_len']}: {row['ratio']:.2f}x"
                     f"{_interval_text(row)} of the baseline{flag}")
    return lines


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
                 ("mfu_pct", "MFU%"), ("mbu_pct", "BW%"), ("intensity", "FLOP/B"),
                 ("peak_mb", "peak MB"), ("state_mb", "state MB"),
                 ("status", "status")]
FOLDABLE = ("batch", "d_model", "layers", "threads", "device", "dtype")  # shown once if constant


def table_rows(results: Iterable[BenchResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        rows.append({
            "model": r.model, "impl": r.impl, "mode": r.mode, "seq_len": r.seq_len,
            "batch": r.batch, "d_model": r.d_model, "layers": r.layers, "threads": r.threads,
            "device": r.device, "dtype": r.dtype,
            "tokens_per_s": None if r.tokens_per_s is None else round(r.tokens_per_s),
            "latency_ms": _scaled(r.latency_s, 1e3),
            "spread_ms": _scaled(r.iqr_s, 1e3),
            "gflop": _scaled(r.flops, 1e-9), "mfu_pct": _scaled(r.mfu, 100),
            "mbu_pct": _scaled(r.mbu, 100), "intensity": r.intensity,
            "peak_mb": _scaled(r.peak_mem_bytes, 2 ** -20), "state_mb": _scaled(r.state_bytes, 2 ** -20),
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
    """One row per result, one column per BenchResult field."""
    fields = [f.name for f in dataclasses.fields(BenchResult)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for r in results:
        writer.writerow([_cell(getattr(r, f)) for f in fields])
    return out.getvalue()


def _cell(value: Any) -> Any:
    return ";".join(f"{v:.6g}" for v in value) if isinstance(value, list) else value


def write_outputs(out_dir: str | os.PathLike, results: list[BenchResult],
                  peak_flops: dict[str, float], **extra: Any) -> tuple[dict[str, Any], list[Path]]:
    """bench.json (the results schema, plus peak_flops and the summaries) and bench.csv;
    returns the JSON document and both paths."""
    out = Path(out_dir)
    json_path, csv_path = out / "bench.json", out / "bench.csv"
    doc = write_results(json_path, "bench", results, peak_flops=peak_flops, **extra)
    atomic_write_text(csv_path, csv_text(results))
    return doc, [json_path, csv_path]
