"""What running comparisons' runs side by side (`compare --jobs N`) does to their tokens/s.

The same small comparison (fixed learning rate, so both sides train the same runs) is run with
--jobs 1 and with --jobs N, back to back, and each run's training tokens/s is set side by side.
The metrics are the same by construction (checked here too); only the timings share the
machine. `compare`'s default --jobs is 1 when concurrency moves tokens/s by more than 10 %.

    python benchmarks/jobs_throughput.py      # --jobs 1 against --jobs 2, ~2 min on 2 cores
    python benchmarks/jobs_throughput.py --jobs 4 --models lstm,gru,mingru,transformer
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from seqarena.experiment.compare import DEFAULT_TRAIN, CompareConfig, compare
from seqarena.table import format_table

LIMIT = 0.10  # a move in tokens/s beyond this keeps compare's default at one job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lstm,transformer")
    parser.add_argument("--seq-lens", default="50,200")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    train = dataclasses.replace(DEFAULT_TRAIN, steps=args.steps, eval_every=args.steps // 4)
    base = CompareConfig(models=tuple(args.models.split(",")),
                         seq_lens=tuple(int(v) for v in args.seq_lens.split(",")),
                         lr_auto=False, train=train)
    speeds, metrics = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, args.jobs):
            t0 = time.perf_counter()
            outcome = compare(dataclasses.replace(base, jobs=jobs, out=str(Path(tmp) / f"j{jobs}")))
            print(f"--jobs {jobs}: {time.perf_counter() - t0:.0f} s wall", flush=True)
            for r in outcome.results:
                speeds.setdefault((r.model, r.seq_len), {})[jobs] = r.train_tokens_per_s
                metrics.setdefault((r.model, r.seq_len), {})[jobs] = r.metric
    rows, moves = [], []
    for (model, L), by_jobs in speeds.items():
        ratio = by_jobs[args.jobs] / by_jobs[1]
        moves.append(abs(ratio - 1))
        rows.append({"model": model, "L": L, "jobs_1": f"{by_jobs[1]:,.0f}",
                     f"jobs_{args.jobs}": f"{by_jobs[args.jobs]:,.0f}", "ratio": f"{ratio:.2f}",
                     "same_metric": metrics[(model, L)][1] == metrics[(model, L)][args.jobs]})
    print(format_table(rows, ["model", "L", "jobs_1", f"jobs_{args.jobs}", "ratio", "same_metric"]))
    median = statistics.median(moves)
    print(f"train tokens/s moved by {median:.0%} (median over runs) at --jobs {args.jobs}: "
          + ("more than" if median > LIMIT else "within") + f" {LIMIT:.0%}")


if __name__ == "__main__":
    main()
