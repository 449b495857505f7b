"""What only a CUDA machine can check, in one run of a few minutes, printed as one table.

1. FLOP counting on the CUDA attention kernels: torch has formulas for them (the CPU has none),
   and seqarena's counter replaces them so that a causal kernel counts half the square; the
   transformer's count must equal the hand formula, causal and not.
2. Every model's fast path (cuDNN RNNs, CUDA SDPA, the scans) against its reference() on the
   GPU, outputs and gradients, in float32: the check the bench runs before it times a path.
3. One bf16-autocast training step of every model on the GPU: the recurrences and scans inside
   run in float32, and the loss and gradients are finite and close to the float32 step.
4. A small sweep on the GPU (every model, L = 256, 1024, 4096; train, prefill, decode), timed as
   `seqarena bench --device cuda` times it, every contender interleaved in rounds.

    python benchmarks/gpu_check.py [--out DIR]

Without a CUDA GPU it says so in one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/gpu-check", help="where the sweep's bench.json goes")
    parser.add_argument("--seq-lens", default="256,1024,4096", help="the sweep's lengths")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU is visible to torch {torch.__version__}; run it on a "
              "machine with one", file=sys.stderr)
        sys.exit(2)
    rows: list[dict] = []
    started = time.perf_counter()
    rows += flop_counts(torch)
    rows += reference_checks(torch)
    rows += bf16_steps(torch)
    rows += sweep(torch, args.out, tuple(int(v) for v in args.seq_lens.split(",")))

    from seqarena.results import machine_info, machine_label
    from seqarena.table import format_table

    print(f"\n{machine_label(machine_info())}; {time.perf_counter() - started:.0f} s")
    print(format_table(rows, ["section", "item", "figure", "status"]))
    if any(r["status"] == "FAILED" for r in rows):
        sys.exit(1)


def row(section: str, item: str, figure: str, ok: bool | None) -> dict:
    return {"section": section, "item": item, "figure": figure,
            "status": {True: "ok", False: "FAILED", None: "-"}[ok]}


def flop_counts(torch) -> list[dict]:
    """The transformer's counted FLOPs on the GPU against the hand formula (seqarena.flops)."""
    from seqarena.flops import count_flops
    from seqarena.models import build_model

    B, L, D, H, F = 4, 64, 64, 4, 256
    out = []
    for causal in (False, True):
        model = build_model("transformer", d_model=D, heads=H, d_ff=F, causal=causal,
                            positions="none").cuda().eval()
        x = torch.randn(B, L, D, device="cuda")
        linears = 2 * B * L * (4 * D * D + 2 * D * F)
        attention = 4 * B * L * L * D // (2 if causal else 1)
        with torch.enable_grad():
            counted = count_flops(lambda: model(x))
        out.append(row("FLOPs", f"transformer causal={causal}", f"{counted:.0f} counted, "
                       f"{linears + attention} by hand", counted == linears + attention))
    return out


def reference_checks(torch) -> list[dict]:
    """check_paths on the GPU for every built-in model: outputs, gradients, step()."""
    from seqarena.bench.points import Workload, check_paths
    from seqarena.errors import UserError
    from seqarena.models import MODELS, build_model

    out = []
    for name in MODELS.names():
        try:
            model = build_model(name, d_model=32, layers=2).cuda()
        except UserError as e:
            out.append(row("reference", name, f"skipped: {e}", None))
            continue
        refusal = check_paths(Workload(model), torch.device("cuda"), torch.float32)
        out.append(row("reference", name, refusal or "outputs and gradients match",
                       refusal is None))
    return out


def bf16_steps(torch) -> list[dict]:
    """One bf16-autocast training step per model against the float32 step, on the GPU."""
    from seqarena.errors import UserError
    from seqarena.models import MODELS, build_model

    B, L, D = 4, 128, 64
    out = []
    for name in MODELS.names():
        try:
            model = build_model(name, d_model=D, layers=2).cuda().eval()
        except UserError as e:
            out.append(row("bf16 step", name, f"skipped: {e}", None))
            continue
        x = torch.randn(B, L, D, device="cuda")
        figures = []
        for autocast in (False, True):
            model.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                y = model(x, x) if model.seq2seq else model(x)
                loss = y.float().square().mean()
            loss.backward()
            grads = [p.grad.float().clone() for p in model.parameters() if p.grad is not None]
            figures.append((loss.item(), grads))
        (l32, g32), (l16, g16) = figures
        finite = all(torch.isfinite(g).all().item() for g in g16) and abs(l16) < float("inf")
        loss_error = abs(l16 - l32) / (1 + abs(l32))
        grad_error = max((a - b).abs().max().item() / (1 + b.abs().max().item())
                         for a, b in zip(g16, g32))
        ok = finite and loss_error < 2e-2 and grad_error < 5e-2
        out.append(row("bf16 step", name, f"loss {loss_error:.2g}, gradients {grad_error:.2g} "
                       f"(tolerance 0.02, 0.05)", ok))
    return out


def sweep(torch, out_dir: str, seq_lens: tuple[int, ...]) -> list[dict]:
    """A small GPU sweep, as `seqarena bench --device cuda` runs it."""
    from seqarena.bench.command import bench
    from seqarena.bench.sweep import SweepConfig

    config = SweepConfig(seq_lens=seq_lens, batch_sizes=(16,), d_models=(128,),
                         modes=("train", "prefill", "decode"), devices=("cuda",),
                         min_run_time_s=0.2, peak_min_run_time_s=0.5, time_budget_s=30.0,
                         decode_window=8)
    run = bench(config, out_dir)
    out = []
    for r in run.results:
        item = f"{r.model} ({r.impl}) {r.mode} L={r.seq_len}"
        if r.status != "ok":
            out.append(row("sweep", item, r.error or r.status,
                           None if r.status in ("unsupported", "oom", "timeout") else False))
            continue
        mfu = "" if r.mfu is None else f", MFU {100 * r.mfu:.1f} %"
        bw = "" if r.mbu is None else f", BW {100 * r.mbu:.1f} %"
        out.append(row("sweep", item, f"{r.tokens_per_s:,.0f} tok/s{mfu}{bw}", True))
    out += [row("crossover", c["mode"], c["text"], None) for c in run.doc["crossovers"]
            if c["kind"] == "overtakes"]
    return out


if __name__ == "__main__":
    main()
