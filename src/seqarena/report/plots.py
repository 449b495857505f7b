"""The report's charts, drawn with matplotlib (no pyplot: no global figure state, no display).

One colour per model for the whole report: the recurrent family in blues and teals, the attention
family in oranges and reds, so "recurrent against attention" reads off a chart before its legend.
Peers (the same architecture from another library) share their model's colour, dashed.
Every axis names its unit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from seqarena.report.collect import Bench, Run, Source
from seqarena.results import BenchResult

STYLE = {
    "font.family": "DejaVu Sans",  # ships with matplotlib, so every machine draws the same glyphs
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9.5,
    "axes.labelcolor": "#334155",
    "axes.edgecolor": "#94a3b8",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e2e8f0",
    "grid.linewidth": 0.7,
    "xtick.color": "#475569",
    "ytick.color": "#475569",
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "lines.linewidth": 1.8,
    "lines.markersize": 4.5,
    "figure.dpi": 100,
    "savefig.dpi": 160,
    "svg.fonttype": "path",  # text as outlines: the inline SVG needs no font at all
    "svg.hashsalt": "seqarena",  # stable ids, so the same data gives the same file
}

RECURRENT = ["#1e3a8a", "#2563eb", "#0ea5e9", "#0d9488", "#6366f1", "#0369a1", "#14b8a6", "#7dd3fc"]
ATTENTION = ["#ea580c", "#dc2626", "#d97706", "#be185d", "#f97316", "#9a3412"]
OTHER = ["#7c3aed", "#475569", "#65a30d", "#a21caf"]
# Fixed slots for the built-in names, so lstm is the same blue in every report.
KNOWN_ORDER = ["rnn", "lstm", "gru", "mingru", "minlstm", "rnn-ed", "transformer", "transformer-ed"]
PEER_STYLES = ["--", ":", "-."]
MODES = ("train", "forward", "prefill")
SETTING_FIELDS = ("device", "dtype", "batch", "d_model", "layers")  # what else a bench row varies


def _colours(model: str) -> list[str]:
    return {"recurrent": RECURRENT, "attention": ATTENTION}.get(family(model), OTHER)


def model_order(model: str) -> tuple:
    """Recurrent models first, then attention, then others; built-in names in a fixed order."""
    rank = {"recurrent": 0, "attention": 1}.get(family(model), 2)
    return rank, KNOWN_ORDER.index(model) if model in KNOWN_ORDER else len(KNOWN_ORDER), model


def family(model: str) -> str:
    """"recurrent", "attention" or "other", read from the model's name."""
    m = model.lower()
    if any(k in m for k in ("rnn", "lstm", "gru", "mamba", "scan", "ssm", "rwkv", "recur")):
        return "recurrent"
    if any(k in m for k in ("transformer", "attention", "attn", "encoder", "decoder", "gpt",
                            "bert", "sdpa")):
        return "attention"
    return "other"


class Palette:
    """Model name -> colour. Built-in names keep their colour in every report; other names take
    the free colours of their family in name order."""

    def __init__(self, models: Iterable[str]):
        self.colours = {}
        used = defaultdict(set)
        for m in KNOWN_ORDER:
            slot = [k for k in KNOWN_ORDER if family(k) == family(m)].index(m)
            self.colours[m] = _colours(m)[slot % len(_colours(m))]
            used[family(m)].add(self.colours[m])
        for m in sorted(set(models) - set(KNOWN_ORDER), key=model_order):
            free = [c for c in _colours(m) if c not in used[family(m)]] or _colours(m)
            self.colours[m] = free[0]
            used[family(m)].add(free[0])

    def __call__(self, model: str) -> str:
        return self.colours.get(model, "#64748b")


@dataclass
class Chart:
    """One figure of the report with what a reader should look for and where it came from."""

    slug: str  # file name of the PNG/SVG copies
    section: str
    title: str
    fig: Figure
    note: str  # what to look for, one or two sentences
    sources: list[Source] = field(default_factory=list)


# --- helpers --------------------------------------------------------------------------------

FULL_WIDTH = 11.3  # inches: the report's content column, so text shows at its real size
NARROW_WIDTH = 7.4


def _figure(panels: int, height: float = 3.5, max_cols: int = 3):
    cols = min(panels, max_cols)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(FULL_WIDTH if panels > 1 else NARROW_WIDTH, height * rows),
                 layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, list(axes[:panels])


