"""Charts of training runs and analyses: learning curves, metric against length, gradient flow,
attention maps and hidden states. Each function returns Chart objects (see style.py)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from seqarena.report.collect import Analysis, Run, Source
from seqarena.report.style import (Chart, Palette, ema, figure_grid, finite, legend_below, log2_x,
                                   log_y, slug)

# --- training -------------------------------------------------------------------------------

STANDARD_KEYS = {"step", "loss", "lr", "grad_norm", "tokens_per_s", "wall_s", "train_s", "epoch",
                 "tokens", "split", "time", "schema_version"}


def metric_key(run: Run) -> str | None:
    """The key of the run's logged records that holds its task metric."""
    names = {k for row in run.metrics for k, v in row.items()
             if k not in STANDARD_KEYS and finite(v)}
    want = run.result.metric_name
    for k in ([want, f"val_{want}", f"val/{want}", f"eval_{want}"] if want else []):
        if k in names:
            return k
    return sorted(names)[0] if names else None


def training_curves(runs: list[Run], colour: Palette) -> list[Chart]:
    """Loss and metric against step, and the metric against training seconds (evaluation time
    left out), per task and length; all models on the same axes."""
    groups = defaultdict(list)
    for r in runs:
        if r.metrics:
            groups[(r.task, r.seq_len)].append(r)
    charts = []
    for (task, seq_len), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        keys = {id(r): metric_key(r) for r in group}
        # A metric logged once (only at the end) is a point, not a curve: the summary shows it.
        has_metric = any(sum(finite(row.get(keys[id(r)])) for row in r.metrics) > 1
                         for r in group if keys[id(r)])
        timed = has_metric and any(finite(row.get("train_s")) for r in group for row in r.metrics)
        fig, axes = figure_grid(1 + has_metric + timed)
        labelled = set()  # one legend entry per model, however many seeds
        for r in sorted(group, key=lambda r: (colour.order(r.model), r.seed or 0)):
            done = r.result.status != "running"
            style = dict(color=colour(r.model), linestyle="-" if done else "--")
            label = r.model + ("" if done else " (stopped)")
            label = label if label not in labelled else "_" + label
            labelled.add(label)
            steps = np.array([row["step"] for row in r.metrics if finite(row.get("loss"))], float)
            loss = np.array([row["loss"] for row in r.metrics if finite(row.get("loss"))], float)
            if len(loss):
                if len(loss) >= 20:  # raw loss is noisy: show it faint, a smoothed line on top
                    axes[0].plot(steps, loss, alpha=0.18, linewidth=0.8, color=style["color"])
                    loss = ema(loss, max(3, len(loss) // 15))
                axes[0].plot(steps, loss, label=label, **style)
            key = keys[id(r)]
            if has_metric and key:
                pts = [(row["step"], row[key]) for row in r.metrics if finite(row.get(key))]
                if pts:
                    x, y = zip(*pts)
                    axes[1].plot(x, y, marker="o", label=label, **style)
                pts = [(row["train_s"], row[key]) for row in r.metrics
                       if finite(row.get(key)) and finite(row.get("train_s"))]
                if timed and pts:
                    x, y = zip(*pts)
                    axes[2].plot(x, y, marker="o", label=label, **style)
        axes[0].set_title("Training loss")
        axes[0].set_xlabel("step (optimizer updates)")
        axes[0].set_ylabel(f"loss ({task}'s training loss)")
        all_loss = [row["loss"] for r in group for row in r.metrics
                    if finite(row.get("loss")) and row["loss"] > 0]
        if all_loss and max(all_loss) / min(all_loss) > 20:
            log_y(axes[0], all_loss, lambda v, _: f"{v:.3g}")
        if has_metric:
            name = next((r.result.metric_name for r in group), None) \
                or next(k for k in keys.values() if k)
            better = next((r.result.higher_is_better for r in group), None)
            axes[1].set_title(f"Held-out {name}")
            axes[1].set_xlabel("step (optimizer updates)")
            axes[1].set_ylabel(name + {True: " (higher is better)", False: " (lower is better)",
                                       None: ""}[better])
            values = [row[keys[id(r)]] for r in group for row in r.metrics
                      if keys[id(r)] and finite(row.get(keys[id(r)]))]
            if values and min(values) > 0 and max(values) / min(values) > 20:
                for ax in axes[1:]:  # a metric falling by decades reads on a log scale
                    log_y(ax, values, lambda v, _: f"{v:.3g}")
        if timed:
            axes[2].set_title(f"Held-out {name} against training time")
            axes[2].set_xlabel("training seconds (evaluation excluded)")
            axes[2].set_ylabel(axes[1].get_ylabel())
            ends = [r.result.train_s for r in group
                    if r.result and r.result.status == "ok" and finite(r.result.train_s)]
            if ends:  # where the equal-time verdict reads every curve
                axes[2].axvline(min(ends), color="0.5", linestyle=":", linewidth=1)
                axes[2].annotate("equal time", (min(ends), 1), xycoords=("data", "axes fraction"),
                                 xytext=(3, -12), textcoords="offset points", fontsize=8,
                                 color="0.4")
        legend_below(fig, axes)
        where = f"{task}, L = {seq_len}" if seq_len else task
        charts.append(Chart(f"curves_{slug(task)}_L{seq_len}", "Training",
                            f"Learning curves: {where}", fig,
                            "Each model trained on the same task, length and budget. Recurrent "
                            "models are drawn in blues, attention models in oranges; dashed lines "
                            "are runs that stopped early. Long curves are smoothed (exponential "
                            "moving average), the raw loss faint behind. The last panel reads "
                            "the held-out metric against training seconds; the dotted line is the "
                            "shortest finished run's training time, where the equal-time verdict "
                            "compares every model.", _sources(group)))
    return charts


def metric_vs_length(runs: list[Run], colour: Palette) -> list[Chart]:
    """Final metric against sequence length per model (mean and spread over seeds)."""
    by_task = defaultdict(list)
    for r in runs:
        if finite(r.result.metric):
            by_task[r.task].append(r)
    charts = []
    for task, group in sorted(by_task.items()):
        res = [r.result for r in group]
        name, better = res[0].metric_name, res[0].higher_is_better
        lengths = sorted({r.seq_len for r in res})
        models = sorted({r.model for r in res}, key=colour.order)
        fig, (ax,) = figure_grid(1, height=3.8)
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
            log2_x(ax)
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
            for k, v in (r.baselines or {}).items():
                if finite(v) and (k == name or k.endswith(f"_{name}")):
                    baselines.setdefault(k[: -len(name)].strip("_") or k, v)
        for i, (k, v) in enumerate(sorted(baselines.items())):
            line = ax.axhline if len(lengths) > 1 else ax.axvline
            line(v, color="#64748b", linestyle=(0, (4, 3)), linewidth=1, label=f"baseline: {k}",
                 zorder=1)
        axis_label = name + (" (higher is better)" if better else " (lower is better)")
        if len(lengths) > 1:
            ax.set_ylabel(axis_label)
            ax.set_title(f"{task}: {name} against sequence length")
            legend_below(fig, [ax])
        else:
            ax.set_xlabel(axis_label)
            ax.set_title(f"{task}: {name} at L = {lengths[0]}")
            if baselines:
                ax.legend(loc="lower right")
        seeds = sorted({r.seed for r in res})
        charts.append(Chart(f"metric_vs_length_{slug(task)}", "Accuracy", f"{task}: {name} by model"
                            + (" and length" if len(lengths) > 1 else ""), fig,
                            f"Final held-out {name} of each run ({'higher' if better else 'lower'} "
                            f"is better); seeds {', '.join(map(str, seeds))}"
                            + ("; bars show the spread over seeds" if len(seeds) > 1 else "")
                            + (". Grey dashed lines are the task's baselines." if baselines
                               else "."),
                            _sources(group)))
    return charts


# --- analyses -------------------------------------------------------------------------------

def analysis_charts(analysis: Analysis, colour: Palette) -> list[Chart]:
    """The charts of one `seqarena analyze` results file."""
    if analysis.kind == "gradients":
        return gradient_charts(analysis, colour)
    return [c for c in [attention_chart(analysis, colour)] if c is not None]


def gradient_charts(analysis: Analysis, colour: Palette) -> list[Chart]:
    """‖∂loss/∂x_t‖ against distance from the output, a panel per condition; and the
    gradient norm during training, with and without clipping."""
    doc, source = analysis.doc, analysis.source
    results = [r for r in analysis.results if r.grad_norm]
    conditions = list(dict.fromkeys(r.condition for r in results))
    if not conditions:
        return []
    fig, axes = figure_grid(len(conditions))
    for ax, cond in zip(axes, conditions):
        notes = []
        for r in sorted((r for r in results if r.condition == cond),
                        key=lambda r: colour.order(r.model)):
            y = np.array([v if finite(v) and v > 0 else np.nan for v in r.grad_norm], float)
            ax.plot(r.distance, y, color=colour(r.model), label=r.model)
            if r.status != "ok":
                notes.append(f"{r.model} stopped: {r.status}")
        if notes:
            ax.text(0.98, 0.97, "\n".join(notes), transform=ax.transAxes, ha="right", va="top",
                    fontsize=7.5, color="#b91c1c")
        ax.set_yscale("log")
        ax.set_title(cond)
        ax.set_xlabel("distance from the output (positions)")
        ax.set_ylabel("‖∂loss/∂x_t‖ per example (log)")
    legend_below(fig, axes)
    what = (f"task {doc.get('task')}, L = {doc.get('seq_len')}, D = {doc.get('d_model')}, "
            f"{doc.get('steps')} AdamW steps at lr {doc.get('lr')}, seed {doc.get('seed')}")
    charts = [Chart("gradient_flow", "Gradient flow",
                    "Gradient flow: how far back the loss reaches", fig,
                    "Norm of the loss gradient with respect to each embedded input x_t, "
                    "against how many positions before the output it sits (mean over a held-out "
                    "batch). A line falling to the right is a vanishing gradient (it ends where "
                    "float32 underflows to zero); one climbing with distance is exploding. "
                    f"({what}.)", [source])]
    trained = [r for r in results if r.train and r.train.get("grad_norm")]
    runs = list(dict.fromkeys(r.condition for r in trained))
    if runs:
        fig, axes = figure_grid(len(runs))
        for ax, cond in zip(axes, runs):
            for r in sorted((r for r in trained if r.condition == cond),
                            key=lambda r: colour.order(r.model)):
                t = r.train
                pts = [(x, v) for x, v in zip(t["step"], t["grad_norm"]) if finite(v) and v > 0]
                if not pts:
                    continue
                x, y = (np.array(a, float) for a in zip(*pts))
                ax.plot(x, y, color=colour(r.model), alpha=0.2, linewidth=0.7)
                ax.plot(x, np.exp(ema(np.log(y), max(3, len(y) // 15))) if len(y) >= 20 else y,
                        color=colour(r.model), label=r.model)
                if r.clip:
                    ax.axhline(r.clip, color="#64748b", linestyle=(0, (4, 3)), linewidth=1)
            ax.set_yscale("log")
            ax.set_title(cond)
            ax.set_xlabel("step (optimizer updates)")
            ax.set_ylabel("global gradient norm before clipping")
        for ax in axes[1:]:
            ax.sharey(axes[0])
        legend_below(fig, axes)
        charts.append(Chart("gradient_norm_training", "Gradient flow",
                            "Gradient norm during training", fig,
                            "The norm of the whole gradient at each training step, before any "
                            "clipping (faint: every step; solid: smoothed). Spikes are exploding "
                            "gradients; the dashed line is the "
                            "clipping threshold, above which the clipped run scales its step "
                            "down.", [source]))
    return charts


def attention_chart(analysis: Analysis, colour: Palette) -> Chart | None:
    """Attention maps per layer and head, or the hidden-state trajectory of a recurrent model."""
    doc, source = analysis.doc, analysis.source
    model = doc.get("model", "?")
    maps = analysis.results
    hidden = doc.get("hidden") or []
    name = f"attention_{slug(model)}_{slug(str(doc.get('run', '')))}".rstrip("_")
    if maps:
        layers = sorted({m.layer for m in maps})
        heads = sorted({m.head for m in maps})
        fig = Figure(figsize=(min(2.3 * len(heads) + 1.0, 12), 2.3 * len(layers) + 0.7),
                     layout="constrained")
        axes = fig.subplots(len(layers), len(heads), squeeze=False)
        image = None
        for m in maps:
            ax = axes[layers.index(m.layer)][heads.index(m.head)]
            # gamma 0.5: weights spread over many keys are small, and would all look black
            image = ax.imshow(np.array(m.weights, float), cmap="magma",
                              norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
            ax.set_title(f"layer {m.layer}, head {m.head}", fontsize=8.5)
            ax.grid(False)
            ax.tick_params(labelsize=7)
        for ax in axes[-1]:
            ax.set_xlabel("key position (token)")
        for row in axes:
            row[0].set_ylabel("query position (token)")
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.8,
                         label="attention weight (probability, √ scale)")
        return Chart(name, "Inside the models", f"Attention maps: {model}", fig,
                     f"Softmax attention weights on one sample of {doc.get('task')} "
                     f"(L = {doc.get('seq_len')}); row t shows where query t looks.", [source])
    if hidden:
        fig, axes = figure_grid(2, height=3.6)
        h = hidden[-1]
        pca = np.array(h["pca"], float)
        t = np.arange(len(pca))
        axes[0].plot(pca[:, 0], pca[:, 1], color=colour(model), linewidth=0.8, alpha=0.6)
        points = axes[0].scatter(pca[:, 0], pca[:, 1], c=t, cmap="viridis", s=14, zorder=3)
        fig.colorbar(points, ax=axes[0], label="position t (token)")
        explained = h.get("explained") or [None, None]
        axes[0].set_xlabel("PC 1 of h_t"
                           + (f" ({explained[0]:.0%} of variance)" if explained[0] else ""))
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
        return Chart(name, "Inside the models", f"Hidden state: {model}", fig,
                     f"The last layer's state h_t on the same sample of {doc.get('task')} "
                     f"(L = {doc.get('seq_len')}): its path through the first two principal "
                     "components, and every unit over time.", [source])
    return None


def _sources(runs: list[Run]) -> list[Source]:
    return list({id(r.source): r.source for r in runs}.values())
