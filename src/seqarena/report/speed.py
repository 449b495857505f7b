"""Charts of bench results: throughput, memory and MFU against L, decode latency against
position, thread scaling, and where a recurrent and an attention model cross."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from matplotlib.ticker import FuncFormatter

from seqarena.report.collect import Bench, Source
from seqarena.report.style import (MODES, PEER_STYLES, SETTING_FIELDS, Chart, Palette, bytes_y,
                                   figure_grid, finite, legend_below, log2_x, log_y, si)
from seqarena.results import BenchResult

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


@dataclass
class Crossover:
    mode: str
    winner: str  # the line that is ahead at long L
    loser: str
    between: tuple[int, int]  # the two measured lengths the lines cross between
    at: float  # the crossing, interpolated on the log-log chart
    value: float  # tokens/s at the crossing

    def sentence(self) -> str:
        lo, hi = self.between
        return (f"{self.mode}: {self.winner} overtakes {self.loser} between L = {lo:,} and "
                f"L = {hi:,} (about L = {self.at:,.0f})")


def crossovers(lines: dict[str, list[BenchResult]], mode: str) -> list[Crossover]:
    """Where a recurrent line and an attention line swap places in throughput."""
    points = {k: {r.seq_len: r.tokens_per_s for r in v} for k, v in lines.items()}
    found = []
    names = sorted(lines)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if lines[a][0].family == lines[b][0].family:
                continue
            common = sorted(set(points[a]) & set(points[b]))
            ratio = [math.log(points[a][L] / points[b][L]) for L in common]
            for j in range(len(common) - 1):
                if ratio[j] * ratio[j + 1] < 0:
                    t = ratio[j] / (ratio[j] - ratio[j + 1])
                    lo, hi = math.log(common[j]), math.log(common[j + 1])
                    at = math.exp(lo + t * (hi - lo))
                    ya = math.log(points[a][common[j]]) + t * (
                        math.log(points[a][common[j + 1]]) - math.log(points[a][common[j]]))
                    winner, loser = (a, b) if ratio[j + 1] > 0 else (b, a)
                    found.append(Crossover(mode, winner, loser, (common[j], common[j + 1]), at,
                                           math.exp(ya)))
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
            labelled = []
            for c in sorted(crossovers(lines, mode), key=lambda c: c.at):
                found.append(c)
                ax.plot([c.at], [c.value * scale], marker="o", markersize=10,
                        markerfacecolor="none", markeredgecolor="#0f172a", markeredgewidth=1.1,
                        linestyle="none", zorder=5)
                # Label a crossing only if no label sits within 0.7 octave, so labels never overlap.
                if all(abs(math.log2(c.at / x)) > 0.7 for x in labelled):
                    labelled.append(c.at)
                    ax.annotate(f"L≈{si(c.at)}", (c.at, c.value * scale), xytext=(7, 7),
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


def bench_charts(benches: list[Bench], colour: Palette) -> tuple[list[Chart], list[Crossover]]:
    sources = [b.source for b in benches if b.results]
    charts, found = [], []
    fig, found = _bench_panels(benches, colour, "tokens_per_s", 1.0, "throughput (tokens/s)",
                               "Throughput", mark_crossovers=True)
    if fig:
        charts.append(Chart("throughput", "Speed", "Throughput against sequence length", fig,
                            "Tokens per second (median of repeated timings) on log-log axes; "
                            "higher is better. Circles mark where a recurrent and an attention "
                            "model swap places.", sources))
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
    decode = decode_chart(benches, colour)
    if decode:
        charts.append(decode)
    scaling = thread_scaling_chart(benches, colour)
    if scaling:
        charts.append(scaling)
    return charts, found


def decode_position(r: BenchResult) -> int:
    """The position a decode row was timed at (the bench keeps it in extra)."""
    for k in ("position", "pos", "decode_position", "context"):
        if finite(r.extra.get(k)):
            return int(r.extra[k])
    return r.seq_len


def _state_bytes(r: BenchResult) -> float | None:
    for k in ("state_bytes", "cache_bytes", "kv_cache_bytes"):
        if finite(r.extra.get(k)):
            return float(r.extra[k])
    return None


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
