"""Zoology's picture on this machine: associative recall (MQAR) against the state a model decodes
with, one point per model and width.

Arora et al. 2023 ("Zoology: Measuring and Improving Recall in Efficient Language Models") plot
MQAR accuracy against the recurrent state's size: attention recalls at every size (its state is
the KV cache, growing with the sequence), gated convolutions and diagonal recurrences need far
more state, and the delta rule recalls better than Mamba-style gating at equal state (Yang et al.
2024). Here every model trains on MQAR (L = 64, 8 key-value pairs, vocabulary 64, as
benchmarks/accuracy.py), 2 layers, at each width in --widths, one seed, one rate for all (no
search); the x axis is `state_size(64)` x layers, floats per sequence.

    python benchmarks/state_size.py [--widths 32,64] [--steps 1200] [--jobs 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from seqarena.config import TrainConfig, model_variant
from seqarena.experiment.executor import LocalExecutor, RunSpec
from seqarena.models import build_model
from seqarena.results import machine_info, machine_label
from seqarena.runtime import setup
from seqarena.table import format_table

MODELS = ("transformer", "linear-attention", "retnet", "mamba2", "gated-deltanet", "deltanet",
          "mlstm", "hawk", "gru", "mingru")
L, LAYERS = 64, 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--widths", default="32,64")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="runs/state-size")
    args = p.parse_args()
    setup()
    widths = [int(w) for w in args.widths.split(",")]
    models = args.models.split(",")
    out = Path(args.out)
    started = time.perf_counter()
    configs = [TrainConfig(model=m, task="mqar", seq_len=L, steps=args.steps, batch_size=32,
                           d_model=d, layers=LAYERS, lr=args.lr, eval_every=0,
                           checkpoint_every=0, keep_checkpoints=1, threads=1, out=str(out),
                           name=f"{m}-d{d}", task_args={"pairs": 8, "vocab": 64})
               for m in models for d in widths]
    results = LocalExecutor(args.jobs).run([RunSpec(dataclasses.asdict(c), resume=True)
                                            for c in configs])
    rows = []
    for cfg, r in zip(configs, results):
        state = state_floats(cfg.model, cfg.d_model, LAYERS, cfg.model_args, L)
        rows.append({"model": cfg.model, "d_model": cfg.d_model, "params": r.params,
                     "state": state, "accuracy": r.metric, "ci": r.metric_ci,
                     "family": r.family, "status": r.status})
    wall = time.perf_counter() - started
    print(f"{machine_label(machine_info())}; MQAR L={L}, 8 pairs, vocabulary 64, {LAYERS} layers, "
          f"{args.steps} steps, lr {args.lr:g}, seed 0; {wall:.0f} s")
    print(format_table([{**r, "accuracy": interval_text(r["accuracy"], r["ci"])} for r in rows],
                       ["model", "d_model", "params", "state", "accuracy", "status"],
                       ["model", "D", "params", "state (floats)", "test accuracy [95 %]",
                        "status"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "state_size.json").write_text(json.dumps({"machine": machine_info(), "rows": rows},
                                                    indent=1))
    chart(rows, out / "state_size.png", f"one seed, lr {args.lr:g}, widths {args.widths}")
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
        ax.set_title(f"Associative recall against the state a model decodes with ({setting})")
        legend_below(fig, [ax])
        fig.savefig(path, facecolor="white")


if __name__ == "__main__":
    main()
