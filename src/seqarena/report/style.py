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
from typing import Any

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

# One palette per family (the `family` every results row carries): cool colours for the
# recurrences, warm ones for attention, so the two read apart before the legend does.
FAMILY_COLOURS = {
    "recurrent": ["#1e3a8a", "#2563eb", "#0369a1", "#6366f1", "#7dd3fc"],
    "scan": ["#0d9488", "#0ea5e9", "#14b8a6", "#0891b2"],
    "attention": ["#ea580c", "#dc2626", "#d97706", "#f97316", "#9a3412"],
    "linear-attention": ["#be185d", "#db2777", "#a21caf", "#f472b6"],
    # the chunked recurrences with a matrix or gated state: greens and olives, cool like the
    # recurrences they are, apart from the classic cells' blues
    "ssm": ["#15803d", "#4d7c0f"],
    "delta-rule": ["#047857", "#65a30d"],
    "xlstm": ["#166534", "#84cc16"],
}
OTHER = ["#7c3aed", "#475569", "#65a30d", "#a16207"]
FAMILY_ORDER = ["recurrent", "scan", "ssm", "delta-rule", "xlstm", "attention",
                "linear-attention"]  # tables and legends
# Fixed slots in their family's palette for the built-in names, so lstm is the same blue in
# every report whatever else it shows; other names take the free colours of their family.
SLOTS = {"rnn": 0, "lstm": 1, "gru": 2, "rnn-ed": 3, "mingru": 0, "minlstm": 1, "hawk": 2,
         "transformer": 0, "transformer-ed": 1, "linear-attention": 0, "retnet": 1,
         "mamba2": 0, "gated-deltanet": 0, "deltanet": 1, "mlstm": 0}
PEER_STYLES = ["--", ":", "-."]
MODES = ("train", "forward", "prefill")
SETTING_FIELDS = ("device", "dtype", "batch", "d_model", "layers")  # what else a bench row varies


class Palette:
    """Model name -> colour, from each model's family as its results state it."""

    def __init__(self, families: dict[str, str]):
        self.families = dict(families)  # model name -> family ("" when not stated)
        self.colours: dict[str, str] = {}
        used: dict[str, set] = defaultdict(set)
        for m in sorted(self.families, key=self.order):
            choices = FAMILY_COLOURS.get(self.families[m], OTHER)
            slot = SLOTS.get(m)
            free = [c for c in choices if c not in used[self.families[m]]] or choices
            colour = choices[slot % len(choices)] if slot is not None else free[0]
            self.colours[m] = colour
            used[self.families[m]].add(colour)

    @classmethod
    def of(cls, inputs) -> "Palette":
        """The palette of everything a report shows (seqarena.report.collect.Inputs)."""
        families = {r.model: r.result.family for r in inputs.runs}
        families.update({r.model: r.family for b in inputs.benches for r in b.results
                         if r.impl == "seqarena" or r.model not in families})
        for a in inputs.analyses:
            families.update({r.model: r.family for r in a.results if hasattr(r, "model")})
            if a.doc.get("model"):
                families.setdefault(a.doc["model"], a.doc.get("family", ""))
        return cls(families)

    def __call__(self, model: str) -> str:
        return self.colours.get(model, "#64748b")

    def family(self, model: str) -> str:
        return self.families.get(model, "")

    def order(self, model: str) -> tuple:
        """Recurrent families first, then attention, then others; built-ins in a fixed order."""
        family = self.family(model)
        rank = FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)
        return rank, SLOTS.get(model, len(SLOTS)), model


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
        # as many columns as the figure's width holds at the longest label (about 7 pt a letter)
        width_pt = fig.get_figwidth() * 72
        fits = max(1, int(width_pt // (7 * max(map(len, seen)) + 40)))
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center",
                   ncols=min(len(seen), 6, fits), handlelength=2.4)


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
