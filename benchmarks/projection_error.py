"""How far to trust a projection to other hardware, measured where it can be: on this machine.

1. A sweep of lstm, gru, mingru, transformer and linear-attention at 1 and 2 threads, every mode,
   L = 32 ... 4096 (B = 8, D = 64, one layer), as `seqarena bench` runs it.
2. The projection (seqarena.bench.projection) calibrated on the points at L <= 256 and projected
   to the measured ones at L = 1024 and 4096: median and worst |projected / measured - 1| per
   mode; then calibrated at 1 thread and projected to 2 threads.
3. The serving ledger for P = 256, 1024, 4096 and G = 64, 1024, 4096: a decode-only sweep at 2
   threads reaches position 8192 = P + G, the prefills come from the first sweep.

    python benchmarks/projection_error.py [--quick] [--out DIR] [--bench DIR]

--quick: lengths up to 1024, tested at 1024, ledger P = 256, 1024 and G = 64, 1024; a few
minutes. --bench DIR reads the two sweeps an earlier run wrote there instead of timing again.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

MODELS = ("lstm", "gru", "mingru", "transformer", "linear-attention")
FULL = dict(seq_lens=(32, 64, 128, 256, 1024, 4096), test_lens=(1024, 4096),
            prompts=(256, 1024, 4096), generated=(64, 1024, 4096), min_run_time_s=0.2)
QUICK = dict(seq_lens=(32, 64, 128, 256, 1024), test_lens=(1024,), prompts=(256, 1024),
             generated=(64, 1024), min_run_time_s=0.05)
CALIBRATE_MAX_LEN = 256


def sweeps(plan: dict, out: Path) -> tuple[dict, dict]:
    """The throughput sweep (1 and 2 threads) and the decode sweep reaching P + G (2 threads)."""
    from seqarena.bench.command import bench
    from seqarena.bench.sweep import SweepConfig

    shared = dict(models=MODELS, batch_sizes=(8,), d_models=(64,), layers=(1,), devices=("cpu",),
                  time_budget_s=120.0, min_run_time_s=plan["min_run_time_s"],
                  peak_min_run_time_s=0.5, decode_window=8, rounds=3, triad_elements=1 << 23)
    main = bench(SweepConfig(seq_lens=plan["seq_lens"], threads=(1, 2), **shared), out / "sweep")
    reach = max(plan["prompts"]) + max(plan["generated"])
    decode = bench(SweepConfig(seq_lens=tuple(sorted({*plan["prompts"], reach})), threads=(2,),
                               modes=("decode",), **shared), out / "decode")
    return main.doc, decode.doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter lengths and timings")
    parser.add_argument("--out", default="runs/projection-error", help="where the sweeps go")
    parser.add_argument("--bench", help="a directory an earlier run wrote: read, do not time")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL

    from seqarena.bench.ledger import break_even, ledger, render_text
    from seqarena.bench.projection import (calibrate, error_text, nominal_floor,
                                           projection_error, roofs_from_doc,
                                           thread_projection_error)
    from seqarena.results import machine_label, read_results
    from seqarena.table import format_table

    started = time.perf_counter()
    if args.bench:
        main_doc = read_results(Path(args.bench) / "sweep" / "bench.json")
        decode_doc = read_results(Path(args.bench) / "decode" / "bench.json")
    else:
        main_doc, decode_doc = sweeps(plan, Path(args.out))
        main_doc, decode_doc = (read_results(Path(args.out) / d / "bench.json")
                                for d in ("sweep", "decode"))
    results, roofs = main_doc["results"], roofs_from_doc(main_doc)
    machine = main_doc["machine"]
    print(f"{machine_label(machine)}; load average {machine.get('load_average', 0):.1f} when "
          f"the sweep started; roofs " + ", ".join(f"{k}: {f / 1e9:.0f} GFLOP/s, {b / 1e9:.1f} GB/s"
                                                   for k, (f, b) in roofs.items()))
    failed = [r for r in results if r.status != "ok"]
    if failed:
        print(f"{len(failed)} points not timed: " + "; ".join(
            f"{r.model} {r.mode} L={r.seq_len} {r.threads}t {r.status}" for r in failed[:8]))

    print(f"\nfits at 1 thread, L <= {CALIBRATE_MAX_LEN} "
          f"(t = F/(e_f peak) + M/(e_m bandwidth) + steps x k floors):")
    fits = calibrate(results, roofs, CALIBRATE_MAX_LEN, 1, nominal_floor("cpu")).fits
    print(format_table([{"model": f.model, "mode": f.mode, "e_f": f.flops_efficiency,
                         "e_m": f.bandwidth_efficiency, "k": f.floors_per_step,
                         "err": f.fit_error} for f in fits],
                       ["model", "mode", "e_f", "e_m", "k", "err"],
                       ["model", "mode", "e_f", "e_m", "k floors/step", "fit error"]))

    print(f"\nprojection error, calibrated at L <= {CALIBRATE_MAX_LEN}, projected to L = "
          f"{', '.join(map(str, plan['test_lens']))} (|projected / measured - 1|):")
    length_errors = projection_error(results, roofs, CALIBRATE_MAX_LEN, plan["test_lens"])
    print(error_text(length_errors))
    print("\nprojection error, calibrated at 1 thread (every length), projected to 2 threads:")
    thread_errors = thread_projection_error(results, roofs, 1, 2)
    print(error_text(thread_errors))
    medians = [e.median for e in length_errors + thread_errors if e.median is not None]
    over = [f"{e.mode} ({e.what}) {e.median:.0%}" for e in length_errors + thread_errors
            if e.median is not None and e.median > 0.2]
    print(f"\ngoal: median error <= 20 % in every row; {len(medians) - len(over)} of "
          f"{len(medians)} rows meet it" + (f"; over it: {'; '.join(over)}" if over else ""))

    # the ledger at 2 threads: prefill from the first sweep, decode from the one reaching P + G
    rows = [r for r in results if r.mode == "prefill" and r.threads == 2]
    rows += [r for r in decode_doc["results"] if r.mode == "decode"]
    print()
    print(render_text(ledger(rows, plan["prompts"], plan["generated"]),
                      break_even(rows, plan["prompts"])))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
