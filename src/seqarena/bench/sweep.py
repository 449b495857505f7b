"""The sweep: every model and peer at every point of L x B x D x layers x dtype x threads x device.

Each backbone is checked before it is timed (its fast path against its reference with the same
weights, its step() against its forward) and refused if it fails. Each point runs under a time
budget; a point that runs out of memory or time is recorded with that status and the sweep goes
on, skipping the longer lengths of the same mode, which could only do worse.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
from torch import nn

from seqarena.bench.peak import matmul_peak, peak_key
from seqarena.bench.peers import PEERS, Shape
from seqarena.bench.points import (MODES, REFERENCE_IMPL, THROUGHPUT_MODES, Measured, NoStep,
                                   Workload, check_paths, make_input, measure_decode,
                                   measure_throughput)
from seqarena.bench.timer import PointTimeout, deadline
from seqarena.errors import ConfigError, UserError
from seqarena.models import MODELS, build_model, config_fields, make_config
from seqarena.results import BenchResult

# B batch, L length, D model width, K layers

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def all_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def default_devices() -> tuple[str, ...]:
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def default_models() -> tuple[str, ...]:
    return tuple(MODELS.names())


@dataclass(frozen=True)
class SweepConfig:
    """What to measure. Empty tuples take the defaults named in the comments."""

    models: tuple[str, ...] = ()  # "name" or "name:impl"; () = every registered model
    seq_lens: tuple[int, ...] = (256, 1024, 4096)  # L; decode also runs at 1, 64, 256, ... < max L
    batch_sizes: tuple[int, ...] = (16,)  # B
    d_models: tuple[int, ...] = (128,)  # D
    layers: tuple[int, ...] = (1,)  # K
    modes: tuple[str, ...] = MODES  # train, forward, prefill, decode
    threads: tuple[int, ...] = ()  # CPU threads; () = 1 and all cores, for thread scaling
    devices: tuple[str, ...] = ()  # () = cpu, and cuda when a GPU is visible
    dtypes: tuple[str, ...] = ("float32",)
    peers: tuple[str, ...] = ()  # peer names (see bench.peers), or ("all",)
    time_budget_s: float = 60.0  # per point; past it the point is recorded as a timeout
    min_run_time_s: float = 0.5  # timed seconds per point, after warm-up
    peak_min_run_time_s: float = 1.0  # timed seconds of the peak matmul
    peak_sizes: tuple[int, ...] = ()  # sides of the peak matmuls; () = the device's default
    decode_window: int = 16  # decode steps whose median is a position's latency

    def __post_init__(self):
        defaults = {"models": default_models(), "threads": tuple(sorted({1, all_cores()})),
                    "devices": default_devices()}
        for name, value in defaults.items():
            if not getattr(self, name):
                object.__setattr__(self, name, value)
        if self.peers == ("all",):
            object.__setattr__(self, "peers", tuple(PEERS.names()))
        self.validate()

    def validate(self) -> None:
        """One UserError line for the first setting that cannot work."""
        for name in ("seq_lens", "batch_sizes", "d_models", "layers", "threads"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v <= 0 for v in values):
                raise UserError(f"{name.replace('_', ' ')} must be positive integers, got "
                                f"{', '.join(map(str, values)) or 'none'}")
        for mode in self.modes:
            if mode not in MODES:
                raise UserError(f"unknown mode {mode!r}; modes are: {', '.join(MODES)}")
        for dtype in self.dtypes:
            if dtype not in DTYPES:
                raise UserError(f"unknown dtype {dtype!r}; choose from: {', '.join(DTYPES)}")
        for device in self.devices:
            check_device(device)
        for name in self.peers:
            PEERS.get(name)
        for spec in self.models:
            for d_model in self.d_models:
                for layers in self.layers:
                    model_entry(spec).config(d_model, layers)
        if not self.time_budget_s > 0 or not self.min_run_time_s > 0:
            raise UserError("the time budget and the minimum run time must be positive seconds")
        if self.decode_window <= 0:
            raise UserError(f"decode window must be positive, got {self.decode_window}")

    def decode_positions(self) -> list[int]:
        """1, then 64, 256, ... (x4) below the longest length, and every swept length."""
        top, positions, p = max(self.seq_lens), {1, *self.seq_lens}, 64
        while p < top:
            positions.add(p)
            p *= 4
        return sorted(positions)


def quick_config(**overrides) -> SweepConfig:
    """Every model at three lengths, small shapes, short timings: minutes on a laptop CPU."""
    settings = dict(seq_lens=(64, 256, 1024), batch_sizes=(8,), d_models=(64,), layers=(1,),
                    threads=(all_cores(),), time_budget_s=10.0, min_run_time_s=0.05,
                    peak_min_run_time_s=0.2, decode_window=8)
    settings.update({k: v for k, v in overrides.items() if v})
    return SweepConfig(**settings)


def check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible to torch "
                        f"{torch.__version__}; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device {device!r} is not supported; use cpu or cuda")
    return dev


@dataclass(frozen=True)
class Entry:
    """One thing to time: our model (default or named impl) or a peer."""

    model: str  # architecture, as results and tables name it
    impl: str  # "seqarena", "seqarena:<impl>" or the peer's name
    build: Callable[[int, int], nn.Module]  # (D, K) -> backbone
    reference: Callable[[int, int], nn.Module] | None = None  # same weights, reference path
    config: Callable[[int, int], object] = lambda d_model, layers: None  # validates (D, K)


def model_entry(spec: str) -> Entry:
    """`lstm` (its default, fastest path), `lstm:scratch` (a named implementation), or a
    plug-in's `package.module:factory`."""
    name, _, impl = spec.partition(":")
    if name not in MODELS:  # not a built-in: the whole spec names a plug-in
        name, impl = spec, ""
    MODELS.get(name)
    if impl and "impl" not in config_fields(name):
        raise UserError(f"model {name!r} has a single implementation; drop ':{impl}'")
    fields = {"impl": impl} if impl else {}

    def config(d_model, layers):
        return make_config(name, strict=False, d_model=d_model, layers=layers, **fields)

    chosen = getattr(config(*_SMALLEST), "impl", None)
    reference_impl = REFERENCE_IMPL.get(chosen)
    reference = None
    if reference_impl is not None:
        def reference(d_model, layers):
            return build_model(name, strict=False, d_model=d_model, layers=layers,
                               impl=reference_impl)
    return Entry(name, f"seqarena:{impl}" if impl else "seqarena",
                 lambda d_model, layers: build_model(name, config(d_model, layers)),
                 reference, config)