def _legend(fig: Figure, axes) -> None:
    """One legend for the figure, below the panels, with each label once."""
    seen = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if not label.startswith("_"):
                seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center",
                   ncols=min(len(seen), 6), handlelength=2.4)


def _log2_x(ax) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _si(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _log_y(ax, values, formatter=None) -> None:
    """Log y axis; ticks at 1-2-5 when the data spans few decades, at powers of 10 otherwise."""
    ax.set_yscale("log")
    values = [v for v in values if _finite(v) and v > 0]
    decades = math.log10(max(values) / min(values)) if values else 0
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)))
    ax.yaxis.set_major_formatter(FuncFormatter(formatter or (lambda v, _: _si(v))))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _bytes_y(ax) -> None:
    """Log-2 y axis in bytes with binary units: memory comes in powers of two."""
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_locator(LogLocator(base=2, numticks=8))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _binary(v)))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _binary(v: float) -> str:
    for div, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if v >= div:
            return f"{v / div:.3g} {unit}"
    return f"{v:.3g} B"


def _si(v: float) -> str:
    """1500 -> "1.5K": short tick labels."""
    if v == 0:
        return "0"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def _ema(y: np.ndarray, span: int) -> np.ndarray:
    alpha, out, acc = 2.0 / (span + 1), np.empty_like(y), y[0]
    for i, v in enumerate(y):
        acc = alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --- training -------------------------------------------------------------------------------

STANDARD_KEYS = {"step", "loss", "lr", "grad_norm", "tokens_per_s", "wall_s", "epoch", "tokens",
                 "split", "time", "schema_version"}


def metric_key(run: Run) -> str | None:
    """The metrics.jsonl key that holds this run's task metric."""
    names = {k for row in run.metrics for k, v in row.items()
             if k not in STANDARD_KEYS and _finite(v)}
    want = run.result.metric_name if run.result else None
    for k in ([want, f"val_{want}", f"val/{want}", f"eval_{want}"] if want else []):
        if k in names:
            return k
    return sorted(names)[0] if names else None


def _run_label(run: Run, many_seeds: bool) -> str:
    label = run.model
    if many_seeds and run.seed is not None:
        label += f" (seed {run.seed})"
    if run.result is None:
        label += " (stopped)"
    return label


