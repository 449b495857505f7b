"""Charts of serving: the ledger map (which model serves a request of P prompt and G generated
tokens cheapest) and a bench run projected to another device. They draw the rows of
seqarena.bench.ledger and seqarena.bench.projection and decide nothing: the cheapest model, the
break-even G and the crossovers are computed there."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from seqarena.bench.ledger import BreakEven, LedgerRow
from seqarena.bench.projection import Projected, ProjectionError
from seqarena.report.collect import Source
from seqarena.report.style import (Chart, Palette, figure_grid, legend_below, log2_x, log_y, si,
                                   slug)

# P prompt tokens, G generated tokens, L length

BEYOND_COLOUR = "#f1f5f9"  # cells past the measured decode positions: left pale, not guessed
THROUGHPUT_MODES = ("train", "forward", "prefill")


def _setting(row) -> str:
    return (f"B={row.batch}, D={row.d_model}, {row.layers} layer{'s' * (row.layers != 1)}, "
            f"{row.device} {row.dtype}, {row.threads} thread{'s' * (row.threads != 1)}")


def _edges(values: list[int]) -> np.ndarray:
    """Cell edges on a log axis: halfway (geometrically) between neighbours, as far out at ends."""
    v = np.array(values, float)
    if len(v) == 1:
        return np.array([v[0] / math.sqrt(2), v[0] * math.sqrt(2)])
    mid = np.sqrt(v[1:] * v[:-1])
    return np.concatenate([[v[0] ** 2 / mid[0]], mid, [v[-1] ** 2 / mid[-1]]])


def palette_of(rows) -> Palette:
    """The report's palette for rows that carry model and family."""
    return Palette({r.model: r.family for r in rows})


def ledger_map(rows: list[LedgerRow], colour: Palette | None = None,
               breaks: list[BreakEven] | None = None, sources: list[Source] | None = None,
               where: str = "") -> list[Chart]:
    """One map per setting: P across, G up, each cell the colour of the model whose request
    costs least there (ledger's `cheapest`), pale past the last measured decode position; the
    break-even G of each model against attention marked on its prompt's column."""
    colour = colour or palette_of(rows)
    by_setting: dict[str, list[LedgerRow]] = defaultdict(list)
    for r in rows:
        by_setting[_setting(r)].append(r)
    charts = []
    for setting, group in by_setting.items():
        prompts = sorted({r.prompt for r in group})
        generated = sorted({r.generated for r in group})
        models = sorted({r.model for r in group}, key=colour.order)
        index = {m: i + 1 for i, m in enumerate(models)}  # 0: beyond measured
        cells = np.zeros((len(generated), len(prompts)))
        for r in group:
            if r.cheapest:
                cells[generated.index(r.generated), prompts.index(r.prompt)] = index[r.model]
        fig, (ax,) = figure_grid(1, height=4.2)
        cmap = ListedColormap([BEYOND_COLOUR] + [colour(m) for m in models])
        ax.pcolormesh(_edges(prompts), _edges(generated), cells, cmap=cmap, vmin=-0.5,
                      vmax=len(models) + 0.5, edgecolors="white", linewidth=0.6)
        shown = [m for m in models if (cells == index[m]).any()]
        marks = [b for b in breaks or [] if _setting(b) == setting and b.generated is not None
                 and b.prompt in prompts]
        for b in marks:
            ax.plot([b.prompt], [b.generated], marker="D", markersize=6, linestyle="none",
                    markerfacecolor=colour(b.model), markeredgecolor="#0f172a",
                    markeredgewidth=1.0, zorder=5)
        log2_x(ax)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(ax.xaxis.get_major_formatter())
        ax.set_xticks(prompts)
        ax.grid(False)
        ax.set_xlabel("prompt length P (tokens prefilled)")
        ax.set_ylabel("tokens generated G (decode steps)")
        ax.set_title(f"Cheapest model per request{where}: {setting}")
        handles = [Patch(color=colour(m), label=m) for m in shown]
        if (cells == 0).any():
            handles.append(Patch(facecolor=BEYOND_COLOUR, edgecolor="#94a3b8",
                                 label="not measured"))
        for m in sorted({b.model for b in marks}, key=colour.order):
            handles.append(ax.plot([], [], marker="D", linestyle="none", markerfacecolor=colour(m),
                                   markeredgecolor="#0f172a",
                                   label=f"{m} breaks even")[0])
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3))
        interpolated = any(r.decode_basis == "interpolated" or r.prefill_basis == "interpolated"
                           for r in group if r.cheapest)
        charts.append(Chart(
            f"serving_map_{slug(setting)}{slug(where) if where else ''}", "Serving",
            f"Which model serves a request cheapest{where}", fig,
            "Each cell is a request of P prompt tokens then G generated ones, for the whole "
            "batch, coloured by the model whose prefill plus decode steps take least time"
            + (": decode latencies between the measured positions read off a straight line"
               if interpolated else "")
            + ". Pale cells run past the last measured decode position and are not computed; "
            "diamonds mark the G from which a model costs no more than attention.",
            sources or []))
    return charts


