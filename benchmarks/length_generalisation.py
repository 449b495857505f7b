"""Train short, test long: the Chomsky-hierarchy tasks of Deletang et al. (ICLR 2023), every model
trained on input lengths 1-40 and scored on 41-500, side by side, with intervals.

    python benchmarks/length_generalisation.py            # 8 tasks, every model, 3 seeds
    python benchmarks/length_generalisation.py --quick    # parity and reverse-string, 1 seed

Each task is one `seqarena compare` (library call): the same budget, batch and rate for every
model (a fixed rate: the lr search would be a second hour), parameters matched. A task's score is
the test accuracy averaged over the test lengths (each length has the same number of examples),
per sequence for the regular tasks and per output token for the others, as the paper scores
them; "solved" means a score above 90 % with the interval's lower end above it too, the
paper's threshold. The table prints each model's score per task, [95 % interval], and a star
where the verdict named the model best.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from seqarena.experiment.compare import CompareConfig, compare
from seqarena.config import TrainConfig
from seqarena.results import machine_info, machine_label
from seqarena.runtime import setup
from seqarena.table import format_table

TASKS = ("parity", "even-pairs", "cycle-navigation", "modular-arithmetic", "reverse-string",
         "stack-manipulation", "duplicate-string", "binary-addition")
SEQ_LEN = {"reverse-string": 1000, "stack-manipulation": 1001, "binary-addition": 1001,
           "duplicate-string": 1500}  # input plus the output's query tokens; the rest: 501
MODELS = ("rnn", "lstm", "gru", "mingru", "mingru@negative_eigen=true", "linear-attention",
          "transformer", "transformer@positions=learned", "transformer@positions=rope",
          "transformer@positions=alibi", "transformer@positions=none", "mamba2",
          "mamba2@negative_eigen=true", "deltanet", "deltanet@negative_eigen=true",
          "gated-deltanet", "mlstm", "hawk", "retnet")
QUICK_MODELS = ("rnn", "lstm", "mingru", "mingru@negative_eigen=true", "linear-attention",
                "transformer", "transformer@positions=rope", "transformer@positions=alibi")
SOLVED = 0.9  # the paper's threshold on the mean accuracy over test lengths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 tasks, 8 models, 1 seed")
    p.add_argument("--steps", type=int, default=0, help="default: 1000 (quick: 400)")
    p.add_argument("--seeds", default="", help="default: 0,1,2 (quick: 0)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--tasks", default="", help="comma-separated; default: all (quick: 2)")
    p.add_argument("--models", default="", help="comma-separated; default: see MODELS")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (accuracy only is read)")
    p.add_argument("--out", default="runs/length-generalisation")
    args = p.parse_args()
    setup()
    tasks = tuple(args.tasks.split(",")) if args.tasks else \
        (("parity", "reverse-string") if args.quick else TASKS)
    models = tuple(args.models.split(",")) if args.models else \
        (QUICK_MODELS if args.quick else MODELS)
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else \
        ((0,) if args.quick else (0, 1, 2))
    steps = args.steps or (400 if args.quick else 1000)
    started = time.perf_counter()
    table, found = [], {}
    for task in tasks:
        train = TrainConfig(task=task, steps=steps, batch_size=32, d_model=64, lr=args.lr,
                            eval_every=0, checkpoint_every=0, keep_checkpoints=1, threads=1,
                            task_args={"test_per_length": 8, "test_lengths_step": 50})
        cfg = CompareConfig(models=models, seq_lens=(SEQ_LEN.get(task, 501),), seeds=seeds,
                            lr_auto=False, jobs=args.jobs, out=str(Path(args.out) / task),
                            train=train)
        summary = compare(cfg, echo=lambda line: None).summary
        winner = summary.winner(cfg.seq_lens[0])
        for row in summary.rows:
            low = row.metric_ci[0] if row.metric_ci else None
            solved = row.metric is not None and low is not None and low > SOLVED
            found[(row.model, task)] = {"score": row.metric, "ci": row.metric_ci,
                                        "solved": solved, "named_best": row.model == winner,
                                        "by_length": row.by_length}
        print(f"{task}: {time.perf_counter() - started:.0f} s so far", flush=True)
        write(Path(args.out) / "length_generalisation.json", steps, seeds, args.lr, found)
    for model in models:
        cells = {"model": model}
        for task in tasks:
            f = found.get((model, task))
            if not f or f["score"] is None:
                cells[task] = "-"
                continue
            ci = f" [{f['ci'][0]:.2f}, {f['ci'][1]:.2f}]" if f["ci"] else ""
            cells[task] = f"{f['score']:.2f}{ci}" + (" solved" if f["solved"] else "") + \
                (" *" if f["named_best"] else "")
        table.append(cells)
    print(f"\n{machine_label(machine_info())}; {steps} steps at batch 32, lr {args.lr:g}, "
          f"seeds {', '.join(map(str, seeds))}; trained on lengths 1-40, tested on 41-500 "
          f"(every 50th length and 500, 8 examples each); {time.perf_counter() - started:.0f} s")
    print(format_table(table, ["model", *tasks]))
    print(f"wrote {Path(args.out) / 'length_generalisation.json'}")


def write(out: Path, steps: int, seeds: tuple, lr: float, found: dict) -> None:
    """Everything measured so far (after each task, so a stopped run keeps its finished tasks)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": steps, "seeds": list(seeds), "lr": lr,
                               "machine": machine_info(),
                               "results": [{"model": m, "task": t, **v}
                                           for (m, t), v in found.items()]}, indent=1))


if __name__ == "__main__":
    main()
