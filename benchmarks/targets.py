"""The performance targets of seqarena, measured as ratios in one run on this machine.

Training step (forward, backward, AdamW), B=16, D=128, one layer, float32, every core:
- our transformer layer >= 1.0x torch.nn.TransformerEncoderLayer (same configuration) at L=1024,
  and >= 1.3x x-transformers Encoder(depth=1), both in its fast configuration (flash attention,
  our head width) and in its defaults (head width 64, attention written out); all non-causal, so
  ours runs with causal=False;
- our mingru >= 1.2x minGRU-pytorch at L=4096, and >= 20x our own sequential mingru;
- our lstm and gru >= 0.95x a bare torch.nn.LSTM / GRU (L=1024);
- MFU against the measured matmul peak: lstm >= 40 % at L=1024, transformer >= 50 % at L=256;
- decode: a recurrent model's per-token latency at position 4096 within 1.2x of position 64;
  the transformer's growth (KV cache) measured and reported.

Every contender is timed once per round, beside the others of its target, and the order flips
every other round, so a slow spell of a shared machine falls on both sides of a ratio; a ratio
is the median over rounds of each round's ratio, an MFU divides by the peak measured in the same
round. Each figure comes with its interval: the range of the per-round values (with 5 rounds, a
94 % interval for the median; more rounds narrow it to order statistics, see
seqarena.bench.summary.median_interval). A target is met only when the whole interval is past its
goal; one whose interval holds the goal is reported as inside the noise, not met. FLOPs follow
seqarena.flops (matmul FLOPs, training = 3x forward). With --profile, each missed target is
explained by torch.profiler's top operators for both sides.

    python benchmarks/targets.py [--rounds 5] [--min-run-time 0.3] [--profile] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Callable

from seqarena.bench.openmp import choose_wait_policy, load_average

LOAD_AT_START = load_average()
choose_wait_policy()  # before torch loads OpenMP (see seqarena.bench.openmp)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.profiler import ProfilerActivity, profile as torch_profile  # noqa: E402

from seqarena.bench.peak import blas_name, matmul_peak, peak_key  # noqa: E402
from seqarena.bench.peers import PEERS, Shape  # noqa: E402
from seqarena.bench.points import (  # noqa: E402
    Workload, check_paths, make_input, measure_decode, measure_throughput, train_step)
from seqarena.bench.summary import median_interval  # noqa: E402
from seqarena.bench.sweep import all_cores  # noqa: E402
from seqarena.bench.timer import num_threads  # noqa: E402
from seqarena.models import build_model  # noqa: E402
from seqarena.results import BenchResult, machine_info, machine_label, write_results  # noqa: E402
from seqarena.runtime import setup as setup_runtime  # noqa: E402
from seqarena.table import format_table  # noqa: E402

B, D, LAYERS = 16, 128, 1
CPU = torch.device("cpu")


@dataclass
class Contender:
    name: str
    impl: str  # "seqarena" or the peer's name, as results files say
    make: Callable[[], nn.Module]  # ours are checked against their reference() first


def ours(name: str, **fields) -> Contender:
    label = name + "".join(f" {k}={v}" for k, v in fields.items())
    return Contender(label, "seqarena", lambda: build_model(name, d_model=D, layers=LAYERS, **fields))


def peer(name: str, **transformer_fields) -> Contender:
    p = PEERS.get(name)
    return Contender(p.impl, p.impl,
                     lambda: p.build(Shape.like_ours(D, LAYERS, **transformer_fields)))


CONTENDERS = {
    "transformer-enc": ours("transformer", causal=False),
    "torch-encoder-layer": peer("torch-transformer", causal=False),
    "x-transformers": peer("x-transformers", causal=False),
    "x-transformers-default": peer("x-transformers-default", causal=False),
    "transformer": ours("transformer"),
    "lstm": ours("lstm"),
    "torch-lstm": peer("torch-lstm"),
    "gru": ours("gru"),
    "torch-gru": peer("torch-gru"),
    "mingru": ours("mingru"),
    "mingru-pytorch": peer("mingru-pytorch"),
    "mingru-sequential": ours("mingru", impl="sequential"),
}
TRAIN_POINTS = [("transformer-enc", 1024), ("torch-encoder-layer", 1024), ("x-transformers", 1024),
                ("x-transformers-default", 1024), ("transformer", 256), ("lstm", 1024), ("torch-lstm", 1024), ("gru", 1024),
                ("torch-gru", 1024), ("mingru", 4096), ("mingru-pytorch", 4096),
                ("mingru-sequential", 4096)]
DECODE_MODELS = ["lstm", "gru", "mingru", "transformer"]
FAMILIES: dict[str, str] = {}  # contender name -> its backbone's family, as results state it
DECODE_POSITIONS = (64, 4096)


def build(key: str) -> Workload:
    """The contender's backbone, refused if its fast path disagrees with its reference."""
    c = CONTENDERS[key]
    workload = Workload(c.make())
    refusal = check_paths(workload, CPU, torch.float32)
    FAMILIES[c.name] = workload.module.family
    if refusal:
        sys.exit(f"targets: {c.name} is not timed: {refusal}")
    return workload


