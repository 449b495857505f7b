"""Zoology's picture on this machine: associative recall (MQAR) against the state a model decodes
with, one point per model and width.

Arora et al. 2023 ("Zoology: Measuring and Improving Recall in Efficient Language Models") plot
MQAR accuracy against the recurrent state's size: attention recalls at every size (its state is
the KV cache, growing with the sequence), gated convolutions and diagonal recurrences need far
more state, and the delta rule recalls better than Mamba-style gating at equal state (Yang et al.
2024). Here every model trains on MQAR (L = 64, 8 key-value pairs, vocabulary 64, as
benchmarks/accuracy.py), 2 layers, at each width in --widths, with every seed in --seeds; its
rate is chosen per model and width by compare's validation search on the first seed (--lr auto,
successive halving over compare's grid) or fixed (--lr X). Each point is the mean test accuracy
over the seeds with its 95 % interval (seeds and test examples); the x axis is `state_size(64)` x
layers, floats per sequence.

    python benchmarks/state_size.py [--widths 32,64] [--seeds 0,1,2] [--lr auto] [--jobs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from seqarena.config import TrainConfig, model_variant
from seqarena.experiment.compare import DEFAULT_GRID
from seqarena.experiment.executor import LocalExecutor, RunSpec
from seqarena.experiment.lrsearch import search
from seqarena.experiment.summary import example_scores
from seqarena.models import build_model
from seqarena.results import machine_info, machine_label
from seqarena.runtime import setup
from seqarena.stats import seeds_interval
from seqarena.table import format_table
from seqarena.tasks.base import make_task

MODELS = ("transformer", "linear-attention", "retnet", "mamba2", "gated-deltanet", "deltanet",
          "mlstm", "hawk", "gru", "mingru")
L, LAYERS = 64, 2
TASK_ARGS = {"pairs": 8, "vocab": 64}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--widths", default="32,64")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--lr", default="auto", help="auto (the search, per model and width) or X")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="runs/state-size")
    args = p.parse_args()
    setup()
    widths = [int(w) for w in args.widths.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    started = time.perf_counter()
    executor = LocalExecutor(args.jobs)
    bases = {(m, d): TrainConfig(model=m, task="mqar", seq_len=L, steps=args.steps,
                                 batch_size=32, d_model=d, layers=LAYERS, lr=3e-3,
                                 eval_every=0, checkpoint_every=0, keep_checkpoints=1,
                                 threads=1, out=str(out), label=f"{m}-d{d}",
                                 name=f"{m}-d{d}", task_args=TASK_ARGS, seed=seeds[0])
             for m in args.models.split(",") for d in widths}
    if args.lr == "auto":
        found = search(list(bases.values()), DEFAULT_GRID, 0.25, executor, out / "lr-search",
                       echo=lambda line: print(line, flush=True), resume=True)
        rates = {key: found[base.label].lr for key, base in bases.items()}
    else:
        rates = {key: float(args.lr) for key in bases}
    configs = [dataclasses.replace(base, lr=rates[key], seed=seed,
                                   name=f"{base.name}-s{seed}")
               for key, base in bases.items() for seed in seeds]
    results = executor.run([RunSpec(dataclasses.asdict(c), resume=True) for c in configs])
    finish = make_task("mqar", seq_len=L, **TASK_ARGS).finish
    rows = []
    for (m, d), base in bases.items():
        runs = [r for c, r in zip(configs, results) if c.label == base.label]
        done = [r for r in runs if r.metric is not None]
        scores = [example_scores(r, finish) for r in done]
        ci = seeds_interval(scores, "accuracy") if done and all(scores) else None
        rows.append({"model": m, "d_model": d, "params": runs[0].params, "lr": rates[m, d],
                     "state": state_floats(m, d, LAYERS, {}, L),
                     "accuracy": statistics.fmean(r.metric for r in done) if done else None,
                     "ci": list(ci) if ci else None, "family": runs[0].family,
                     "status": ",".join(sorted({r.status for r in runs}))})
    wall = time.perf_counter() - started
    setting = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}, " + \
        ("each model's rate per width" if args.lr == "auto" else f"lr {args.lr}")
    print(f"{machine_label(machine_info())}; MQAR L={L}, 8 pairs, vocabulary 64, {LAYERS} layers, "
          f"{args.steps} steps, {setting}; {wall:.0f} s")
    print(format_table([{**r, "accuracy": interval_text(r["accuracy"], r["ci"]),
                         "lr": f"{r['lr']:g}"} for r in rows],
                       ["model", "d_model", "params", "state", "lr", "accuracy", "status"],
                       ["model", "D", "params", "state (floats)", "lr", "test accuracy [95 %]",
                        "status"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "state_size.json").write_text(json.dumps(
        {"machine": machine_info(), "seeds": seeds, "lr": args.lr, "steps": args.steps,
         "wall_s": wall, "rows": rows}, indent=1))
    chart(rows, out / "state_size.png", f"{setting}, widths {args.widths}")
    print(f"wrote {out / 'state_size.json'} and {out / 'state_size.png'}")


def state_floats(model: str, d_model: int, layers: int, model_args: dict, seq_len: int) -> int:
    """Floats a model's step() carries per sequence after seq_len tokens, over all layers."""
    name, fixed = model_variant(model)
    one = build_model(name, d_model=d_model, layers=1, **{**model_args, **fixed})
    return one.state_size(seq_len) * layers


def interval_text(value: float | None, ci: list | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def chart(rows: list[dict], path: Path, setting: str, seq_len: int = L) -> None:
    """Accuracy against state size, one point per model and width (with its 95 % interval),
    in the report's colours; `setting` says what the points were trained with."""
    import matplotlib
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from seqarena.report.style import STYLE, Palette, figure_grid, legend_below

    colour = Palette({r["model"]: r["family"] for r in rows})
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = figure_grid(1, height=3.8)
        for m in dict.fromkeys(r["model"] for r in rows):
            mine = sorted((r for r in rows if r["model"] == m and r["accuracy"] is not None),
                          key=lambda r: r["state"])
            xs, ys = [r["state"] for r in mine], [r["accuracy"] for r in mine]
            low = [y - (r["ci"] or (y, y))[0] for y, r in zip(ys, mine)]
            high = [(r["ci"] or (y, y))[1] - y for y, r in zip(ys, mine)]
            ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=2, color=colour(m), label=m)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"state size at L = {seq_len} (floats per sequence, all layers)")
        ax.set_ylabel("MQAR test accuracy")
        ax.set_title(f"Associative recall against the state a model decodes with\n{setting}")
        legend_below(fig, [ax])
        fig.savefig(path, facecolor="white")


if __name__ == "__main__":
    main()
