"""Projection to hardware you do not have: each measured point's time on a named device, from
what the bench already counts (matmul FLOPs, bytes moved) and the dependent steps it must take
one after another, with efficiencies calibrated on the machine that ran the bench.

The model, per model and mode, fitted on the measured machine and carried to the target:

    t = F / (e_f * peak) + M / (e_m * bandwidth) + S * k * floor

F the counted FLOPs, M the bytes moved, S the dependent sequential steps (sequential_steps), peak
and bandwidth the device's roofs, floor its cost of one dependent step (a kernel launch on a GPU,
an op's dispatch on a CPU), and e_f, e_m, k the fitted constants: the fractions of the roofs the
model reaches and the floors each of its steps costs (about the kernels a step launches).

A sum, not the roofline's max(compute, memory): a step in eager PyTorch is a chain of ops, a
matmul then the elementwise gates, each waiting for the one before, so their times add; the max
assumes one kernel overlapping both, which eager code rarely is. The sum is also linear in
(1/e_f, 1/e_m, k), so the fit is a small non-negative least squares with one answer. Where the
measured points cannot tell two terms apart (a recurrence's FLOPs, bytes and steps all grow
as L), a small ridge splits the time evenly between them: the projection to the same machine is
unaffected, the split across devices is an assumption the measured error below cannot check.

Efficiencies are taken to carry over unchanged, which is the main approximation: a GPU reaches
a smaller fraction of its peak on small matmuls than a CPU does. Every projected figure names
its basis, and projection_error measures the model where it can be checked: calibrated at short
lengths and projected to long ones, calibrated at one thread count and projected to another.
"""

from __future__ import annotations

import difflib
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np

from seqarena.bench.ledger import BreakEven, LedgerRow, break_even, curves, ledger, map_grid
from seqarena.bench.ledger import render_text as render_ledger
from seqarena.bench.peak import peak_key
from seqarena.bench.summary import crossovers
from seqarena.errors import UserError
from seqarena.results import BenchResult, machine_label
from seqarena.table import format_table

# F FLOPs, M bytes moved, S dependent steps, L length (decode: position), K layers

GPU_FLOOR_S = 5e-6  # one dependent step on a GPU: a kernel launch and its wait, a few us
CPU_FLOOR_S = 1e-6  # one dependent op in eager PyTorch on a CPU: its dispatch, about a us
CHUNK = 64  # tokens per chunk of a chunked recurrence (flash-linear-attention's default)
RIDGE = 1e-8  # tiny: only splits time (evenly) between terms the points cannot separate
ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Device:
    """A device's roofs, from its datasheet: dense peaks, memory bandwidth, per-step floor."""

    name: str
    kind: str  # "gpu" or "cpu"
    fp32_flops: float  # dense float32 FLOP/s without tensor cores (torch's default for float32)
    bf16_flops: float  # dense bfloat16 FLOP/s (tensor cores; T4: float16, it has no bfloat16)
    bandwidth: float  # memory bandwidth, bytes/s
    floor_s: float  # seconds one dependent sequential step costs at least
    source: str  # where the figures come from

    def peak(self, dtype: str) -> float:
        return self.fp32_flops if dtype == "float32" else self.bf16_flops