@dataclass
class Rounds:
    """Every figure of every round: seconds per step, and the peak measured beside them."""

    train: dict[tuple[str, int], list[float]]  # (contender, L) -> seconds per training step
    flops: dict[tuple[str, int], float]  # (contender, L) -> FLOPs per training step
    peak: list[dict[str, float]]  # per round: FLOP/s of each matmul path
    decode: dict[tuple[str, int], list[float]]  # (model, position) -> seconds per token

    def ratio(self, figures, a, b) -> tuple[float, float, float]:
        """Median over rounds of figures[a] / figures[b], each round's pair timed side by side,
        and its interval."""
        return with_interval([x / y for x, y in zip(figures[a], figures[b])])

    def mfu(self, point, path: str | None = None) -> tuple[float, float, float]:
        """Median over rounds of FLOP/s / that round's peak (the best path, or `path`'s), and
        its interval."""
        return with_interval([self.flops[point] / t / (p[path] if path else max(p.values()))
                              for t, p in zip(self.train[point], self.peak)])


def with_interval(values: list[float]) -> tuple[float, float, float]:
    return (statistics.median(values), *median_interval(values))


def measure(rounds: int, min_run_time: float, threads: int) -> Rounds:
    """Each round: the peak, then every contender, the order reversed every other round so that
    the contenders of a target sit side by side and neither always goes first."""
    workloads = {key: build(key) for key, _ in TRAIN_POINTS}
    inputs = {L: make_input(B, L, D, CPU, torch.float32) for L in {L for _, L in TRAIN_POINTS}}
    out = Rounds({point: [] for point in TRAIN_POINTS}, {}, [],
                 {(m, p): [] for m in DECODE_MODELS for p in DECODE_POSITIONS})
    for r in range(rounds):
        out.peak.append(matmul_peak(CPU, torch.float32, threads, min_run_time)[1])
        for key, L in TRAIN_POINTS if r % 2 == 0 else TRAIN_POINTS[::-1]:
            m = measure_throughput(workloads[key], "train", inputs[L], threads, min_run_time)
            out.flops[(key, L)] = m.flops
            out.train[(key, L)].append(m.timing.median_s)
            print(f"  round {r + 1}: {key} L={L} {m.timing.median_s * 1e3:.1f} ms", file=sys.stderr)
        for name in DECODE_MODELS:
            for p in DECODE_POSITIONS if r % 2 == 0 else DECODE_POSITIONS[::-1]:
                m = measure_decode(workloads[name], p, B, D, CPU, torch.float32, threads, window=32)
                out.decode[(name, p)].append(m.timing.median_s)
    return out


