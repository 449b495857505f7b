"""Charts of a comparison's Summary: the metric against length with its intervals, each length's
verdict as a forest plot of paired differences, and the learning-rate search. They draw what the
summary decided and decide nothing."""

from __future__ import annotations

import math

from seqarena.report.style import Chart, Palette, figure_grid, finite, legend_below, log2_x, log_y, slug
from seqarena.results import Summary

DECADES_FOR_LOG = 2.0  # a metric spanning more than this many decades is drawn on a log axis


def _spans_decades(values: list[float]) -> bool:
    values = [v for v in values if finite(v) and v > 0]
    return len(values) > 1 and math.log10(max(values) / min(values)) > DECADES_FOR_LOG


def metric_chart(summary: Summary, colour: Palette) -> Chart | None:
    """Each model's metric against length, with its 95 % interval; the named best ringed."""
    rows = [r for r in summary.rows if finite(r.metric)]
    if not rows:
        return None
    lengths = sorted({r.seq_len for r in rows})
    models = sorted({r.model for r in rows}, key=colour.order)
    fig, (ax,) = figure_grid(1, height=3.8)
    drawn = []
    for m in models:
        mine = sorted((r for r in rows if r.model == m), key=lambda r: r.seq_len)
        xs = [r.seq_len for r in mine]
        ys = [r.metric for r in mine]
        low = [r.metric - r.metric_ci[0] if r.metric_ci else 0.0 for r in mine]
        high = [r.metric_ci[1] - r.metric if r.metric_ci else 0.0 for r in mine]
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, color=colour(m), label=m)
        drawn += ys + [r.metric_ci[0] for r in mine if r.metric_ci] + \
            [r.metric_ci[1] for r in mine if r.metric_ci]
        for r in mine:
            if summary.winner(r.seq_len) == m:
                ax.plot([r.seq_len], [r.metric], marker="o", markersize=13, fillstyle="none",
                        color=colour(m), linewidth=0, zorder=5)
    for k, v in sorted(summary.baselines.items()):
        if finite(v) and k.endswith(summary.metric_name):
            ax.axhline(v, color="#64748b", linestyle=(0, (4, 3)), linewidth=1,
                       label=f"baseline: {k[: -len(summary.metric_name)].strip('_') or k}")
            drawn.append(v)
    log = _spans_decades(drawn)
    if log:
        log_y(ax, drawn)
    if len(lengths) > 1:
        log2_x(ax)
    ax.set_xticks(lengths)
    ax.set_xlabel("sequence length L (tokens)")
    better = "higher" if summary.higher_is_better else "lower"
    ax.set_ylabel(f"test {summary.metric_name} ({better} is better)")
    ax.set_title(f"{summary.task}: {summary.metric_name} against sequence length")
    legend_below(fig, [ax])
    return Chart(f"compare_{slug(summary.task)}_metric", "Accuracy",
                 f"{summary.task}: {summary.metric_name} by model and length", fig,
                 f"Bars: 95 % intervals ({summary.coverage}). A ring marks the model the verdict "
                 f"named best at that length; no ring: a tie."
                 + (" Log axis: the values span more than two decades." if log else ""))


def forest_charts(summary: Summary, colour: Palette) -> list[Chart]:
    """Per length, the paired differences behind the equal-steps verdict: the best model minus
    each other one, with its interval and Holm-adjusted p-value."""
    charts = []
    for d in summary.verdicts:
        if d["question"] != "steps" or not d.get("tests"):
            continue
        tests = d["tests"]
        fig, (ax,) = figure_grid(1, height=0.5 + 0.45 * len(tests))
        for i, t in enumerate(tests):
            low, high = t["interval"]
            ax.errorbar([t["diff"]], [i], xerr=[[t["diff"] - low], [high - t["diff"]]],
                        marker="o", capsize=3, color=colour(t["b"]))
            ax.annotate(f"p (Holm) {t['p_holm']:.2g}", (high, i), xytext=(6, 0),
                        textcoords="offset points", va="center", fontsize=8.5)
        ax.axvline(0, color="#64748b", linewidth=1)
        ax.set_yticks(range(len(tests)), [f"{t['a']} - {t['b']}" for t in tests])
        ax.invert_yaxis()
        ax.set_xlabel(f"paired difference in test {summary.metric_name}")
        L = d["seq_len"]
        verdict = d["winner"] or "tie"
        ax.set_title(f"L = {L}: {verdict}")
        charts.append(Chart(f"compare_{slug(summary.task)}_forest_L{L}", "Verdicts",
                            f"{summary.task}, L = {L}: paired differences", fig,
                            "A bar clear of the zero line separates the two models; the best is "
                            "named only when every bar is clear after Holm's correction."))
    return charts