_SPARSE = "the datasheet's {} TFLOP/s is with 2:4 sparsity; dense is half"
_FLOOR = "floor nominal ({} us), not a datasheet figure"
DEVICES = {  # the names --device takes
    "a100": Device("NVIDIA A100 SXM 80GB", "gpu", 19.5e12, 312e12, 2039e9, GPU_FLOOR_S,
                   "NVIDIA A100 Tensor Core GPU datasheet: FP32 19.5, BF16 312 TFLOP/s dense "
                   "(624 with sparsity), 2,039 GB/s; " + _FLOOR.format(5)),
    "h100": Device("NVIDIA H100 SXM", "gpu", 67e12, 989e12, 3350e9, GPU_FLOOR_S,
                   "NVIDIA H100 Tensor Core GPU datasheet, SXM: FP32 67, BF16 989 TFLOP/s dense ("
                   + _SPARSE.format("1,979") + "; LLM-Viewer quotes the sparse one), 3.35 TB/s; "
                   + _FLOOR.format(5)),
    "h200": Device("NVIDIA H200 SXM", "gpu", 67e12, 989e12, 4800e9, GPU_FLOOR_S,
                   "NVIDIA H200 Tensor Core GPU datasheet, SXM: FP32 67, BF16 989 TFLOP/s dense ("
                   + _SPARSE.format("1,979") + "), 4.8 TB/s; " + _FLOOR.format(5)),
    "l4": Device("NVIDIA L4", "gpu", 30.3e12, 121e12, 300e9, GPU_FLOOR_S,
                 "NVIDIA L4 Tensor Core GPU datasheet: FP32 30.3, BF16 121 TFLOP/s dense ("
                 + _SPARSE.format("242") + "), 300 GB/s; " + _FLOOR.format(5)),
    "t4": Device("NVIDIA T4", "gpu", 8.1e12, 65e12, 320e9, GPU_FLOOR_S,
                 "NVIDIA T4 Tensor Core GPU datasheet: FP32 8.1, FP16 65 TFLOP/s (Turing has no "
                 "BF16: the FP16 figure stands in), 320 GB/s; " + _FLOOR.format(5)),
    "epyc-9654": Device("AMD EPYC 9654", "cpu", 7.37e12, 14.7e12, 460.8e9, CPU_FLOOR_S,
                        "AMD EPYC 9654 product page: 96 cores at 2.4 GHz base, 12 channels of "
                        "DDR5-4800 (460.8 GB/s per socket); FLOP/s = cores x base clock x 32 "
                        "FP32 FLOP/cycle (Zen 4: two 256-bit FMA pipes), BF16 twice that "
                        "(AVX512_BF16); " + _FLOOR.format(1)),
    "xeon-8480": Device("Intel Xeon Platinum 8480+", "cpu", 7.17e12, 114.7e12, 307.2e9,
                        CPU_FLOOR_S,
                        "Intel ARK, Xeon Platinum 8480+: 56 cores at 2.0 GHz base, 8 channels of "
                        "DDR5-4800 (307.2 GB/s); FLOP/s = cores x base clock x 64 FP32 "
                        "FLOP/cycle (two AVX-512 FMA units), BF16 x 1024 FLOP/cycle (AMX); "
                        + _FLOOR.format(1)),
}


def device_from_args(name: str | None = None, peak_flops: float | None = None,
                     bandwidth: float | None = None, floor_s: float | None = None) -> Device:
    """A device from the table (`name`), the user's own numbers, or a named device with some of
    its numbers replaced; one UserError line for an unknown name or a non-positive number."""
    for flag, value in (("--peak-flops", peak_flops), ("--bandwidth", bandwidth),
                        ("--floor-s", floor_s)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                      and value > 0):
            raise UserError(f"{flag} must be a positive number, got {value}")
    if name is None:
        if peak_flops is None or bandwidth is None:
            raise UserError("name a device (--device, one of: " + ", ".join(DEVICES) + ") or "
                            "give both --peak-flops and --bandwidth")
        return Device("custom device", "gpu", peak_flops, peak_flops, bandwidth,
                      floor_s or GPU_FLOOR_S,
                      "the user's numbers" + ("" if floor_s else
                                              "; " + _FLOOR.format(f"{GPU_FLOOR_S * 1e6:g}")))
    device = DEVICES.get(name.strip().lower())
    if device is None:
        close = difflib.get_close_matches(name.strip().lower(), list(DEVICES), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown device {name!r}{hint}; known devices: {', '.join(DEVICES)}, "
                        f"or give your own --peak-flops and --bandwidth")
    changed = {k: v for k, v in (("fp32_flops", peak_flops), ("bf16_flops", peak_flops),
                                 ("bandwidth", bandwidth), ("floor_s", floor_s)) if v is not None}
    if changed:
        device = replace(device, name=f"{device.name} (user's numbers)", **changed,
                         source=f"{device.source}; replaced by the user's: {', '.join(changed)}")
    return device


