"""The sweep: every model and peer at every point of L x B x D x layers x dtype x threads x device.

Each backbone is checked before it is timed (its fast path against its reference() with the same
weights, outputs and, before a training step is timed, gradients; its step() against its
forward) and refused if it fails. At each point every contender is timed in the same rounds,
interleaved, the order flipped each round. Each point runs under a time
budget; a point that runs out of memory or time is recorded with that status and the sweep goes
on, skipping the longer lengths of the same mode, which could only do worse.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from seqarena.bench.peak import matmul_peak, peak_key, stream_triad
from seqarena.bench.peers import PEERS, Shape
from seqarena.bench.points import (MODES, THROUGHPUT_MODES, NoStep, Workload, check_paths,
                                   make_input, measure_decode, prepare_throughput)
from seqarena.bench.timer import PointTimeout, Timing, deadline
from seqarena.errors import ConfigError, UserError, first_line
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
    rounds: int = 3  # rounds per point, every contender in each, the order flipped each round
    triad_elements: int = 0  # elements per STREAM triad array; 0 = the device's default

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
        if self.rounds <= 0:
            raise UserError(f"rounds must be positive, got {self.rounds}")

    def decode_positions(self) -> list[int]:
        """1, then 64, 256, ... (x4) below the longest length, and every swept length."""
        top, positions, p = max(self.seq_lens), {1, *self.seq_lens}, 64
        while p < top:
            positions.add(p)
            p *= 4
        return sorted(positions)


def quick_layer() -> dict[str, Any]:
    """--quick: every model at three lengths, small shapes, short timings; a config layer
    between SweepConfig's defaults and the user's settings."""
    return dict(seq_lens=(64, 256, 1024), batch_sizes=(8,), d_models=(64,), layers=(1,),
                threads=(all_cores(),), time_budget_s=10.0, min_run_time_s=0.05,
                peak_min_run_time_s=0.2, decode_window=8, triad_elements=1 << 23)


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
    build: Callable[[int, int], nn.Module]  # (D, K) -> backbone; its reference() is checked
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

    return Entry(name, f"seqarena:{impl}" if impl else "seqarena",
                 lambda d_model, layers: build_model(name, config(d_model, layers)), config)


def peer_entry(name: str) -> Entry:
    peer = PEERS.get(name)
    return Entry(peer.model, peer.impl,
                 lambda d_model, layers: peer.build(Shape.like_ours(d_model, layers)))


@dataclass
class SweepReport:
    """Everything a sweep measured, with the roofs its MFUs divide by and what it skipped."""

    results: list[BenchResult] = field(default_factory=list)
    peak_flops: dict[str, float] = field(default_factory=dict)
    peak_paths: dict[str, dict[str, float]] = field(default_factory=dict)  # each library's best
    peak_bandwidth: dict[str, float] = field(default_factory=dict)  # bytes/s, STREAM triad
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


@dataclass
class Contender:
    """An entry built and checked for one device, dtype, width and depth."""

    entry: Entry
    workload: Workload
    refusal: str | None  # why it must not be timed, or None
    stopped: dict[str, tuple[str, str]] = field(default_factory=dict)  # mode -> (status, why)


class Sweep:
    """Runs a SweepConfig; `on_result` sees each result as it lands (for progress output).
    `entries` replaces the config's models and peers (to time a backbone not registered).

    At every point (mode, L, B, threads) every contender is timed in `rounds` rounds, the order
    flipped each round, so that a slow spell of a shared machine falls on all of them alike and
    the ratios between them (summary.py) compare figures taken side by side.
    """

    def __init__(self, config: SweepConfig,
                 on_result: Callable[[BenchResult], None] | None = None,
                 entries: list[Entry] | None = None):
        self.config = config
        self.on_result = on_result
        self.entries = entries if entries is not None else \
            [model_entry(m) for m in config.models] + [peer_entry(p) for p in config.peers]
        self.report = SweepReport()

    def run(self) -> SweepReport:
        cfg = self.config
        for device in cfg.devices:
            for dtype in cfg.dtypes:
                for d_model in cfg.d_models:
                    for layers in cfg.layers:
                        contenders = [c for c in (self.contender(e, device, dtype, d_model, layers)
                                                  for e in self.entries) if c is not None]
                        if contenders:
                            self.run_group(contenders, device, dtype, d_model, layers)
        return self.report

    def roofs(self, device: str, dtype: str, threads: int) -> tuple[float, float]:
        """The matmul peak (FLOP/s) and the memory bandwidth (bytes/s) of this device, dtype
        and thread count, measured once per sweep."""
        key = peak_key(device, dtype, threads)
        if key not in self.report.peak_flops:
            dev = torch.device(device)
            flops, paths = matmul_peak(dev, DTYPES[dtype], threads, self.config.peak_min_run_time_s,
                                       self.config.peak_sizes or None)
            self.report.peak_flops[key], self.report.peak_paths[key] = flops, paths
            self.report.peak_bandwidth[key] = stream_triad(
                dev, DTYPES[dtype], threads, self.config.peak_min_run_time_s,
                self.config.triad_elements or None)
        return self.report.peak_flops[key], self.report.peak_bandwidth[key]

    def contender(self, entry: Entry, device_name: str, dtype_name: str, d_model: int,
                  layers: int) -> Contender | None:
        """The entry built and checked; None (with a note) when its package is missing."""
        device, dtype = torch.device(device_name), DTYPES[dtype_name]
        try:
            module = entry.build(d_model, layers).to(device, dtype)
        except ConfigError:
            raise
        except UserError as e:  # a peer's or a model's optional package is missing
            self.report.note(f"{entry.model} ({entry.impl}) skipped: {e}")
            return None
        workload = Workload(module)
        try:
            refusal = check_paths(workload, device, dtype, backward="train" in self.config.modes)
        except Exception as e:  # noqa: BLE001  a backbone that cannot run here is recorded
            refusal = f"its check failed to run: {type(e).__name__}: {first_line(e)}"
        if refusal:
            self.report.note(f"{entry.model} ({entry.impl}) on {device_name} {dtype_name} not "
                             f"timed: {refusal}")
        return Contender(entry, workload, refusal)

    def run_group(self, contenders: list[Contender], device_name: str, dtype_name: str,
                  d_model: int, layers: int) -> None:
        cfg, device, dtype = self.config, torch.device(device_name), DTYPES[dtype_name]
        counts: dict[int, dict] = {id(c): {} for c in contenders}  # FLOPs and bytes per shape
        # host threads barely touch a GPU's speed: time it once, with the most threads asked for
        thread_counts = cfg.threads if device.type == "cpu" else (max(cfg.threads),)
        for batch in cfg.batch_sizes:
            for threads in thread_counts:
                for c in contenders:
                    c.stopped = {}
                coords = dict(batch=batch, d_model=d_model, layers=layers, threads=threads,
                              device=device_name, dtype=dtype_name)
                roofs = self.roofs(device_name, dtype_name, threads)
                for seq_len in cfg.seq_lens:
                    x = make_input(batch, seq_len, d_model, device, dtype)
                    for mode in (m for m in cfg.modes if m in THROUGHPUT_MODES):
                        def prepare(c, mode=mode, x=x, threads=threads):
                            return prepare_throughput(c.workload, mode, x, threads, counts[id(c)])
                        self.point(contenders, coords, mode, seq_len, roofs, prepare)
                if "decode" in cfg.modes:
                    for position in cfg.decode_positions():
                        def prepare(c, position=position, batch=batch, threads=threads):
                            return DecodePoint(c.workload, position, batch, d_model, device,
                                               dtype, threads, cfg.decode_window, cfg.rounds)
                        self.point(contenders, coords, "decode", position, roofs, prepare)

    def point(self, contenders: list[Contender], coords: dict, mode: str, seq_len: int,
              roofs: tuple[float, float], prepare: Callable[[Contender], Any]) -> None:
        """Every contender at one point: prepared, then timed in rounds, interleaved."""
        cfg = self.config
        results, live, spent = {}, [], {}
        for c in contenders:
            r = BenchResult(model=c.entry.model, impl=c.entry.impl, mode=mode, seq_len=seq_len,
                            tokens_per_s=None, latency_s=None, flops=None, mfu=None,
                            peak_mem_bytes=None, family=c.workload.module.family, **coords)
            results[id(c)] = r
            if c.refusal:
                r.status, r.error = "error", f"not timed: {c.refusal}"
            elif mode in c.stopped:
                r.status, r.error = c.stopped[mode]
            else:
                started = time.perf_counter()
                prepared = self._guarded(r, c, lambda: prepare(c), cfg.time_budget_s)
                spent[id(c)] = time.perf_counter() - started
                if r.status == "ok":
                    live.append((c, prepared))
        rounds: dict[int, list[float]] = {id(c): [] for c, _ in live}
        for k in range(cfg.rounds):
            for c, prepared in live if k % 2 == 0 else live[::-1]:
                r = results[id(c)]
                if r.status != "ok":
                    continue
                started = time.perf_counter()
                timing = self._guarded(r, c, lambda: prepared.time_round(
                    cfg.min_run_time_s / cfg.rounds), cfg.time_budget_s - spent[id(c)])
                spent[id(c)] += time.perf_counter() - started
                if r.status == "ok":
                    rounds[id(c)].append(timing.median_s)
        for c, prepared in live:
            r = results[id(c)]
            if r.status == "ok":
                self._fill(r, prepared, rounds[id(c)], roofs)
            r.wall_s = spent[id(c)]
            if mode == "train":
                c.workload.module.zero_grad(set_to_none=True)
        for c in contenders:
            r = results[id(c)]
            if r.status in ("oom", "timeout") and mode not in c.stopped:
                what = "memory" if r.status == "oom" else "time"
                c.stopped[mode] = (r.status, f"not run: out of {what} at L={seq_len}")
            self.report.results.append(r)
            if self.on_result is not None:
                self.on_result(r)

    def _guarded(self, result: BenchResult, contender: Contender, fn: Callable[[], Any],
                 budget_s: float) -> Any:
        """fn() under the time budget; a failure is recorded in `result`, and the sweep goes on."""
        try:
            with deadline(budget_s):
                return fn()
        except PointTimeout as e:
            result.status, result.error = "timeout", str(e)
        except NoStep as e:
            result.status, result.error = "unsupported", str(e)
        except Exception as e:  # noqa: BLE001  a sweep records a failing point and goes on
            result.status = "oom" if is_oom(e) else "error"
            result.error = f"{type(e).__name__}: {first_line(e)}"
            if result.status == "error":
                self.report.note(f"{result.model} ({result.impl}) {result.mode} at L="
                                 f"{result.seq_len} failed: {result.error}")
            else:
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        return None

    @staticmethod
    def _fill(result: BenchResult, prepared: Any, round_s: list[float],
              roofs: tuple[float, float]) -> None:
        """A timed point's figures: the median of its rounds, against both roofs."""
        peak, bandwidth = roofs
        timing = Timing.of(round_s)
        result.latency_s = timing.median_s
        result.round_s = list(round_s)
        result.tokens_per_s = prepared.tokens / timing.median_s
        result.flops, result.bytes_moved = prepared.flops, prepared.bytes_moved
        result.mfu = prepared.flops / timing.median_s / peak if prepared.flops else None
        if prepared.bytes_moved:
            result.mbu = prepared.bytes_moved / timing.median_s / bandwidth
            result.intensity = (prepared.flops / prepared.bytes_moved if prepared.flops
                                else None)
        result.peak_mem_bytes = prepared.peak_mem_bytes
        result.iqr_s, result.runs = timing.iqr_s, timing.runs
        result.position, result.state_bytes = prepared.position, prepared.state_bytes