def targets(m: Rounds) -> list[dict]:
    """One row per target: what it asks, what was measured (median [interval]), whether it is
    met: True only when the whole interval is past the goal, None when it holds the goal."""
    def speedup(a, b):  # same L and B: a ratio of step times is a ratio of tokens/s
        return m.ratio(m.train, b, a)

    def pct(figure):
        return tuple(100 * v for v in figure)

    rows = [
        ("transformer vs torch.nn.TransformerEncoderLayer, L=1024",
         speedup(("transformer-enc", 1024), ("torch-encoder-layer", 1024)), ">=", 1.0, "x"),
        ("transformer vs x-transformers Encoder(depth=1), flash, L=1024",
         speedup(("transformer-enc", 1024), ("x-transformers", 1024)), ">=", 1.3, "x"),
        ("transformer vs x-transformers Encoder(depth=1), defaults, L=1024",
         speedup(("transformer-enc", 1024), ("x-transformers-default", 1024)), ">=", 1.3, "x"),
        ("mingru vs minGRU-pytorch, L=4096",
         speedup(("mingru", 4096), ("mingru-pytorch", 4096)), ">=", 1.2, "x"),
        ("mingru vs our sequential mingru, L=4096",
         speedup(("mingru", 4096), ("mingru-sequential", 4096)), ">=", 20.0, "x"),
        ("lstm vs torch.nn.LSTM, L=1024", speedup(("lstm", 1024), ("torch-lstm", 1024)), ">=",
         0.95, "x"),
        ("gru vs torch.nn.GRU, L=1024", speedup(("gru", 1024), ("torch-gru", 1024)), ">=", 0.95,
         "x"),
        ("lstm MFU, L=1024", pct(m.mfu(("lstm", 1024))), ">=", 40.0, "%"),
        ("transformer MFU, L=256", pct(m.mfu(("transformer", 256))), ">=", 50.0, "%"),
    ]
    rows += [(f"{name} decode latency, position 4096 / position 64",
              m.ratio(m.decode, (name, 4096), (name, 64)),
              "<=" if name != "transformer" else None, 1.2, "x") for name in DECODE_MODELS]
    return [target_row(*row) for row in rows]


def target_row(target: str, figure: tuple[float, float, float], sense: str | None, goal: float,
               unit: str) -> dict:
    """A target's row; `sense` ">=" or "<=" (None: reported only)."""
    value, low, high = figure
    if sense is None:
        met = None
    elif (low >= goal) if sense == ">=" else (high <= goal):
        met = True
    elif (high < goal) if sense == ">=" else (low > goal):
        met = False
    else:
        met = None  # the interval holds the goal: inside the noise
    verdict = {True: "yes", False: "MISSED"}.get(met, "-" if sense is None else "noise")
    return {"target": target, "measured": f"{value:.2f}{unit} [{low:.2f}-{high:.2f}]",
            "goal": "(reported)" if sense is None else f"{sense} {goal:g}{unit}", "met": met,
            "verdict": verdict, "value": value, "low": low, "high": high}


def profile(keys_and_lengths, threads: int, steps: int = 3) -> None:
    """torch.profiler's top operators by self CPU time for a few training steps of each."""
    for key, L in keys_and_lengths:
        workload = build(key)
        step = train_step(workload, make_input(B, L, D, CPU, torch.float32))
        with num_threads(threads):
            step()  # warm-up: optimizer state, kernel choice
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    step()
        print(f"\n--- profile: {CONTENDERS[key].name} (L={L}), {steps} training steps ---")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