def sequential_steps(family: str, mode: str, seq_len: int, layers: int,
                     chunk: int = CHUNK) -> int:
    """The steps a point must take one after another: a decode step is one per layer; over a
    sequence, a recurrence takes L per layer, a scan ceil(log2 L) levels, a chunked recurrence
    (and any family not known here) one per chunk, attention one per layer."""
    if mode == "decode" or family == "attention":
        return layers
    if family == "recurrent":
        return seq_len * layers
    if family == "scan":
        return max(1, math.ceil(math.log2(seq_len))) * layers
    return math.ceil(seq_len / chunk) * layers


# --- the machine that ran the bench --------------------------------------------------------------

Roofs = dict[str, tuple[float, float]]  # peak_key -> (peak FLOP/s, bandwidth bytes/s)


def roofs_from_doc(doc: dict[str, Any]) -> Roofs:
    """The measured roofs a bench.json holds: its peak_flops and peak_bandwidth, by peak_key."""
    bandwidth = doc.get("peak_bandwidth") or {}
    return {key: (flops, bandwidth[key]) for key, flops in (doc.get("peak_flops") or {}).items()
            if key in bandwidth}


def roofs_from_results(results: Iterable[BenchResult]) -> Roofs:
    """The roofs recovered from the results themselves (MFU = F / t / peak, MBU = M / t / bw)."""
    found: dict[str, tuple[float, float]] = {}
    for r in results:
        if r.status == "ok" and r.mfu and r.mbu and r.flops and r.bytes_moved and r.latency_s:
            found.setdefault(peak_key(r.device, r.dtype, r.threads),
                             (r.flops / r.latency_s / r.mfu, r.bytes_moved / r.latency_s / r.mbu))
    return found


def nominal_floor(device: str, machine: dict[str, Any] | None = None) -> float:
    """The measured machine's floor: its GPU's from the table when named there, else nominal."""
    if device.startswith("cuda"):
        gpu = ((machine or {}).get("gpu") or "").lower()
        return next((d.floor_s for key, d in DEVICES.items() if d.kind == "gpu" and key in gpu),
                    GPU_FLOOR_S)
    return CPU_FLOOR_S


# --- calibration ---------------------------------------------------------------------------------

@dataclass
class Fit:
    """One model and mode's constants, fitted on the measured machine."""

    model: str
    family: str
    mode: str
    flops_efficiency: float | None  # e_f: fraction of peak FLOP/s in the compute term; None:
    #                                 the fit gave compute no time
    bandwidth_efficiency: float | None  # e_m: fraction of the bandwidth; None: no memory term
    floors_per_step: float  # k: each dependent step costs k floors (about the ops it dispatches)
    step_s: float  # k times the measured machine's floor: seconds per dependent step there
    lengths: list[int]  # the L (decode: positions) fitted on
    points: int
    fit_error: float  # median |fitted / measured - 1| over those points
    worst_fit_error: float

    def seconds(self, flops: float, moved: float, steps: int, peak: float, bandwidth: float,
                floor_s: float) -> tuple[float, float, float]:
        """(compute, memory, steps) seconds of a point on roofs peak, bandwidth and floor_s."""
        compute = flops / (self.flops_efficiency * peak) if self.flops_efficiency else 0.0
        memory = moved / (self.bandwidth_efficiency * bandwidth) \
            if self.bandwidth_efficiency else 0.0
        return compute, memory, steps * self.floors_per_step * floor_s


@dataclass
class Calibration:
    """Every fit of one bench run, and the machine they describe."""

    fits: list[Fit]
    machine: str  # the measured machine, as machine_label names it
    floor_s: float  # its nominal per-step floor, the unit of floors_per_step
    max_len: int | None  # fitted on L <= max_len; None: every length
    threads: int | None  # fitted on this thread count; None: every one given

    def fit(self, model: str, mode: str) -> Fit | None:
        return next((f for f in self.fits if f.model == model and f.mode == mode), None)


