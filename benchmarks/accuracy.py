"""Which architectures solve which memory task at which length, under a fixed budget.

Every model of the comparison (sized to one parameter count by seqarena.experiment.compare) is trained on
the adding problem at T = 100 and T = 200 (one layer), on multi-query associative recall and on
selective copying (two layers: attention needs two to recall by content, an induction head), each
for a fixed number of steps with the same optimizer settings (those of `seqarena compare`), with
3 seeds and each model's own learning rate, chosen per task by compare's validation search
(--lr auto; `--lr 3e-3 --seeds 0` gives the old single-seed, shared-rate table). Every run is kept
(one run directory each) and recorded in accuracy.json (seqarena.results, kind "compare"); the
table gives each model's test metric per task with its 95 % interval (over seeds and test
examples), the chosen rate, and whether it is solved: "solved" when the whole interval clears the
bar, "no" when none of it does, "unclear" when the interval straddles it. The MQAR
cell is also drawn as Zoology's picture, accuracy against the state each model decodes with
(mqar_state.png; benchmarks/state_size.py sweeps the width instead).

    python benchmarks/accuracy.py                      # the default suite: long (107 min with --jobs 2, AMD EPYC)
    python benchmarks/accuracy.py --quick              # a smoke run of the same code
    python benchmarks/accuracy.py --jobs 2 --out runs/accuracy   # two runs at once
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from seqarena.experiment.compare import DEFAULT_MODELS, DEFAULT_TRAIN, CompareConfig, compare
from seqarena.results import write_results
from seqarena.table import format_table
from state_size import chart, interval_text, state_floats  # benchmarks/, beside this script


# compare's five beside the recurrences with a matrix or gated diagonal state.
MODELS = DEFAULT_MODELS + ("mamba2", "gated-deltanet", "deltanet", "mlstm", "hawk", "retnet")


@dataclass(frozen=True)
class Entry:
    """One task at one length, trained for `steps`; `solved` is the bar a run must clear."""

    task: str
    seq_len: int
    steps: int
    layers: int
    solved: float  # adding: test MSE below this; token tasks: test accuracy at least this
    task_args: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.task} L={self.seq_len}"


# Adding: the memoryless baseline (always predict 1) has MSE 0.167; below 0.01 the model reads
# both marked numbers. Token tasks: 90 % of the recalled tokens right (chance is 1/16 to 1/128).
# MQAR's vocabulary is 64 (Zoology's is 8192) so that a 2-layer Transformer learns the task in
# the budget: recall is then limited by the architecture, not by learning 8192 embeddings.
SUITE = (
    Entry("adding", 100, 1000, 1, 0.01),
    Entry("adding", 200, 1000, 1, 0.01),
    Entry("mqar", 64, 1200, 2, 0.9, {"pairs": 8, "vocab": 64}),
    Entry("selective-copy", 64, 1200, 2, 0.9),
)
QUICK = tuple(dataclasses.replace(e, steps=40, seq_len=min(e.seq_len, 64)) for e in SUITE[::2])


def solved(entry: Entry, metric: float | None, ci: list | None, higher_is_better: bool) -> str:
    """"solved" when the 95 % interval clears the bar, "no" when it lies wholly on the wrong side
    (or the runs failed), "unclear" when it straddles the bar."""
    if metric is None:
        return "no"
    low, high = ci or (metric, metric)
    if higher_is_better:
        return "solved" if low >= entry.solved else "no" if high < entry.solved else "unclear"
    return "solved" if high < entry.solved else "no" if low >= entry.solved else "unclear"


def run(suite, models, seeds, out: Path, threads: int, lr: str = "auto", jobs: int = 1,
        lr_budget: float = 0.25, resume: bool = False) -> None:
    t0 = time.perf_counter()
    results, cells, recall = [], {}, []
    for entry in suite:
        train = dataclasses.replace(DEFAULT_TRAIN, task=entry.task, steps=entry.steps,
                                    budget_seconds=0.0, layers=entry.layers,
                                    task_args=entry.task_args, threads=threads,
                                    eval_every=entry.steps // 4)
        if lr != "auto":
            train = dataclasses.replace(train, lr=float(lr))
        cell_out = out / f"{entry.task}-L{entry.seq_len}"
        cfg = CompareConfig(models=models, seq_lens=(entry.seq_len,), seeds=seeds,
                            out=str(cell_out), train=train,
                            lr_auto=lr == "auto", lr_budget=lr_budget, jobs=jobs)
        print(f"== {entry.label}, {entry.layers} layer(s), {entry.steps} steps", flush=True)
        outcome = compare(cfg, echo=lambda line: print(line, flush=True),
                          resume=resume and cell_out.exists())
        results += outcome.results
        summary = outcome.summary
        for line in outcome.verdicts:
            print(line, flush=True)
        for row in summary.rows:
            word = solved(entry, row.metric, row.metric_ci, summary.higher_is_better)
            value = "-" if row.metric is None else f"{row.metric:.3g}"
            if row.metric_ci:
                value += f" [{row.metric_ci[0]:.3g}, {row.metric_ci[1]:.3g}]"
            lr_text = "-" if row.lr is None else f"{row.lr:g}"
            cells.setdefault(row.model, {"model": row.model})
            cells[row.model][entry.label] = f"{value} {word} (lr {lr_text})"
        if entry.task == "mqar":
            recall += recall_rows(entry, summary, outcome.results)
    wall = time.perf_counter() - t0
    columns = ["model"] + [e.label for e in suite]
    print()
    print(format_table(list(cells.values()), columns))
    print("metrics: adding test MSE (solved below 0.01; always predicting 1 gives 0.167), "
          "mqar and selective-copy test accuracy (solved at 0.9 or more), solved when the "
          "whole interval clears the bar, unclear when it straddles it; mean over "
          f"{len(seeds)} seed(s) [95 % interval]; lr: "
          + ("each model's, from the validation search" if lr == "auto" else "shared"))
    if recall:
        print()
        print(format_table([{**r, "accuracy": interval_text(r["accuracy"], r["ci"])}
                            for r in recall],
                           ["model", "d_model", "params", "state", "accuracy"],
                           ["model", "D", "params", "state (floats)", "MQAR accuracy [95 %]"]))
        seed_text = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
        chart(recall, out / "mqar_state.png", f"{seed_text}, each model's own rate"
              if lr == "auto" else f"{seed_text}, lr {lr}",
              seq_len=next(e.seq_len for e in suite if e.task == "mqar"))
    write_results(out / "accuracy.json", "compare", results, wall_s=wall,
                  suite=[dataclasses.asdict(e) for e in suite], table=list(cells.values()),
                  recall=recall)
    print(f"wrote {out / 'accuracy.json'}{' and mqar_state.png' if recall else ''} "
          f"({wall / 60:.1f} min)")


def recall_rows(entry: Entry, summary, results) -> list[dict]:
    """Zoology's axis for each model of the MQAR cell: the floats its step() carries at the
    task's length over all layers (the Transformer's KV cache), at the width it was matched to."""
    out = []
    for row in summary.rows:
        run = next(r for r in results if r.model == row.model and r.seq_len == row.seq_len)
        out.append({"model": row.model, "family": row.family, "d_model": run.d_model,
                    "params": row.params, "accuracy": row.metric, "ci": row.metric_ci,
                    "state": state_floats(row.model, run.d_model, run.layers, run.model_args,
                                          entry.seq_len)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--lr", default="auto",
                        help="auto (each model's rate by the validation search) or one for all")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (compare --jobs)")
    parser.add_argument("--threads", type=int, default=DEFAULT_TRAIN.threads,
                        help="CPU threads per run (default: compare's, 1; 0: every core)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run of the suite")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out (finished runs are read back)")
    parser.add_argument("--out", type=Path,
                        default=Path("runs") / time.strftime("accuracy-%Y%m%d-%H%M%S"))
    args = parser.parse_args()
    run(QUICK if args.quick else SUITE, tuple(args.models.split(",")),
        tuple(int(s) for s in args.seeds.split(",")), args.out, args.threads, args.lr, args.jobs,
        lr_budget=0.5 if args.quick else 0.25, resume=args.resume)


if __name__ == "__main__":
    main()
