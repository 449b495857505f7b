"""Charts of bench results: throughput, memory and MFU against L, the roofline, decode latency
against position, thread scaling, and the crossovers the bench found (drawn, not recomputed)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from matplotlib.ticker import FuncFormatter

from seqarena.report.collect import Bench, Source
from seqarena.report.style import (MODES, PEER_STYLES, SETTING_FIELDS, Chart, Palette, bytes_y,
                                   figure_grid, finite, legend_below, log2_x, log_y, si)
from seqarena.results import BenchResult

# what a bench crossover record holds fixed, beside its mode (as bench/summary.py writes it)
CONTEXT = ("batch", "d_model", "layers", "threads", "device", "dtype")

# --- bench ----------------------------------------------------------------------------------

def _label(r: BenchResult) -> str:
    return r.model if r.impl == "seqarena" else f"{r.model} · {r.impl}"


def _main_rows(benches: list[Bench]) -> list[tuple[BenchResult, Source]]:
    """Rows measured with all of each device's threads (thread scaling has its own chart)."""
    rows = [(r, b.source) for b in benches for r in b.results]
    most = defaultdict(int)
    for r, _ in rows:
        most[r.device] = max(most[r.device], r.threads)
    return [(r, s) for r, s in rows if r.threads == most[r.device]]


def _series(rows: list[tuple[BenchResult, Source]]) -> dict[str, list[BenchResult]]:
    """Rows grouped into lines: model and impl, plus whatever setting differs between rows."""
    varying = [f for f in SETTING_FIELDS if len({getattr(r, f) for r, _ in rows}) > 1]
    lines = defaultdict(list)
    for r, _ in rows:
        extra = ", ".join(f"{'B' if f == 'batch' else 'D' if f == 'd_model' else f}={getattr(r, f)}"
                          if f in ("batch", "d_model", "layers") else str(getattr(r, f))
                          for f in varying)
        lines[_label(r) + (f" [{extra}]" if extra else "")].append(r)
    return lines


def _line_style(rows: list[BenchResult], colour: Palette, peers: dict[str, list[str]]):
    r = rows[0]
    style = dict(color=colour(r.model), marker="o" if r.device.startswith("cpu") else "s")
    if r.impl != "seqarena":
        impls = peers[r.model]
        style["linestyle"] = PEER_STYLES[impls.index(r.impl) % len(PEER_STYLES)]
        style["markerfacecolor"] = "white"
    return style


def _peers(rows) -> dict[str, list[str]]:
    peers = defaultdict(list)
    for r, _ in rows:
        if r.impl != "seqarena" and r.impl not in peers[r.model]:
            peers[r.model].append(r.impl)
    return peers


def bench_crossovers(benches: list[Bench], mode: str) -> list[dict[str, Any]]:
    """The crossovers the bench computed and wrote (bench/summary.py) for one mode, where one
    model overtakes another, each with the overtaker's result at that length."""
    found = []
    for b in benches:
        results = {(r.model, r.mode, r.seq_len, *(getattr(r, c) for c in CONTEXT)): r
                   for r in b.results if r.impl == "seqarena" and r.status == "ok"}
        for c in b.crossovers:
            if c.get("mode") != mode or c.get("kind") != "overtakes":
                continue
            r = results.get((c["other"], mode, c["at"], *(c.get(k) for k in CONTEXT)))
            if r is not None:
                found.append({**c, "result": r})
    return found


def _ok(r: BenchResult, attr: str) -> bool:
    return r.status == "ok" and finite(getattr(r, attr)) and getattr(r, attr) > 0