def _ours(results: Iterable[BenchResult]) -> list[BenchResult]:
    return [r for r in results if r.status == "ok" and r.impl == "seqarena" and r.latency_s]


def _terms(r: BenchResult, roofs: Roofs, floor_s: float) -> list[float]:
    peak, bandwidth = _roofs_of(r, roofs)
    steps = sequential_steps(r.family, r.mode, r.seq_len, r.layers)
    return [(r.flops or 0.0) / peak, (r.bytes_moved or 0.0) / bandwidth, steps * floor_s]


def _roofs_of(r: BenchResult, roofs: Roofs) -> tuple[float, float]:
    key = peak_key(r.device, r.dtype, r.threads)
    if key not in roofs:
        raise UserError(f"the bench run has no measured peak for {key}; projection needs the "
                        f"peaks `seqarena bench` writes beside its results (rerun it)")
    return roofs[key]


def calibrate(results: Iterable[BenchResult], roofs: Roofs | None = None,
              max_len: int | None = None, threads: int | None = None,
              floor_s: float = CPU_FLOOR_S, machine: str = "the measured machine"
              ) -> Calibration:
    """Fit e_f, e_m and k per model and mode on the measured points (L <= max_len, `threads`),
    in relative error, so a short length weighs as much as a long one."""
    results = _ours(results)
    roofs = roofs if roofs is not None else roofs_from_results(results)
    groups: dict[tuple[str, str], list[BenchResult]] = defaultdict(list)
    for r in results:
        if (max_len is None or r.seq_len <= max_len) and (threads is None or r.threads == threads):
            groups[(r.model, r.mode)].append(r)
    fits = [_fit(rows, roofs, floor_s) for _, rows in sorted(groups.items())]
    return Calibration(fits, machine, floor_s, max_len, threads)


def _fit(rows: list[BenchResult], roofs: Roofs, floor_s: float) -> Fit:
    from scipy.optimize import nnls  # scipy loads slowly: only when a fit is wanted

    x = np.array([_terms(r, roofs, floor_s) for r in rows])  # (points, 3)
    t = np.array([r.latency_s for r in rows])
    relative = x / t[:, None]
    # columns scaled so a coefficient of 1 means "this term alone explains a typical point":
    # the ridge then splits time evenly between terms the points cannot tell apart
    scale = np.median(relative, axis=0)
    scale[scale <= 0] = 1.0
    z = np.vstack([relative / scale, math.sqrt(RIDGE) * np.eye(3)])
    u, _ = nnls(z, np.concatenate([np.ones(len(rows)), np.zeros(3)]))
    c_flops, c_bytes, k = u / scale
    fitted = x @ (u / scale)
    errors = np.abs(fitted / t - 1)
    r0 = rows[0]
    return Fit(r0.model, r0.family, r0.mode, 1 / c_flops if c_flops > 0 else None,
               1 / c_bytes if c_bytes > 0 else None, float(k), float(k * floor_s),
               sorted({r.seq_len for r in rows}), len(rows), float(np.median(errors)),
               float(errors.max()))


# --- projection ----------------------------------------------------------------------------------

@dataclass
class Projected:
    """One measured point's time projected to another device."""

    model: str
    family: str
    mode: str
    seq_len: int  # L (decode: the position)
    batch: int
    d_model: int
    layers: int
    threads: int  # of the measured point it was projected from
    dtype: str  # the dtype projected to
    device: str  # the device projected to
    projected_s: float  # projected seconds per step (decode: per token), as latency_s
    from_measured_s: float  # the same point's measured seconds on the bench's machine
    compute_s: float  # the three terms of projected_s
    memory_s: float
    steps_s: float
    bound: str  # the largest term: "compute", "memory" or "latency"
    steps: int  # dependent sequential steps
    flops: float | None
    bytes_moved: float | None  # on the target dtype
    state_bytes: float | None  # decode: the state, on the target dtype
    basis: str  # "projected to ... from ... via ..., calibrated at ..."


