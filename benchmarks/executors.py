"""Wall time of one comparison on each executor: local --jobs 1, local --jobs 2, Ray on 2 CPUs.

The same comparison (by default `seqarena compare`'s default one, --lr auto included) runs three
times back to back, each into a fresh directory, and the table sets their wall times side by side
with whether every run's metric and chosen rate equal those of --jobs 1 (they must: each run
seeds its own data and weights). The Ray row includes starting and stopping its local instance.

    python benchmarks/executors.py                 # the default comparison, ~15 min on 2 cores
    python benchmarks/executors.py --models lstm,gru --seq-lens 10 --steps 20 --lr 1e-3  # tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from seqarena.experiment.cluster import RayExecutor
from seqarena.experiment.compare import compare, compare_config_from
from seqarena.experiment.executor import LocalExecutor
from seqarena.table import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated (default: compare's default models)")
    parser.add_argument("--seq-lens", help="comma-separated (default: compare's, 50,200)")
    parser.add_argument("--steps", type=int, help="training steps (default: compare's, 400)")
    parser.add_argument("--lr", default="auto", help="auto (the default search) or one rate")
    args = parser.parse_args()
    given = {"models": args.models and args.models.split(","), "steps": args.steps,
             "seq_lens": args.seq_lens and [int(v) for v in args.seq_lens.split(",")],
             "lr": args.lr if args.lr == "auto" else float(args.lr)}
    base = compare_config_from({k: v for k, v in given.items() if v is not None}, where="flags")
    print(f"{len(base.models)} model(s) x {len(base.seq_lens)} length(s) x {len(base.seeds)} "
          f"seed(s), {base.train.steps} steps, lr {'auto' if base.lr_auto else base.train.lr}, "
          f"each executor into a fresh directory", flush=True)
    executors = [("local, --jobs 1", lambda: LocalExecutor(1)),
                 ("local, --jobs 2", lambda: LocalExecutor(2)),
                 ("ray, 2 CPUs", lambda: RayExecutor(num_cpus=2))]
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, make) in enumerate(executors):
            t0 = time.perf_counter()
            executor = make()
            try:
                outcome = compare(dataclasses.replace(base, out=f"{tmp}/{k}"), executor=executor)
            finally:
                if isinstance(executor, RayExecutor):
                    executor.close()
            wall = time.perf_counter() - t0
            numbers = sorted((r.model, r.seq_len, r.seed, r.metric, r.lr) for r in outcome.results)
            reference = reference or numbers
            rows.append({"executor": name, "runs": len(outcome.results), "wall_s": f"{wall:.1f}",
                         "same_metrics": numbers == reference})
            print(f"{name}: {wall:.1f} s wall", flush=True)
    print(format_table(rows, ["executor", "runs", "wall_s", "same_metrics"]))


if __name__ == "__main__":
    main()