def projection_chart(points: list[Projected], crossovers: list[dict[str, Any]] | None = None,
                     errors: list[ProjectionError] | None = None,
                     colour: Palette | None = None, sources: list[Source] | None = None
                     ) -> Chart | None:
    """A panel per mode: each model's projected time against L on the target device (solid),
    beside its measured time on the bench's machine (faint), the projected crossovers circled."""
    if not points:
        return None
    colour = colour or palette_of(points)
    device = points[0].device
    modes = [m for m in (*THROUGHPUT_MODES, "decode") if any(p.mode == m for p in points)]
    fig, axes = figure_grid(len(modes))
    for ax, mode in zip(axes, modes):
        lines: dict[str, list[Projected]] = defaultdict(list)
        for p in points:
            if p.mode == mode:
                lines[p.model].append(p)
        for model in sorted(lines, key=colour.order):
            line = sorted(lines[model], key=lambda p: p.seq_len)
            xs = [p.seq_len for p in line]
            ax.plot(xs, [p.from_measured_s * 1e3 for p in line], color=colour(model),
                    alpha=0.3, linestyle=(0, (4, 3)), linewidth=1.2)
            ax.plot(xs, [p.projected_s * 1e3 for p in line], color=colour(model), marker="o",
                    label=model)
        at = {(p.model, p.seq_len): p for p in points if p.mode == mode}
        for c in crossovers or []:
            p = at.get((c.get("other"), c.get("at")))
            if c.get("mode") == mode and c.get("kind") == "overtakes" and p is not None:
                ax.plot([p.seq_len], [p.projected_s * 1e3], marker="o", markersize=10,
                        markerfacecolor="none", markeredgecolor="#0f172a", zorder=5)
                ax.annotate(f"L={si(p.seq_len)}", (p.seq_len, p.projected_s * 1e3),
                            xytext=(7, 7), textcoords="offset points", fontsize=8)
        log2_x(ax)
        log_y(ax, [v * 1e3 for p in points if p.mode == mode
                   for v in (p.projected_s, p.from_measured_s)], lambda v, _: f"{v:.3g}")
        error = next((e for e in errors or [] if e.mode == mode and e.median is not None), None)
        ax.set_title(f"{mode}, projected" + (f" (error {error.median:.0%})" if error else ""))
        ax.set_xlabel("position (tokens seen)" if mode == "decode"
                      else "sequence length L (tokens)")
        ax.set_ylabel("ms per token" if mode == "decode" else "ms per step")
    legend_below(fig, axes)
    basis = points[0].basis
    return Chart(f"projection_{slug(device)}", "Serving", f"Projected to {device}", fig,
                 f"Solid: each point's time {basis.split(' via ')[0]}; faint dashed: the same "
                 "point as measured. The projection applies the efficiencies fitted on the "
                 "measured machine to the device's datasheet roofs; its error where it could be "
                 "measured (longer lengths, other thread counts) is in each title, as the median "
                 "|projected / measured - 1|. Circles mark where one model overtakes another on "
                 "the projected device.", sources or [])