class DecodePoint:
    """A decode point ready to time in rounds: each round decodes its share of the window.

    Reaching a position means decoding every step before it (a KV cache is written in place and
    never copied), so the first round's figures come from the same call that counts FLOPs and
    bytes and samples memory, all taken after its timed steps; the prepare calls of one point
    run one contender after another, in the first round's order.
    """

    def __init__(self, workload: Workload, position: int, batch: int, d_model: int,
                 device: torch.device, dtype: torch.dtype, threads: int, window: int,
                 rounds: int):
        self.args = (workload, position, batch, d_model, device, dtype, threads)
        self.window = max(1, -(-window // rounds))  # ceil: every round at least one step
        first = measure_decode(*self.args, window=self.window)
        self.tokens, self.flops, self.bytes_moved = first.tokens, first.flops, first.bytes_moved
        self.peak_mem_bytes = first.peak_mem_bytes
        self.position, self.state_bytes = first.position, first.state_bytes
        self.pending: Timing | None = first.timing

    def time_round(self, min_run_time: float) -> Timing:
        if self.pending is not None:
            timing, self.pending = self.pending, None
            return timing
        return measure_decode(*self.args, window=self.window).timing


def run_sweep(config: SweepConfig,
              on_result: Callable[[BenchResult], None] | None = None) -> SweepReport:
    """Measure every point of `config`; see Sweep."""
    return Sweep(config, on_result).run()