def project(results: Iterable[BenchResult], calibration: Calibration, device: Device,
            dtype: str | None = None) -> list[Projected]:
    """Every measured point with a fit (of the calibration's thread count), projected to
    `device`; `dtype` (default: as measured) scales bytes and picks the peak."""
    points = []
    for r in _ours(results):
        fit = calibration.fit(r.model, r.mode)
        if fit is None or (calibration.threads is not None and r.threads != calibration.threads):
            continue
        target = dtype or r.dtype
        size = ELEMENT_BYTES.get(target, 4) / ELEMENT_BYTES.get(r.dtype, 4)
        moved = None if r.bytes_moved is None else r.bytes_moved * size
        state = None if r.state_bytes is None else r.state_bytes * size
        steps = sequential_steps(r.family, r.mode, r.seq_len, r.layers)
        terms = fit.seconds(r.flops or 0.0, moved or 0.0, steps, device.peak(target),
                            device.bandwidth, device.floor_s)
        bound = ("compute", "memory", "latency")[int(np.argmax(terms))]
        span = "every length" if calibration.max_len is None else f"L<={calibration.max_len}"
        basis = (f"projected to {device.name} ({target}) from {calibration.machine} via "
                 f"roofline terms + steps x floor, calibrated at {span} (fit error "
                 f"{fit.fit_error:.0%})")
        points.append(Projected(r.model, r.family, r.mode, r.seq_len, r.batch, r.d_model,
                                r.layers, r.threads, target, device.name, sum(terms),
                                r.latency_s, *terms, bound, steps, r.flops, moved, state, basis))
    return points


def projected_results(points: Iterable[Projected], device: Device | None = None
                      ) -> list[BenchResult]:
    """Projected points as BenchResults (device: the target's name), for the same crossover and
    ledger functions as the measured ones; MFU and MBU against `device`'s roofs when given."""
    rows = []
    for p in points:
        tokens = p.batch * (1 if p.mode == "decode" else p.seq_len)
        mfu = p.flops / p.projected_s / device.peak(p.dtype) if device and p.flops else None
        mbu = p.bytes_moved / p.projected_s / device.bandwidth if device and p.bytes_moved \
            else None
        rows.append(BenchResult(
            model=p.model, impl="seqarena", mode=p.mode, seq_len=p.seq_len, batch=p.batch,
            d_model=p.d_model, layers=p.layers, threads=p.threads, device=p.device,
            dtype=p.dtype, tokens_per_s=tokens / p.projected_s, latency_s=p.projected_s,
            flops=p.flops, mfu=mfu, peak_mem_bytes=None, family=p.family,
            position=p.seq_len if p.mode == "decode" else None,
            state_bytes=None if p.state_bytes is None else int(p.state_bytes),
            bytes_moved=p.bytes_moved, mbu=mbu))
    return rows


# --- how wrong it is, where that can be measured -------------------------------------------------

@dataclass
class ProjectionError:
    """|projected / measured - 1| over the measured points a projection can be held to."""

    mode: str
    what: str  # what was projected to what: "L<=256 -> L=1024,4096, 1 thread", "1 -> 2 threads"
    points: int
    median: float | None  # median |projected / measured - 1|; None: no point to compare
    worst: float | None
    worst_point: str  # the model and L of the worst


def _errors(what: str, pairs: list[tuple[Projected, float]]) -> list[ProjectionError]:
    by_mode: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for p, measured in pairs:
        by_mode[p.mode].append((abs(p.projected_s / measured - 1), f"{p.model} L={p.seq_len}"))
    rows = []
    for mode in sorted(by_mode, key=lambda m: ("train", "forward", "prefill", "decode").index(m)
                       if m in ("train", "forward", "prefill", "decode") else 9):
        errors = by_mode[mode]
        worst = max(errors)
        rows.append(ProjectionError(mode, what, len(errors),
                                    statistics.median(e for e, _ in errors), worst[0], worst[1]))
    return rows


