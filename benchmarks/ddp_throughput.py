"""Data-parallel training throughput on this machine's CPU: 1 process x N threads against
N processes x 1 thread (DistributedDataParallel over gloo), N the cores available; 1 process x
1 thread beside them says how much either layout gains from the other cores.

Every layout trains the same model on the same global batch (N processes take batch/N each).
tokens/s is the trainer's own figure for the whole run, every rank's tokens counted: steady
state, without each process's first step, evaluation or checkpointing. Each layout runs
--repeats times; the table shows the median and the range. Other work on the machine hurts
threads that wait for each other at every operation far more than independent processes, so the
load average is printed beside the figures, and OpenMP's idle threads wait as in
`seqarena bench` (seqarena.bench.openmp): spinning on an idle machine, passively on a busy one.

    python benchmarks/ddp_throughput.py
    python benchmarks/ddp_throughput.py --models lstm,transformer,mingru --repeats 5 --out ddp.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

from seqarena.bench.openmp import choose_wait_policy, load_average

LOAD_AT_START = load_average()
choose_wait_policy()  # before torch loads OpenMP; the ranks it spawns inherit the choice

from seqarena.training.distributed import cores  # noqa: E402
from seqarena.results import (BenchResult, RunResult, machine_info, machine_label,  # noqa: E402
                              write_results)
from seqarena.table import format_table  # noqa: E402
from seqarena.config import TrainConfig  # noqa: E402
from seqarena.training.train import train, train_processes  # noqa: E402


def run(cfg: TrainConfig, nproc: int) -> RunResult:
    return train(cfg).result if nproc == 1 else train_processes(cfg, nproc)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lstm,transformer", help="comma-separated model names")
    p.add_argument("--task", default="adding")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=32, help="global batch, split among processes")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=30, help="steps per run (the first is not timed)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", type=int, default=cores(), help="N: threads of the one process, "
                   "processes of the other layout")
    p.add_argument("--out", help="also write the results here (seqarena's bench JSON schema)")
    args = p.parse_args(argv)
    if args.batch % args.cores:
        p.error(f"--batch {args.batch} does not split evenly among {args.cores} processes")

    layouts = [(1, 1), (1, args.cores), (args.cores, 1)] if args.cores > 1 else [(1, 1)]
    rows, results = [], []
    with tempfile.TemporaryDirectory() as runs:
        for model in args.models.split(","):
            rates = {layout: [] for layout in layouts}
            for repeat in range(args.repeats):  # layouts interleaved: a change of load hits all
                for nproc, threads in layouts:
                    cfg = TrainConfig(model=model, task=args.task, seq_len=args.seq_len,
                                      steps=args.steps, batch_size=args.batch // nproc,
                                      d_model=args.d_model, layers=args.layers, threads=threads,
                                      eval_every=0, log_every=args.steps, checkpoint_every=0,
                                      task_args={"eval_size": 64}, device="cpu", out=runs,
                                      name=f"{model}-{nproc}x{threads}-{repeat}")
                    rates[nproc, threads].append(run(cfg, nproc).train_tokens_per_s)
            alone = statistics.median(rates[1, 1])
            for (nproc, threads), got in rates.items():
                median = statistics.median(got)
                layout = f"{nproc} process{'es' if nproc > 1 else ''} x {threads} " \
                         f"thread{'s' if threads > 1 else ''}"
                rows.append({"model": model, "layout": layout, "tokens_per_s": round(median),
                             "range": f"{min(got):,.0f} - {max(got):,.0f}",
                             "speedup": f"{median / alone:.2f}x"})
                results.append(BenchResult(
                    model=model, mode="train", seq_len=args.seq_len,
                    batch=args.batch, d_model=args.d_model, layers=args.layers,
                    threads=nproc * threads, device="cpu", dtype="float32", tokens_per_s=median,
                    latency_s=args.batch * args.seq_len / median, flops=None, mfu=None,
                    peak_mem_bytes=None, impl=f"{nproc} x {threads}"))
    load = (LOAD_AT_START, load_average())
    machine = {**machine_info(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    print(f"{args.task}, L={args.seq_len}, global batch {args.batch}, d_model {args.d_model}, "
          f"{args.layers} layers, {args.steps} steps x {args.repeats} repeats; "
          f"{machine_label({**machine, 'threads': args.cores})}; "
          f"load average {load[0]:.1f} before, {load[1]:.1f} after; "
          f"OMP_WAIT_POLICY={machine['omp_wait_policy'] or 'default (spin)'}")
    print(format_table(rows, ["model", "layout", "tokens_per_s", "range", "speedup"],
                       ["model", "layout", "tokens/s", "range", "vs 1 x 1"]))
    if args.out:
        write_results(args.out, "bench", results, command=["python", *sys.argv], machine=machine,
                      load_average=load, task=args.task, steps=args.steps, layouts=rows)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