MISSED_SIDES = {  # target -> the points to profile when it is missed
    0: [("transformer-enc", 1024), ("torch-encoder-layer", 1024)],
    1: [("transformer-enc", 1024), ("x-transformers", 1024)],
    2: [("transformer-enc", 1024), ("x-transformers-default", 1024)],
    3: [("mingru", 4096), ("mingru-pytorch", 4096)],
    4: [("mingru", 4096)],
    5: [("lstm", 1024), ("torch-lstm", 1024)],
    6: [("gru", 1024), ("torch-gru", 1024)],
    7: [("lstm", 1024)],
    8: [("transformer", 256)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--min-run-time", type=float, default=0.3,
                        help="timed seconds per contender per round (default 0.3)")
    parser.add_argument("--threads", type=int, default=all_cores(),
                        help="CPU threads (default: every core)")
    parser.add_argument("--profile", action="store_true", help="profile each missed target")
    parser.add_argument("--out", help="write targets.json (the bench results schema) here")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="keep subnormal floats (seqarena flushes them by default)")
    args = parser.parse_args()
    if args.keep_denormals:
        os.environ["SEQARENA_KEEP_DENORMALS"] = "1"
    setup_runtime()

    m = measure(args.rounds, args.min_run_time, args.threads)
    rows = targets(m)
    machine = {**machine_info(), "threads": args.threads, "load_average": LOAD_AT_START,
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    print(f"\n{machine_label(machine)}; B={B}, D={D}, {LAYERS} layer, float32, "
          f"{args.rounds} rounds; load average {LOAD_AT_START:.1f} at start, OpenMP wait "
          f"{machine['omp_wait_policy'] or 'default (spin)'}")
    paths = {path: statistics.median(p[path] for p in m.peak) for path in m.peak[0]}
    print("matmul peak (median of rounds): " + ", ".join(
        f"{path} {f / 1e9:.1f} GFLOP/s" for path, f in paths.items()) + "; MFU divides by the best")
    print(format_table(rows, ["target", "measured", "goal", "verdict"],
                       ["target", "measured [interval]", "goal", "met"]))
    print("met: the whole interval is past the goal; noise: the interval holds the goal")
    details = []
    blas = blas_name(CPU)
    for (k, L), times in m.train.items():
        t = statistics.median(times)
        details.append({"contender": CONTENDERS[k].name, "L": L, "ms": 1e3 * t,
                        "rounds_ms": f"{1e3 * min(times):.0f}-{1e3 * max(times):.0f}",
                        "tokens/s": round(B * L / t), "GFLOP/s": m.flops[(k, L)] / t / 1e9,
                        "MFU %": 100 * m.mfu((k, L))[0],
                        f"MFU % of {blas}": 100 * m.mfu((k, L), blas)[0]})
    print("\n" + format_table(details, ["contender", "L", "ms", "rounds_ms", "tokens/s", "GFLOP/s",
                                        "MFU %", f"MFU % of {blas}"]))
    print("\n" + format_table([{"model": name, "position": p,
                                "us/token": 1e6 * statistics.median(times)}
                               for (name, p), times in m.decode.items()],
                              ["model", "position", "us/token"]))
    if args.out:
        key = peak_key("cpu", "float32", args.threads)
        results = [BenchResult(CONTENDERS[k].name, CONTENDERS[k].impl, "train", L, B, D, LAYERS,
                               args.threads, "cpu", "float32", B * L / statistics.median(times),
                               statistics.median(times), m.flops[(k, L)], m.mfu((k, L))[0], None,
                               family=FAMILIES[CONTENDERS[k].name], round_s=times)
                   for (k, L), times in m.train.items()]
        results += [BenchResult(name, "seqarena", "decode", p, B, D, LAYERS, args.threads, "cpu",
                                "float32", B / statistics.median(times), statistics.median(times),
                                None, None, None, family=FAMILIES[CONTENDERS[name].name],
                                position=p, round_s=times)
                    for (name, p), times in m.decode.items()]
        write_results(f"{args.out}/targets.json", "bench", results, machine=machine,
                      peak_flops={key: max(paths.values())}, peak_paths={key: paths},
                      targets=rows)
    if args.profile:
        missed = [i for i, r in enumerate(rows) if r["met"] is False and i in MISSED_SIDES]
        for i in missed:
            row = rows[i]
            print(f"\n=== missed: {row['target']} ({row['measured']}, goal {row['goal']})")
            profile(MISSED_SIDES[i], args.threads)


if __name__ == "__main__":
    main()