def projection_error(results: Iterable[BenchResult], roofs: Roofs | None = None,
                     calibrate_max_len: int = 256, test_lens: Iterable[int] | None = (1024, 4096)
                     ) -> list[ProjectionError]:
    """Per mode and thread count: calibrated at L <= calibrate_max_len, projected to the
    measured points at `test_lens` (None: every longer length) on the same machine."""
    results = _ours(results)
    roofs = roofs if roofs is not None else roofs_from_results(results)
    rows = []
    for threads in sorted({r.threads for r in results}):
        same = [r for r in results if r.threads == threads]
        floor_s = nominal_floor(same[0].device)
        calibration = calibrate(same, roofs, calibrate_max_len, threads, floor_s)
        wanted = [r for r in same if r.seq_len > calibrate_max_len
                  and (test_lens is None or r.seq_len in set(test_lens))]
        pairs = _on_measured_roofs(wanted, calibration, roofs, floor_s)
        lens = sorted({p.seq_len for p, _ in pairs})
        what = (f"L<={calibrate_max_len} -> L={','.join(map(str, lens))}, "
                f"{threads} thread{'s' * (threads != 1)}")
        rows += _errors(what, pairs)
    return rows


def thread_projection_error(results: Iterable[BenchResult], roofs: Roofs | None = None,
                            from_threads: int = 1, to_threads: int = 2
                            ) -> list[ProjectionError]:
    """Per mode: calibrated at `from_threads` (every length), projected to the points measured
    at `to_threads` with that thread count's measured roofs."""
    results = _ours(results)
    roofs = roofs if roofs is not None else roofs_from_results(results)
    source = [r for r in results if r.threads == from_threads]
    wanted = [r for r in results if r.threads == to_threads]
    if not source or not wanted:
        return []
    floor_s = nominal_floor(source[0].device)
    calibration = calibrate(source, roofs, None, from_threads, floor_s)
    return _errors(f"{from_threads} -> {to_threads} threads",
                   _on_measured_roofs(wanted, calibration, roofs, floor_s))


def _on_measured_roofs(rows: list[BenchResult], calibration: Calibration, roofs: Roofs,
                       floor_s: float) -> list[tuple[Projected, float]]:
    """Each row projected with its own measured roofs (the same machine), beside its time."""
    pairs = []
    for r in rows:
        peak, bandwidth = _roofs_of(r, roofs)
        here = Device("this machine", "cpu", peak, peak, bandwidth, floor_s, "measured")
        held = replace(calibration, threads=None)
        for p in project([r], held, here):
            pairs.append((p, r.latency_s))
    return pairs


# --- everything the `seqarena project` command shows ---------------------------------------------

@dataclass
class ProjectionReport:
    """A bench run projected to one device: points, crossovers, ledger and the measured error."""

    device: Device
    calibration: Calibration
    points: list[Projected]
    crossovers: list[dict[str, Any]]  # bench/summary.py's crossovers on the projected points
    ledger: list[LedgerRow]  # on the projected points
    break_even: list[BreakEven]
    error: list[ProjectionError]  # this model's error on the measured machine
    notes: list[str] = field(default_factory=list)