def _bench_panels(benches: list[Bench], colour: Palette, attr: str, scale: float, ylabel: str,
                  title: str, y_axis: str = "log", formatter=None, mark_crossovers: bool = False):
    """A panel per mode, a line per model: attr * scale against L on a log, bytes or linear
    y axis."""
    rows = [(r, s) for r, s in _main_rows(benches) if r.mode in MODES and _ok(r, attr)]
    modes = [m for m in MODES if any(r.mode == m for r, _ in rows)]
    if not modes:
        return None, []
    fig, axes = figure_grid(len(modes))
    peers = _peers(rows)
    found = []
    for ax, mode in zip(axes, modes):
        lines = _series([(r, s) for r, s in rows if r.mode == mode])
        for name, line in sorted(lines.items(),
                                 key=lambda kv: (colour.order(kv[1][0].model), kv[0])):
            line.sort(key=lambda r: r.seq_len)
            ax.plot([r.seq_len for r in line], [getattr(r, attr) * scale for r in line],
                    label=name, **_line_style(line, colour, peers))
        failed = [(r, s) for r, s in _main_rows(benches) if r.mode == mode and r.status != "ok"]
        for r, _ in failed:
            ax.annotate(r.status.upper(), (r.seq_len, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7,
                        color=colour(r.model))
        if mark_crossovers:
            shown = {id(r) for line in lines.values() for r in line}
            labelled = []
            for c in sorted(bench_crossovers(benches, mode), key=lambda c: c["at"]):
                if id(c["result"]) not in shown:
                    continue
                found.append(c)
                y = getattr(c["result"], attr) * scale
                ax.plot([c["at"]], [y], marker="o", markersize=10, markerfacecolor="none",
                        markeredgecolor="#0f172a", markeredgewidth=1.1, linestyle="none",
                        zorder=5)
                # Label a crossing only if no label sits within 0.7 octave, so labels never overlap.
                if all(abs(math.log2(c["at"] / x)) > 0.7 for x in labelled):
                    labelled.append(c["at"])
                    ax.annotate(f"L={si(c['at'])}", (c["at"], y), xytext=(7, 7),
                                textcoords="offset points", fontsize=8, color="#0f172a")
        log2_x(ax)
        if y_axis == "log":
            log_y(ax, [getattr(r, attr) * scale for r, _ in rows if r.mode == mode], formatter)
        elif y_axis == "bytes":
            bytes_y(ax)
        elif formatter:
            ax.yaxis.set_major_formatter(FuncFormatter(formatter))
        ax.set_title(f"{title}: {mode}")
        ax.set_xlabel("sequence length L (tokens)")
        ax.set_ylabel(ylabel)
    legend_below(fig, axes)
    return fig, found


def bench_charts(benches: list[Bench], colour: Palette
                 ) -> tuple[list[Chart], list[dict[str, Any]]]:
    sources = [b.source for b in benches if b.results]
    charts, found = [], []
    fig, found = _bench_panels(benches, colour, "tokens_per_s", 1.0, "throughput (tokens/s)",
                               "Throughput", mark_crossovers=True)
    if fig:
        charts.append(Chart("throughput", "Speed", "Throughput against sequence length", fig,
                            "Tokens per second (median of rounds, every contender timed in each) "
                            "on log-log axes; higher is better. Circles mark the shortest length "
                            "at which one model overtakes another, as the bench found it.",
                            sources))
    fig, _ = _bench_panels(benches, colour, "peak_mem_bytes", 1.0, "peak memory (bytes)",
                           "Peak memory", y_axis="bytes")
    if fig:
        charts.append(Chart("memory", "Memory", "Peak memory against sequence length", fig,
                            "Memory above the baseline during one measured step (CUDA allocator "
                            "peak on GPU, sampled resident memory on CPU); lower is better.",
                            sources))
    fig, _ = _bench_panels(benches, colour, "mfu", 100.0, "MFU (% of measured matmul peak)",
                           "Model FLOPs utilisation", y_axis="linear",
                           formatter=lambda v, _: f"{v:.3g}%")
    if fig:
        charts.append(Chart("mfu", "Speed", "Model FLOPs utilisation", fig,
                            "Counted model FLOP/s divided by a large matrix multiply timed in the "
                            "same run on the same device and dtype.", sources))
    roofline = roofline_chart(benches, colour)
    if roofline:
        charts.append(roofline)
    decode = decode_chart(benches, colour)
    if decode:
        charts.append(decode)
    scaling = thread_scaling_chart(benches, colour)
    if scaling:
        charts.append(scaling)
    return charts, found


def _roof_key(r: BenchResult) -> str:
    return f"{r.device}/{r.dtype}/{r.threads}t"


def roofline_chart(benches: list[Bench], colour: Palette) -> Chart | None:
    """FLOP/s against arithmetic intensity, under both roofs measured in the same run: the
    matmul peak (flat) and memory bandwidth x intensity (the slope). A dot far below both is
    latency-bound: neither compute nor memory limits it, the dependence between steps does."""
    rows = [(r, b) for b in benches for r in b.results
            if r.mode in ("train", "prefill") and _ok(r, "intensity") and _ok(r, "flops")
            and _roof_key(r) in b.peak_flops and _roof_key(r) in b.peak_bandwidth]
    if not rows:
        return None
    keys = sorted({_roof_key(r) for r, _ in rows}, key=lambda k: (-int(k.split("/")[-1][:-1]), k))
    key = keys[0]  # the most threads: one pair of roofs per chart
    rows = [(r, b) for r, b in rows if _roof_key(r) == key]
    modes = [m for m in ("train", "prefill") if any(r.mode == m for r, _ in rows)]
    fig, axes = figure_grid(len(modes))
    peak, bandwidth = rows[0][1].peak_flops[key], rows[0][1].peak_bandwidth[key]
    lengths = sorted({r.seq_len for r, _ in rows})
    for ax, mode in zip(axes, modes):
        points = [r for r, _ in rows if r.mode == mode]
        xs = [r.intensity for r in points]
        lo, hi = min(xs + [peak / bandwidth]) / 4, max(xs + [peak / bandwidth]) * 4
        grid = [lo * (hi / lo) ** (i / 64) for i in range(65)]
        ax.plot(grid, [min(peak, bandwidth * x) for x in grid], color="#0f172a", linewidth=1.2,
                label=f"roofs: {si(peak)} FLOP/s matmul, {si(bandwidth)} B/s triad")
        for r in sorted(points, key=lambda r: (colour.order(r.model), r.seq_len)):
            size = 4 + 8 * lengths.index(r.seq_len) / max(1, len(lengths) - 1)
            ax.plot([r.intensity], [r.flops / r.latency_s], marker="o" if r.impl == "seqarena"
                    else "D", markersize=size, linestyle="none", color=colour(r.model),
                    markerfacecolor=colour(r.model) if r.impl == "seqarena" else "white",
                    label=_label(r))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"Roofline: {mode} ({key})")
        ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
        ax.set_ylabel("achieved FLOP/s")
    legend_below(fig, axes)
    return Chart("roofline", "Speed", "Roofline: compute-, memory- or latency-bound", fig,
                 "One dot per model and length (larger: longer L). A dot on the slope is limited "
                 "by memory bandwidth, one on the flat roof by the matmul peak; a dot far below "
                 "both is latency-bound, as a sequential recurrence is. FLOPs are matmul FLOPs "
                 "(training = 3x forward); bytes are what each op reads and writes.",
                 list({id(b): b.source for _, b in rows}.values()))


