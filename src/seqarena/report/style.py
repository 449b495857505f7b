"""How the report's charts look: one style, one colour per model, units on every axis.

One colour per model for the whole report: the recurrent family in blues and teals, the attention
family in oranges and reds, so "recurrent against attention" reads off a chart before its legend.
Peers (the same architecture from another library) share their model's colour, dashed.
Charts are drawn with matplotlib's object API (no pyplot: no global figure state, no display).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from seqarena.report.collect import Source

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


def family_colours(model: str) -> list[str]:
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
            self.colours[m] = family_colours(m)[slot % len(family_colours(m))]
            used[family(m)].add(self.colours[m])
        for m in sorted(set(models) - set(KNOWN_ORDER), key=model_order):
            free = [c for c in family_colours(m) if c not in used[family(m)]] or family_colours(m)
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


# --- axes --------------------------------------------------------------------------------

FULL_WIDTH = 11.3  # inches: the report's content column, so text shows at its real size
NARROW_WIDTH = 7.4


def figure_grid(panels: int, height: float = 3.5, max_cols: int = 3):
    cols = min(panels, max_cols)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(FULL_WIDTH if panels > 1 else NARROW_WIDTH, height * rows),
                 layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, list(axes[:panels])


def legend_below(fig: Figure, axes) -> None:
    """One legend for the figure, below the panels, with each label once."""
    seen = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if not label.startswith("_"):
                seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center",
                   ncols=min(len(seen), 6), handlelength=2.4)


def log2_x(ax) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: si(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def log_y(ax, values, formatter=None) -> None:
    """Log y axis; ticks at 1-2-5 when the data spans few decades, at powers of 10 otherwise."""
    ax.set_yscale("log")
    values = [v for v in values if finite(v) and v > 0]
    decades = math.log10(max(values) / min(values)) if values else 0
    subs = (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(formatter or (lambda v, _: si(v))))
    ax.yaxis.set_minor_formatter(NullFormatter())


def bytes_y(ax) -> None:
    """Log-2 y axis in bytes with binary units: memory comes in powers of two."""
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_locator(LogLocator(base=2, numticks=8))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: binary_units(v)))
    ax.yaxis.set_minor_formatter(NullFormatter())


def binary_units(v: float) -> str:
    for div, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if v >= div:
            return f"{v / div:.3g} {unit}"
    return f"{v:.3g} B"


def si(v: float) -> str:
    """1500 -> "1.5K": short tick labels."""
    if v == 0:
        return "0"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def ema(y: np.ndarray, span: int) -> np.ndarray:
    alpha, out, acc = 2.0 / (span + 1), np.empty_like(y), y[0]
    for i, v in enumerate(y):
        acc = alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)



def slug(s: Any) -> str:
    return "".join(c if c.isalnum() else "-" for c in str(s).lower()).strip("-") or "x"