def project_bench(doc: dict[str, Any], device: Device, prompts: Iterable[int] | None = None,
                  generated: Iterable[int] | None = None, calibrate_max_len: int | None = None,
                  dtype: str | None = None, threads: int | None = None) -> ProjectionReport:
    """A bench.json (as read_results returns it) projected to `device`: calibrated on the run's
    most threads (or `threads`) at every length (or L <= calibrate_max_len), with the error of
    the same model calibrated at L <= 256 and projected to the run's longer lengths."""
    results = _ours(doc["results"])
    if not results:
        raise UserError("the bench run has no timed points to project")
    curves(results)  # the modes the ledger needs, checked before anything else is read
    if dtype is not None and dtype not in ELEMENT_BYTES:
        raise UserError(f"unknown dtype {dtype!r}; choose from: {', '.join(ELEMENT_BYTES)}")
    measured_threads = sorted({r.threads for r in results})
    threads = threads if threads is not None else measured_threads[-1]
    if threads not in measured_threads:
        raise UserError(f"--threads {threads} was not measured; the bench run has "
                        f"{', '.join(map(str, measured_threads))}")
    results = [r for r in results if r.threads == threads]
    roofs = roofs_from_doc(doc) or roofs_from_results(results)
    machine = doc.get("machine") or {}
    floor_s = nominal_floor(results[0].device, machine)
    calibration = calibrate(results, roofs, calibrate_max_len, threads, floor_s,
                            machine_label(machine) if machine else "the measured machine")
    points = project(results, calibration, device, dtype)
    projected = projected_results(points, device)
    grid_prompts, grid_generated = map_grid(projected)
    prompts = list(prompts or grid_prompts)
    generated = list(generated or [g for g in grid_generated if g in (1, 16, 64, 256, 1024)]
                     or grid_generated)
    notes = []
    longest = max(r.seq_len for r in results)
    if longest <= 256:
        notes.append("no length above 256 was measured, so the projection's error could not be "
                     "measured")
    return ProjectionReport(device, calibration, points, crossovers(projected),
                            ledger(projected, prompts, generated), break_even(projected, prompts),
                            projection_error(results, roofs, 256, None), notes)


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{value:.0%}"


def error_text(rows: list[ProjectionError]) -> str:
    """The measured error of the projection as a terminal table."""
    if not rows:
        return "no measured point to hold the projection to"
    table = [{"mode": e.mode, "what": e.what, "points": e.points, "median": _pct(e.median),
              "worst": _pct(e.worst), "at": e.worst_point} for e in rows]
    return format_table(table, ["mode", "what", "points", "median", "worst", "at"],
                        ["mode", "projected", "points", "median |p/m-1|", "worst", "worst at"])


def render_text(report: ProjectionReport) -> str:
    """The terminal view of a projection: the device and its sources, the fits, the projected
    points, the crossovers and the ledger on the device, and the measured error."""
    d, c = report.device, report.calibration
    lines = [f"projected to {d.name}: {d.fp32_flops / 1e12:.3g} TFLOP/s float32, "
             f"{d.bf16_flops / 1e12:.3g} TFLOP/s bfloat16 (dense), {d.bandwidth / 1e9:,.0f} GB/s, "
             f"floor {d.floor_s * 1e6:.3g} us per dependent step",
             f"  source: {d.source}",
             f"  calibrated on {c.machine}: "
             + (f"its {c.threads}-thread points, " if c.threads else "")
             + (f"L<={c.max_len}" if c.max_len else "every length")
             + f" (floor {c.floor_s * 1e6:.3g} us there)", "",
             "fits (t = F/(e_f peak) + M/(e_m bandwidth) + steps x k floors):"]
    fits = [{"model": f.model, "mode": f.mode, "e_f": _pct(f.flops_efficiency),
             "e_m": _pct(f.bandwidth_efficiency), "k": f.floors_per_step, "points": f.points,
             "err": _pct(f.fit_error)} for f in c.fits]
    lines += [format_table(fits, ["model", "mode", "e_f", "e_m", "k", "points", "err"],
                           ["model", "mode", "e_f (of peak)", "e_m (of bandwidth)",
                            "k (floors/step)", "points", "fit error"]), ""]
    table = [{"model": p.model, "mode": p.mode, "L": p.seq_len, "measured_ms":
              p.from_measured_s * 1e3, "projected_ms": p.projected_s * 1e3, "bound": p.bound}
             for p in report.points]
    lines += [f"projected points (ms per step, decode per token) on {d.name}:",
              format_table(table, ["model", "mode", "L", "measured_ms", "projected_ms", "bound"],
                           ["model", "mode", "L (decode: position)", "measured here ms",
                            "projected ms", "bound by"]), ""]
    crossing = [x["text"] for x in report.crossovers]
    if crossing:
        lines += [f"crossovers on {d.name} (projected):"] + [f"  {t}" for t in crossing] + [""]
    lines += [f"on {d.name} (projected): " + render_ledger(report.ledger, report.break_even), "",
              "the projection's error on the measured machine (|projected / measured - 1|):",
              error_text(report.error)]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