def lr_search_chart(summary: Summary, colour: Palette) -> Chart | None:
    """Each model's validation score at each rate it tried, per length: the last run of each
    rate, the chosen one filled, the ones within noise of it ringed."""
    search = summary.lr_search or {}
    runs = search.get("runs") or []
    if not runs:
        return None
    lengths = sorted({r["seq_len"] for r in runs})
    fig, axes = figure_grid(len(lengths), height=3.4)
    values = []
    for ax, L in zip(axes, lengths):
        for r in (r for r in runs if r["seq_len"] == L):
            points = [(t["lr"], t["values"][-1]) for t in r["trials"]
                      if t["values"] and finite(t["values"][-1])]
            if not points:
                continue
            xs, ys = zip(*sorted(points))
            values += ys
            ax.plot(xs, ys, marker="o", fillstyle="none", color=colour(r["model"]),
                    label=r["model"])
            chosen = dict(points).get(r["lr"])
            if finite(chosen):
                ax.plot([r["lr"]], [chosen], marker="o", color=colour(r["model"]), linewidth=0)
        ax.set_xscale("log")
        how = "searched" if L == search.get("searched_at") else "finalists checked"
        ax.set_title(f"L = {L} ({how})")
        ax.set_xlabel("peak learning rate")
    if _spans_decades(values):
        for ax in axes[:len(lengths)]:
            log_y(ax, values)
    axes[0].set_ylabel(f"val {summary.metric_name}")
    legend_below(fig, list(axes[:len(lengths)]))
    return Chart(f"compare_{slug(summary.task)}_lr_search", "Accuracy",
                 f"{summary.task}: the learning-rate search", fig,
                 f"Validation {summary.metric_name} after each rate's longest search run; filled: "
                 f"the rate chosen at that length. Rates within noise of the best go to the "
                 f"largest (short searches favour small rates).")


def length_chart(summary: Summary, colour: Palette) -> Chart | None:
    """Trained on short sequences, tested on long ones: the metric at each test length, one line
    per model with its 95 % band, the training range shaded and chance drawn."""
    rows = [r for r in summary.rows if r.by_length]
    if not rows:
        return None
    fig, (ax,) = figure_grid(1, height=3.8)
    for r in sorted(rows, key=lambda r: colour.order(r.model)):
        n, value, low, high = zip(*r.by_length)
        ax.plot(n, value, marker=".", color=colour(r.model), label=r.model)
        if all(finite(x) for x in low + high):
            ax.fill_between(n, low, high, color=colour(r.model), alpha=0.15, linewidth=0)
    if summary.trained_lengths:
        lo, hi = summary.trained_lengths
        ax.axvspan(lo, hi, color="#94a3b8", alpha=0.25, label=f"trained on {lo}-{hi}")
    chance = {k: v for k, v in summary.baselines.items() if k.startswith("chance")}
    for k, v in chance.items():
        ax.axhline(v, color="#64748b", linestyle=(0, (4, 3)), linewidth=1, label="chance")
    ax.set_xlabel("test input length n")
    ax.set_ylabel(summary.metric_name)
    ax.set_title(f"{summary.task}: {summary.metric_name} against test length")
    legend_below(fig, [ax])
    return Chart(f"compare_{slug(summary.task)}_by_length", "Accuracy",
                 f"{summary.task}: length generalisation", fig,
                 f"{summary.metric_name} at each test length (bands: 95 % intervals, "
                 f"{summary.coverage}); grey: the lengths trained on; dashed: chance. A line "
                 f"that stays on top outside the grey band has learned the rule, not the "
                 f"lengths.")


def comparison_charts(summaries: list[Summary], colour: Palette) -> list[Chart]:
    charts = []
    for s in summaries:
        charts += [c for c in (metric_chart(s, colour), length_chart(s, colour),
                               lr_search_chart(s, colour)) if c]
        charts += forest_charts(s, colour)
    return charts