_SMALLEST = (64, 1)  # a (D, K) every model accepts, to read a config's defaults


def peer_entry(name: str) -> Entry:
    peer = PEERS.get(name)
    return Entry(peer.model, peer.impl,
                 lambda d_model, layers: peer.build(Shape.like_ours(d_model, layers)))


@dataclass
class SweepReport:
    """Everything a sweep measured, with the peaks its MFUs divide by and what it skipped."""

    results: list[BenchResult] = field(default_factory=list)
    peak_flops: dict[str, float] = field(default_factory=dict)
    peak_paths: dict[str, dict[str, float]] = field(default_factory=dict)  # each library's best
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def is_oom(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text
                                                or "can't allocate memory" in text)


class Sweep:
    """Runs a SweepConfig; `on_result` sees each result as it lands (for progress output).
    `entries` replaces the config's models and peers (to time a backbone not registered)."""

    def __init__(self, config: SweepConfig,
                 on_result: Callable[[BenchResult], None] | None = None,
                 entries: list[Entry] | None = None):
        self.config = config
        self.on_result = on_result
        self.entries = entries if entries is not None else \
            [model_entry(m) for m in config.models] + [peer_entry(p) for p in config.peers]
        self.report = SweepReport()

    def run(self) -> SweepReport:
        cfg, entries = self.config, self.entries
        for device in cfg.devices:
            for dtype in cfg.dtypes:
                for d_model in cfg.d_models:
                    for layers in cfg.layers:
                        for entry in entries:
                            self.run_entry(entry, device, dtype, d_model, layers)
        return self.report

    def peak(self, device: str, dtype: str, threads: int) -> float:
        key = peak_key(device, dtype, threads)
        if key not in self.report.peak_flops:
            flops, paths = matmul_peak(torch.device(device), DTYPES[dtype], threads,
                                       self.config.peak_min_run_time_s,
                                       self.config.peak_sizes or None)
            self.report.peak_flops[key], self.report.peak_paths[key] = flops, paths
        return self.report.peak_flops[key]

    def run_entry(self, entry: Entry, device_name: str, dtype_name: str, d_model: int,
                  layers: int) -> None:
        cfg, device, dtype = self.config, torch.device(device_name), DTYPES[dtype_name]
        try:
            module = entry.build(d_model, layers).to(device, dtype)
        except ConfigError:
            raise
        except UserError as e:  # a peer's or a model's optional package is missing
            self.report.note(f"{entry.model} ({entry.impl}) skipped: {e}")
            return
        workload = Workload(module)
        reference = Workload(entry.reference(d_model, layers)) if entry.reference else None
        try:
            refusal = check_paths(workload, reference, d_model, device, dtype)
        except Exception as e:  # noqa: BLE001  a backbone that cannot run here is recorded
            refusal = f"its check failed to run: {type(e).__name__}: {_first_line(e)}"
        if refusal:
            self.report.note(f"{entry.model} ({entry.impl}) on {device_name} {dtype_name} not "
                             f"timed: {refusal}")
        flops_cache: dict = {}
        # host threads barely touch a GPU's speed: time it once, with the most threads asked for
        thread_counts = cfg.threads if device.type == "cpu" else (max(cfg.threads),)
        for batch in cfg.batch_sizes:
            for threads in thread_counts:
                coords = dict(model=entry.model, impl=entry.impl, batch=batch, d_model=d_model,
                              layers=layers, threads=threads, device=device_name,
                              dtype=dtype_name)
                peak = self.peak(device_name, dtype_name, threads)
                stopped: dict[str, tuple[str, str]] = {}  # mode -> (status, why) at a shorter L
                for seq_len in cfg.seq_lens:
                    x = make_input(batch, seq_len, d_model, device, dtype)
                    for mode in (m for m in cfg.modes if m in THROUGHPUT_MODES):
                        measure = partial(measure_throughput, workload, mode, x, threads,
                                          cfg.min_run_time_s, flops_cache)
                        self.record(coords, mode, seq_len, peak, measure, stopped, refusal)
                if "decode" in cfg.modes:
                    for position in cfg.decode_positions():
                        measure = partial(measure_decode, workload, position, batch, d_model,
                                          device, dtype, threads, cfg.decode_window)
                        self.record(coords, "decode", position, peak, measure, stopped, refusal)

    def record(self, coords: dict, mode: str, seq_len: int, peak: float,
               measure: Callable[[], Measured], stopped: dict[str, tuple[str, str]],
               refusal: str | None) -> BenchResult:
        """Run one point under the time budget and keep what it gives, whatever that is."""
        result = BenchResult(mode=mode, seq_len=seq_len, tokens_per_s=None, latency_s=None,
                             flops=None, mfu=None, peak_mem_bytes=None, **coords)
        if refusal:
            result.status, result.extra = "error", {"error": f"not timed: {refusal}"}
        elif mode in stopped:
            result.status, why = stopped[mode]
            result.extra = {"skipped": why}
        else:
            started = time.perf_counter()
            self._measure(result, peak, measure)
            result.extra["wall_s"] = time.perf_counter() - started  # what the point cost the sweep
            if result.status in ("oom", "timeout"):
                what = "memory" if result.status == "oom" else "time"
                stopped[mode] = (result.status, f"not run: out of {what} at L={seq_len}")
        self.report.results.append(result)
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _measure(self, result: BenchResult, peak: float, measure: Callable[[], Measured]) -> None:
        try:
            with deadline(self.config.time_budget_s):
                m = measure()
        except PointTimeout as e:
            result.status, result.extra = "timeout", {"error": str(e)}
        except NoStep as e:
            result.status, result.extra = "unsupported", {"error": str(e)}
        except Exception as e:  # noqa: BLE001  a sweep records a failing point and goes on
            result.status = "oom" if is_oom(e) else "error"
            result.extra = {"error": f"{type(e).__name__}: {_first_line(e)}"}
            if result.status == "error":
                self.report.note(f"{result.model} ({result.impl}) {result.mode} at L="
                                 f"{result.seq_len} failed: {result.extra['error']}")
        else:
            result.latency_s = m.timing.median_s
            result.tokens_per_s = m.tokens / m.timing.median_s
            result.flops = m.flops
            result.mfu = m.flops / m.timing.median_s / peak if m.flops else None
            result.peak_mem_bytes = m.peak_mem_bytes
            result.extra = m.extra
        finally:
            if result.status == "oom":
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0]


def run_sweep(config: SweepConfig,
              on_result: Callable[[BenchResult], None] | None = None) -> SweepReport:
    """Measure every point of `config`; see Sweep."""
    return Sweep(config, on_result).run()