def training_curves(runs: list[Run], colour: Palette) -> list[Chart]:
    """Loss and metric against step, per task and length; all models on the same axes."""
    groups = defaultdict(list)
    for r in runs:
        if r.metrics:
            groups[(r.task, r.seq_len)].append(r)
    charts = []
    for (task, seq_len), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        keys = {id(r): metric_key(r) for r in group}
        # A metric logged once (only at the end) is a point, not a curve: the summary shows it.
        has_metric = any(sum(_finite(row.get(keys[id(r)])) for row in r.metrics) > 1
                         for r in group if keys[id(r)])
        fig, axes = _figure(2 if has_metric else 1)
        seeds = defaultdict(int)
        for r in group:
            seeds[r.model] += 1
        labelled = set()
        for r in sorted(group, key=lambda r: (model_order(r.model), r.seed or 0)):
            style = dict(color=colour(r.model), linestyle="-" if r.result else "--")
            label = r.model + ("" if r.result else " (stopped)")
            label = label if label not in labelled else "_" + label
            labelled.add(label)
            steps = np.array([row["step"] for row in r.metrics if _finite(row.get("loss"))], float)
            loss = np.array([row["loss"] for row in r.metrics if _finite(row.get("loss"))], float)
            if len(loss):
                if len(loss) >= 20:  # raw loss is noisy: show it faint, a smoothed line on top
                    axes[0].plot(steps, loss, alpha=0.18, linewidth=0.8, color=style["color"])
                    loss = _ema(loss, max(3, len(loss) // 15))
                axes[0].plot(steps, loss, label=label, **style)
            key = keys[id(r)]
            if has_metric and key:
                pts = [(row["step"], row[key]) for row in r.metrics if _finite(row.get(key))]
                if pts:
                    x, y = zip(*pts)
                    axes[1].plot(x, y, marker="o", label=label, **style)
        axes[0].set_title("Training loss")
        axes[0].set_xlabel("step (optimizer updates)")
        axes[0].set_ylabel("loss (task loss, smoothed)")
        all_loss = [row["loss"] for r in group for row in r.metrics
                    if _finite(row.get("loss")) and row["loss"] > 0]
        if all_loss and max(all_loss) / min(all_loss) > 20:
            _log_y(axes[0], all_loss, lambda v, _: f"{v:.3g}")
        if has_metric:
            name = next((r.result.metric_name for r in group if r.result), None) \
                or next(k for k in keys.values() if k)
            better = next((r.result.higher_is_better for r in group if r.result), None)
            axes[1].set_title(f"Held-out {name}")
            axes[1].set_xlabel("step (optimizer updates)")
            axes[1].set_ylabel(name + {True: " (higher is better)", False: " (lower is better)",
                                       None: ""}[better])
        _legend(fig, axes)
        where = f"{task}, L = {seq_len}" if seq_len else task
        charts.append(Chart(f"curves_{_slug(task)}_L{seq_len}", "Training", f"Learning curves: {where}",
                            fig, "Each model trained on the same task, length and budget. Recurrent "
                            "models are drawn in blues, attention models in oranges; dashed lines "
                            "are runs that stopped early.", _sources(group)))
    return charts


def metric_vs_length(runs: list[Run], colour: Palette) -> list[Chart]:
    """Final metric against sequence length per model (mean and spread over seeds)."""
    by_task = defaultdict(list)
    for r in runs:
        if r.result is not None and _finite(r.result.metric):
            by_task[r.task].append(r)
    charts = []
    for task, group in sorted(by_task.items()):
        res = [r.result for r in group]
        name, better = res[0].metric_name, res[0].higher_is_better
        lengths = sorted({r.seq_len for r in res})
        models = sorted({r.model for r in res}, key=model_order)
        fig, (ax,) = _figure(1, height=3.8)
        values = defaultdict(list)
        for r in res:
            values[(r.model, r.seq_len)].append(r.metric)
        if len(lengths) > 1:
            for m in models:
                xs = [L for L in lengths if (m, L) in values]
                mean = [float(np.mean(values[(m, L)])) for L in xs]
                std = [float(np.std(values[(m, L)])) for L in xs]
                ax.errorbar(xs, mean, yerr=std if any(std) else None, marker="o", capsize=3,
                            color=colour(m), label=m)
            _log2_x(ax)
            ax.set_xticks(lengths)
            ax.set_xlabel("sequence length L (tokens)")
        else:
            means = [float(np.mean(values[(m, lengths[0])])) for m in models]
            bars = ax.barh(models, means, color=[colour(m) for m in models], height=0.6)
            ax.bar_label(bars, labels=[f"{v:.4g}" for v in means], padding=3, fontsize=8.5)
            ax.invert_yaxis()
            ax.grid(axis="y", visible=False)
        baselines = {}  # the task's baselines in this metric: keys end with its name
        for r in res:
            for k, v in (r.extra.get("baselines") or {}).items():
                if _finite(v) and (k == name or k.endswith(f"_{name}")):
                    baselines.setdefault(k[: -len(name)].strip("_") or k, v)
        for i, (k, v) in enumerate(sorted(baselines.items())):
            line = ax.axhline if len(lengths) > 1 else ax.axvline
            line(v, color="#64748b", linestyle=(0, (4, 3)), linewidth=1, label=f"baseline: {k}",
                 zorder=1)
        axis_label = name + (" (higher is better)" if better else " (lower is better)")
        if len(lengths) > 1:
            ax.set_ylabel(axis_label)
            ax.set_title(f"{task}: {name} against sequence length")
            _legend(fig, [ax])
        else:
            ax.set_xlabel(axis_label)
            ax.set_title(f"{task}: {name} at L = {lengths[0]}")
            if baselines:
                ax.legend(loc="lower right")
        seeds = sorted({r.seed for r in res})
        charts.append(Chart(f"metric_vs_length_{_slug(task)}", "Accuracy", f"{task}: {name} by model"
                            + (" and length" if len(lengths) > 1 else ""), fig,
                            f"Final held-out {name} of each run ({'higher' if better else 'lower'} "
                            f"is better); seeds {', '.join(map(str, seeds))}"
                            + ("; bars show the spread over seeds" if len(seeds) > 1 else "")
                            + (". Grey dashed lines are the task's baselines." if baselines else "."),
                            _sources(group)))
    return charts


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
        return (f"{self.mode}: {self.winner} overtakes {self.loser} between L = {self.between[0]:,} "
                f"and L = {self.between[1]:,} (about L = {self.at:,.0f})")


def crossovers(lines: dict[str, list[BenchResult]], mode: str) -> list[Crossover]:
    """Where a recurrent line and an attention line swap places in throughput."""
    points = {k: {r.seq_len: r.tokens_per_s for r in v} for k, v in lines.items()}
    found = []
    names = sorted(lines)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if family(lines[a][0].model) == family(lines[b][0].model):
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
    return r.status == "ok" and _finite(getattr(r, attr)) and getattr(r, attr) > 0


def _bench_panels(benches: list[Bench], colour: Palette, attr: str, scale: float, ylabel: str,
                  title: str, y_axis: str = "log", formatter=None, mark_crossovers: bool = False):
    """A panel per mode, a line per model, y = attr * scale against L; y_axis log, bytes or linear."""
    rows = [(r, s) for r, s in _main_rows(benches) if r.mode in MODES and _ok(r, attr)]
    modes = [m for m in MODES if any(r.mode == m for r, _ in rows)]
    if not modes:
        return None, []
    fig, axes = _figure(len(modes))
    peers = _peers(rows)
    found = []
    for ax, mode in zip(axes, modes):
        lines = _series([(r, s) for r, s in rows if r.mode == mode])
        for name, line in sorted(lines.items(), key=lambda kv: (model_order(kv[1][0].model), kv[0])):
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
                ax.plot([c.at], [c.value * scale], marker="o", markersize=10, markerfacecolor="none",
                        markeredgecolor="#0f172a", markeredgewidth=1.1, linestyle="none", zorder=5)
                # Label a crossing only if no label sits within 0.7 octave, so labels never overlap.
                if all(abs(math.log2(c.at / x)) > 0.7 for x in labelled):
                    labelled.append(c.at)
                    ax.annotate(f"L≈{_si(c.at)}", (c.at, c.value * scale), xytext=(7, 7),
                                textcoords="offset points", fontsize=8, color="#0f172a")
        _log2_x(ax)
        if y_axis == "log":
            _log_y(ax, [getattr(r, attr) * scale for r, _ in rows if r.mode == mode], formatter)
        elif y_axis == "bytes":
            _bytes_y(ax)
        elif formatter:
            ax.yaxis.set_major_formatter(FuncFormatter(formatter))
        ax.set_title(f"{title}: {mode}")
        ax.set_xlabel("sequence length L (tokens)")
        ax.set_ylabel(ylabel)
    _legend(fig, axes)
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
                           "Model FLOPs utilisation", y_axis="linear", formatter=lambda v, _: f"{v:.3g}%")
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
        if _finite(r.extra.get(k)):
            return int(r.extra[k])
    return r.seq_len


def _state_bytes(r: BenchResult) -> float | None:
    for k in ("state_bytes", "cache_bytes", "kv_cache_bytes"):
        if _finite(r.extra.get(k)):
            return float(r.extra[k])
    return None


def decode_chart(benches: list[Bench], colour: Palette) -> Chart | None:
    rows = [(r, s) for r, s in _main_rows(benches) if r.mode == "decode" and _ok(r, "latency_s")]
    if not rows:
        return None
    with_state = [(r, s) for r, s in rows if _state_bytes(r) is not None]
    fig, axes = _figure(2 if with_state else 1)
    peers = _peers(rows)
    lines = _series(rows)
    for name, line in sorted(lines.items(), key=lambda kv: (model_order(kv[1][0].model), kv[0])):
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
    _log_y(axes[0], [r.latency_s * 1e3 for r, _ in rows], lambda v, _: f"{v:.3g}")
    if with_state:
        axes[1].set_title("State held while decoding")
        axes[1].set_ylabel("KV cache or recurrent state (bytes)")
        _bytes_y(axes[1])
    for ax in axes:
        _log2_x(ax)
        ax.set_xlabel("position in the sequence (tokens already seen)")
    _legend(fig, axes)
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
    key = lambda r: (r.model, r.impl, r.mode, r.seq_len, r.batch, r.d_model, r.layers, r.dtype)  # noqa: E731
    one = {key(r): r.tokens_per_s for r, _ in rows if r.threads == threads[0]}
    full = [(r, s) for r, s in rows if r.threads == threads[-1] and key(r) in one]
    modes = [m for m in MODES if any(r.mode == m for r, _ in full)]
    if not modes:
        return None
    fig, axes = _figure(len(modes))
    peers = _peers(full)
    for ax, mode in zip(axes, modes):
        for name, line in sorted(_series([(r, s) for r, s in full if r.mode == mode]).items(),
                                 key=lambda kv: (model_order(kv[1][0].model), kv[0])):
            line.sort(key=lambda r: r.seq_len)
            ax.plot([r.seq_len for r in line], [r.tokens_per_s / one[key(r)] for r in line],
                    label=name, **_line_style(line, colour, peers))
        ax.axhline(threads[-1] / threads[0], color="#94a3b8", linestyle=(0, (4, 3)), linewidth=1)
        _log2_x(ax)
        ax.set_title(f"Thread scaling: {mode}")
        ax.set_xlabel("sequence length L (tokens)")
        ax.set_ylabel(f"speed-up, {threads[-1]} threads over {threads[0]} (×)")
    _legend(fig, axes)
    return Chart("thread_scaling", "Speed", "Parallel speed-up on the CPU", fig,
                 f"Throughput with {threads[-1]} threads divided by throughput with {threads[0]}; "
                 "the dashed line is perfect scaling.", [b.source for b in benches])


# --- analyses -------------------------------------------------------------------------------

def gradient_charts(doc: dict[str, Any], source: Source, colour: Palette) -> list[Chart]:
    """‖∂loss/∂x_t‖ against distance from the output, a panel per condition; and the gradient
    norm during training, with and without clipping."""
    results = [r for r in doc.get("results", []) if r.get("grad_norm")]
    conditions = list(dict.fromkeys(r["condition"] for r in results))
    if not conditions:
        return []
    fig, axes = _figure(len(conditions))
    for ax, cond in zip(axes, conditions):
        notes = []
        for r in sorted((r for r in results if r["condition"] == cond),
                        key=lambda r: model_order(r["model"])):
            y = np.array([v if _finite(v) and v > 0 else np.nan for v in r["grad_norm"]], float)
            ax.plot(r["distance"], y, color=colour(r["model"]), label=r["model"])
            if r.get("status", "ok") != "ok":
                notes.append(f"{r['model']} stopped: {r['status']}")
        if notes:
            ax.text(0.98, 0.97, "\n".join(notes), transform=ax.transAxes, ha="right", va="top",
                    fontsize=7.5, color="#b91c1c")
        ax.set_yscale("log")
        ax.set_title(cond)
        ax.set_xlabel("distance from the output (positions)")
        ax.set_ylabel("‖∂loss/∂x_t‖ per example (log)")
    _legend(fig, axes)
    what = (f"task {doc.get('task')}, L = {doc.get('seq_len')}, D = {doc.get('d_model')}, "
            f"{doc.get('steps')} AdamW steps at lr {doc.get('lr')}, seed {doc.get('seed')}")
    charts = [Chart("gradient_flow", "Gradient flow", "Gradient flow: how far back the loss reaches",
                    fig, "Norm of the loss gradient with respect to each embedded input x_t, "
                    "against how many positions before the output it sits (mean over a held-out "
                    "batch). A line falling to the right is a vanishing gradient (it ends where "
                    "float32 underflows to zero); one climbing with distance is exploding. "
                    f"({what}.)", [source])]
    trained = [r for r in results if r.get("train") and r["train"].get("grad_norm")]
    runs = list(dict.fromkeys(r["condition"] for r in trained))
    if runs:
        fig, axes = _figure(len(runs))
        for ax, cond in zip(axes, runs):
            for r in sorted((r for r in trained if r["condition"] == cond),
                            key=lambda r: model_order(r["model"])):
                t = r["train"]
                pts = [(x, v) for x, v in zip(t["step"], t["grad_norm"]) if _finite(v) and v > 0]
                if not pts:
                    continue
                x, y = (np.array(a, float) for a in zip(*pts))
                ax.plot(x, y, color=colour(r["model"]), alpha=0.2, linewidth=0.7)
                ax.plot(x, np.exp(_ema(np.log(y), max(3, len(y) // 15))) if len(y) >= 20 else y,
                        color=colour(r["model"]), label=r["model"])
                if r.get("clip"):
                    ax.axhline(r["clip"], color="#64748b", linestyle=(0, (4, 3)), linewidth=1)
            ax.set_yscale("log")
            ax.set_title(cond)
            ax.set_xlabel("step (optimizer updates)")
            ax.set_ylabel("global gradient norm before clipping")
        for ax in axes[1:]:
            ax.sharey(axes[0])
        _legend(fig, axes)
        charts.append(Chart("gradient_norm_training", "Gradient flow",
                            "Gradient norm during training", fig,
                            "The norm of the whole gradient at each training step, before any "
                            "clipping (faint: every step; solid: smoothed). Spikes are exploding "
                            "gradients; the dashed line is the "
                            "clipping threshold, above which the clipped run scales its step "
                            "down.", [source]))
    return charts


def attention_chart(doc: dict[str, Any], source: Source, colour: Palette) -> Chart | None:
    """Attention maps per layer and head, or the hidden-state trajectory of a recurrent model."""
    model = doc.get("model", "?")
    maps = doc.get("attention") or []
    hidden = doc.get("hidden") or []
    slug = f"attention_{_slug(model)}_{_slug(str(doc.get('run', '')))}".rstrip("_")
    if maps:
        layers = sorted({m["layer"] for m in maps})
        heads = sorted({m["head"] for m in maps})
        fig = Figure(figsize=(min(2.3 * len(heads) + 1.0, 12), 2.3 * len(layers) + 0.7),
                     layout="constrained")
        axes = fig.subplots(len(layers), len(heads), squeeze=False)
        image = None
        for m in maps:
            ax = axes[layers.index(m["layer"])][heads.index(m["head"])]
            # gamma 0.5: weights spread over many keys are small, and would all look black
            image = ax.imshow(np.array(m["weights"], float), cmap="magma",
                              norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
            ax.set_title(f"layer {m['layer']}, head {m['head']}", fontsize=8.5)
            ax.grid(False)
            ax.tick_params(labelsize=7)
        for ax in axes[-1]:
            ax.set_xlabel("key position (token)")
        for row in axes:
            row[0].set_ylabel("query position (token)")
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight (probability, √ scale)")
        return Chart(slug, "Inside the models", f"Attention maps: {model}", fig,
                     f"Softmax attention weights on one sample of {doc.get('task')} "
                     f"(L = {doc.get('seq_len')}); row t shows where query t looks.", [source])
    if hidden:
        fig, axes = _figure(2, height=3.6)
        h = hidden[-1]
        pca = np.array(h["pca"], float)
        t = np.arange(len(pca))
        axes[0].plot(pca[:, 0], pca[:, 1], color=colour(model), linewidth=0.8, alpha=0.6)
        points = axes[0].scatter(pca[:, 0], pca[:, 1], c=t, cmap="viridis", s=14, zorder=3)
        fig.colorbar(points, ax=axes[0], label="position t (token)")
        explained = h.get("explained") or [None, None]
        axes[0].set_xlabel("PC 1 of h_t" + (f" ({explained[0]:.0%} of variance)" if explained[0] else ""))
        axes[0].set_ylabel("PC 2 of h_t" + (f" ({explained[1]:.0%})" if explained[1] else ""))
        axes[0].set_title("Hidden-state trajectory (last layer)")
        states = np.array(h["states"], float)  # (L, D)
        lim = float(np.nanmax(np.abs(states))) or 1.0
        image = axes[1].imshow(states.T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                               interpolation="nearest")
        axes[1].grid(False)
        axes[1].set_title("h_t over time")
        axes[1].set_xlabel("position t (token)")
        axes[1].set_ylabel("hidden unit (index)")
        fig.colorbar(image, ax=axes[1], label="activation (unitless)")
        return Chart(slug, "Inside the models", f"Hidden state: {model}", fig,
                     f"The last layer's state h_t on the same sample of {doc.get('task')} "
                     f"(L = {doc.get('seq_len')}): its path through the first two principal "
                     "components, and every unit over time.", [source])
    return None


def _sources(runs: list[Run]) -> list[Source]:
    return list({id(r.source): r.source for r in runs if r.source is not None}.values())


def _slug(s: Any) -> str:
    return "".join(c if c.isalnum() else "-" for c in str(s).lower()).strip("-") or "x"