def decode_position(r: BenchResult) -> int:
    """The position a decode row was timed at."""
    return r.position if r.position is not None else r.seq_len


def _state_bytes(r: BenchResult) -> float | None:
    return float(r.state_bytes) if finite(r.state_bytes) else None


def decode_chart(benches: list[Bench], colour: Palette) -> Chart | None:
    rows = [(r, s) for r, s in _main_rows(benches) if r.mode == "decode" and _ok(r, "latency_s")]
    if not rows:
        return None
    with_state = [(r, s) for r, s in rows if _state_bytes(r) is not None]
    fig, axes = figure_grid(2 if with_state else 1)
    peers = _peers(rows)
    lines = _series(rows)
    for name, line in sorted(lines.items(), key=lambda kv: (colour.order(kv[1][0].model), kv[0])):
        line.sort(key=decode_position)
        style = _line_style(line, colour, peers)
        axes[0].plot([decode_position(r) for r in line], [r.latency_s * 1e3 for r in line],
                     label=name, **style)
        state = [(decode_position(r), _state_bytes(r)) for r in line if _state_bytes(r) is not None]
        if with_state and state:
            x, y = zip(*state)
            axes[1].plot(x, y, label=name, **style)
    axes[0].set_title("Per-token decode latency")
    axes[0].set_ylabel("latency (ms per token)")
    log_y(axes[0], [r.latency_s * 1e3 for r, _ in rows], lambda v, _: f"{v:.3g}")
    if with_state:
        axes[1].set_title("State held while decoding")
        axes[1].set_ylabel("KV cache or recurrent state (bytes)")
        bytes_y(axes[1])
    for ax in axes:
        log2_x(ax)
        ax.set_xlabel("position in the sequence (tokens already seen)")
    legend_below(fig, axes)
    return Chart("decode", "Inference", "Decode latency against position", fig,
                 "Median time to produce one token at each position: a recurrent state costs the "
                 "same at every position, a KV cache grows with it.",
                 [b.source for b in benches if any(r.mode == "decode" for r in b.results)])


def thread_scaling_chart(benches: list[Bench], colour: Palette) -> Chart | None:
    """Speed-up from 1 thread to all threads: the parallelism each architecture gets on a CPU."""
    rows = [(r, b.source) for b in benches for r in b.results
            if r.mode in MODES and r.device.startswith("cpu") and _ok(r, "tokens_per_s")]
    threads = sorted({r.threads for r, _ in rows})
    if len(threads) < 2:
        return None
    def key(r):
        return r.model, r.impl, r.mode, r.seq_len, r.batch, r.d_model, r.layers, r.dtype

    one = {key(r): r.tokens_per_s for r, _ in rows if r.threads == threads[0]}
    full = [(r, s) for r, s in rows if r.threads == threads[-1] and key(r) in one]
    modes = [m for m in MODES if any(r.mode == m for r, _ in full)]
    if not modes:
        return None
    fig, axes = figure_grid(len(modes))
    peers = _peers(full)
    for ax, mode in zip(axes, modes):
        for name, line in sorted(_series([(r, s) for r, s in full if r.mode == mode]).items(),
                                 key=lambda kv: (colour.order(kv[1][0].model), kv[0])):
            line.sort(key=lambda r: r.seq_len)
            ax.plot([r.seq_len for r in line], [r.tokens_per_s / one[key(r)] for r in line],
                    label=name, **_line_style(line, colour, peers))
        ax.axhline(threads[-1] / threads[0], color="#94a3b8", linestyle=(0, (4, 3)), linewidth=1)
        log2_x(ax)
        ax.set_title(f"Thread scaling: {mode}")
        ax.set_xlabel("sequence length L (tokens)")
        ax.set_ylabel(f"speed-up, {threads[-1]} threads over {threads[0]} (×)")
    legend_below(fig, axes)
    return Chart("thread_scaling", "Speed", "Parallel speed-up on the CPU", fig,
                 f"Throughput with {threads[-1]} threads divided by throughput with {threads[0]}; "
                 "the dashed line is perfect scaling.", [b.source for b in benches])
