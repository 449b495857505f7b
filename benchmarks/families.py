"""The chunked recurrences against their own step-by-step references, on this machine's CPU:
training speed at L = 4096 and decoding latency against position, in one interleaved run.

For each family (Mamba-2, Gated DeltaNet, DeltaNet, mLSTM, Hawk, RetNet, and linear attention
and minGRU for scale) the fast path (impl "chunked", or the scan) and its readable reference on
the same weights are each timed once per round, forward + backward at B = 1, L = 4096,
D = 64, one layer, float32, the order flipped every round; the speed-up is the median of the
per-round ratios with the range of those ratios (seqarena.bench.summary.median_interval). A
fast path is timed only after it matches its reference (outputs and gradients,
seqarena.bench.points.check_paths). Goal: >= 5x, met only when the whole interval clears it.

Decoding: the latency of one step() at position 64 and at 4096 (the median over a window of 16
steps ending there); goal: the ratio 4096 / 64 within 1.2x, as an O(1) state promises.

    python benchmarks/families.py [--threads 2] [--rounds 3] [--models mamba2,deltanet]
"""

from __future__ import annotations

import argparse
import statistics

from seqarena.bench.openmp import choose_wait_policy, load_average

LOAD_AT_START = load_average()
choose_wait_policy()  # before torch loads OpenMP (see seqarena.bench.openmp)

import torch  # noqa: E402

from seqarena.bench.points import (Workload, check_paths, make_input, measure_decode,  # noqa: E402
                                   train_step)
from seqarena.bench.summary import median_interval  # noqa: E402
from seqarena.bench.timer import time_round  # noqa: E402
from seqarena.models import build_model  # noqa: E402
from seqarena.results import machine_info, machine_label  # noqa: E402
from seqarena.runtime import setup  # noqa: E402
from seqarena.table import format_table  # noqa: E402

MODELS = ("mamba2", "gated-deltanet", "deltanet", "mlstm", "hawk", "retnet", "linear-attention",
          "mingru")
CPU = torch.device("cpu")
B, L, D = 1, 4096, 64
TRAIN_GOAL, DECODE_GOAL = 5.0, 1.2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    setup()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        fast = build_model(name, d_model=D, layers=1)
        reference = fast.reference()
        row = {"model": name, "fast": fast.config.impl, "reference": reference.config.impl}
        refused = check_paths(Workload(fast), CPU, torch.float32)
        if refused:
            rows.append({**row, "train": f"not timed: {refused}"})
            continue
        x = make_input(B, L, D, CPU, torch.float32, seed=0)
        steps = {"fast": train_step(Workload(fast), x), "ref": train_step(Workload(reference), x)}
        for step in steps.values():  # warm: allocation and kernel choice
            step()
        times = {"fast": [], "ref": []}
        for k in range(args.rounds):
            for side in ("fast", "ref") if k % 2 == 0 else ("ref", "fast"):
                times[side].append(time_round(steps[side], CPU, args.threads, 0.0).median_s)
        ratios = [r / f for r, f in zip(times["ref"], times["fast"])]
        ratio, (low, high) = statistics.median(ratios), median_interval(ratios)
        decode = {p: measure_decode(Workload(fast), p, B, D, CPU, torch.float32, args.threads,
                                    window=16).timing.median_s for p in (64, 4096)}
        growth = decode[4096] / decode[64]
        rows.append({**row, "fast_s": f"{statistics.median(times['fast']):.3f}",
                     "ref_s": f"{statistics.median(times['ref']):.2f}",
                     "train": f"{ratio:.1f}x [{low:.1f}-{high:.1f}] "
                              + ("met" if low >= TRAIN_GOAL else
                                 "noise" if high >= TRAIN_GOAL else "missed"),
                     "decode_64_us": f"{1e6 * decode[64]:.0f}",
                     "decode_4096_us": f"{1e6 * decode[4096]:.0f}",
                     "decode": f"{growth:.2f}x " + ("met" if growth <= DECODE_GOAL else "missed")})
        print(f"{name}: done", flush=True)
    print(f"\n{machine_label({**machine_info(), 'threads': args.threads})}; B={B}, L={L}, D={D}, "
          f"1 layer, float32, {args.rounds} rounds; load average {LOAD_AT_START:.1f} at start, "
          f"{load_average():.1f} at the end")
    print(format_table(rows, ["model", "fast", "reference", "fast_s", "ref_s", "train",
                              "decode_64_us", "decode_4096_us", "decode"],
                       ["model", "fast path", "reference", "fast s/step", "reference s/step",
                        f"speed-up [range] (goal >= {TRAIN_GOAL:g}x)", "decode us @64",
                        "decode us @4096", f"4096 / 64 (goal <= {DECODE_GOAL:g}x)"]))


if __name__ == "__main__":
    main()
