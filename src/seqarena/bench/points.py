"""One sweep point: a backbone, a mode and a shape, measured.

Modes:
- train: forward, backward and an AdamW step, tokens/s over B * L tokens;
- forward: the forward half of a training step (autograd records the graph);
- prefill: the forward over a prompt of L tokens in inference mode, as before decoding starts;
- decode: the latency of one step() at position p, the state holding p - 1 tokens: a KV cache
  that grows with p, or a recurrent state that does not.

An encoder-decoder (seq2seq) backbone runs with source = target = the same L tokens; its prefill
encodes the source and builds the decoding state; decoding at position p follows a source of p
tokens, so every row at length L describes the same amount of context.
"""

from __future__ import annotations

import ctypes
import gc
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from seqarena.bench.timer import Timing, num_threads, time_call, time_round, time_steps
from seqarena.errors import UserError
from seqarena.flops import count_bytes, count_flops, total_flops, training_flops
from seqarena.memory import PeakMemory
from seqarena.models import StepNotSupported

# B batch, L length, D model width, P decode position

MODES = ("train", "forward", "prefill", "decode")
THROUGHPUT_MODES = ("train", "forward", "prefill")

# max |fast - reference| allowed, relative to 1 + max |reference|, by the dtype being timed
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8, torch.bfloat16: 5e-2, torch.float16: 1e-2}


class NoStep(Exception):
    """The backbone cannot decode step by step (not causal, or no step())."""


class Workload:
    """How the bench drives one backbone, decoder-only or encoder-decoder, through every mode."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.seq2seq, self.causal = module.seq2seq, module.causal
        self.encoder = module.encoder if self.seq2seq else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); an encoder-decoder reads x as both source and target."""
        return self.module(x, x) if self.seq2seq else self.module(x)

    def prefill(self, x: torch.Tensor) -> Any:
        """All the work done on a prompt (B, L, D) before the first decoded token."""
        if self.seq2seq:
            return self.module.init_state(x.shape[0], self.module.encode(x))
        return self.module(x)

    def start(self, x_src: torch.Tensor) -> Any:
        """The state before the first decoded token; x_src (B, S, D) is the source, if any."""
        if not self.causal:
            raise NoStep(f"{type(self.module).__name__} is not causal: every output reads the "
                         "future, so it cannot decode token by token")
        try:
            if self.seq2seq:
                return self.module.init_state(x_src.shape[0], self.module.encode(x_src))
            return self.module.init_state(x_src.shape[0])
        except (StepNotSupported, NotImplementedError, UserError) as e:
            raise NoStep(str(e) or f"{type(self.module).__name__} has no step()") from None

    def step(self, state: Any, x_t: torch.Tensor) -> tuple[torch.Tensor, Any]:
        try:
            return self.module.step(state, x_t)
        except (StepNotSupported, NotImplementedError, UserError) as e:
            raise NoStep(str(e) or f"{type(self.module).__name__} has no step()") from None

    def stepwise(self, x: torch.Tensor) -> torch.Tensor:
        """forward(x) recomputed one token at a time through step(): (B, L, D)."""
        state, outputs = self.start(x), []
        for t in range(x.shape[1]):
            y_t, state = self.step(state, x[:, t])
            outputs.append(y_t)
        return torch.stack(outputs, dim=1)

    def flops(self, x: torch.Tensor, mode: str) -> float | None:
        """FLOPs of one call in `mode` over x (B, L, D), by seqarena.flops's convention: the
        forward as counted plus what the model declares, 3x that for a training step; an
        encoder-decoder's prefill runs only its encoder (and the decoder's start state).

        The forward is counted in eval mode with autograd on: the path a training step takes
        (no fused inference kernels the counter cannot see), without dropout's randomness.
        """
        batch, seq_len = x.shape[:2]
        part = self.encoder if self.seq2seq and mode == "prefill" else self.module
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.enable_grad():
                counted = count_flops(lambda: self.prefill(x) if mode == "prefill"
                                      else self.forward(x))
        finally:
            self.module.train(was_training)
        forward = total_flops(counted, part.uncounted_flops(batch, seq_len))
        return training_flops(forward) if mode == "train" else forward

    def step_uncounted(self, batch: int, position: int) -> float | None:
        """Hidden FLOPs of the step at `position`: a `position`-token forward's share per token.

        Linear in L for recurrences (each token costs the same; the counter sees attention). An
        encoder-decoder's encoder is left out: it ran once, before decoding.
        """
        hidden = self.module.uncounted_flops(batch, position)
        if hidden is None:
            return None
        if self.seq2seq:
            hidden -= self.encoder.uncounted_flops(batch, position) or 0.0
        return hidden / position


@dataclass
class Measured:
    """What one point measured, before it becomes a BenchResult."""

    timing: Timing
    tokens: int  # tokens per timed call: B * L, or B for one decode step
    flops: float | None
    peak_mem_bytes: int | None
    bytes_moved: float | None = None  # bytes the call's ops read and write (seqarena.flops)
    round_s: list[float] = field(default_factory=list)  # each round's median seconds
    position: int | None = None  # decode: the position timed
    state_bytes: int | None = None  # decode: bytes of the state there


@dataclass
class Prepared:
    """A throughput point ready to time: its call, and what its untimed first call measured."""

    fn: Callable[[], object]
    device: torch.device
    threads: int
    tokens: int
    flops: float | None
    bytes_moved: float | None
    peak_mem_bytes: int | None
    position: int | None = None  # throughput points have none
    state_bytes: int | None = None

    def time_round(self, min_run_time: float) -> Timing:
        return time_round(self.fn, self.device, self.threads, min_run_time)


def release_freed_memory(device: torch.device) -> None:
    """Hand freed heap memory back to the OS before a CPU peak is sampled.

    glibc keeps freed blocks (up to its mmap threshold, which grows to 32 MB) resident for
    reuse, so without this the resident-memory peak of a step depends on what earlier points
    happened to leave behind: the same step measured 1.5 MB after a longer one, 67 MB alone.
    """
    if device.type != "cpu":
        return
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the sampled peak may read low
        pass


def make_input(batch: int, length: int, d_model: int, device: torch.device, dtype: torch.dtype,
               seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, d_model, generator=generator).to(device, dtype)


def train_step(workload: Workload, x: torch.Tensor):
    """A function running one training step on x: forward, a mean-square loss, backward, AdamW."""
    params = [p for p in workload.module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        workload.forward(x).float().square().mean().backward()
        optimizer.step()

    return step


def throughput_call(workload: Workload, mode: str, x: torch.Tensor) -> Callable[[], object]:
    """The call a throughput mode times: a train step, a training forward or a prefill."""
    workload.module.train(mode != "prefill")
    if mode == "train":
        return train_step(workload, x)
    if mode == "forward":
        return lambda: workload.forward(x)
    if mode == "prefill":
        def prefill():
            with torch.inference_mode():
                workload.prefill(x)
        return prefill
    raise ValueError(f"unknown throughput mode {mode!r}")


def prepare_throughput(workload: Workload, mode: str, x: torch.Tensor, threads: int,
                       counts_cache: dict | None = None) -> Prepared:
    """Run the call once untimed (warm-up, and the real step whose peak memory is sampled, for
    every contender), then count its FLOPs and bytes (cached per mode and shape: counting is
    slow, and the counts do not change between calls)."""
    device, (batch, seq_len, _) = x.device, x.shape
    fn = throughput_call(workload, mode, x)
    release_freed_memory(device)
    with num_threads(threads), PeakMemory(device) as memory:
        fn()
    key = (mode, batch, seq_len)
    cache = counts_cache if counts_cache is not None else {}
    if key not in cache:
        with num_threads(threads):
            cache[key] = (workload.flops(x, mode), count_bytes(fn))
    flops, moved = cache[key]
    return Prepared(fn, device, threads, batch * seq_len, flops, moved, memory.peak_bytes)


def measure_throughput(workload: Workload, mode: str, x: torch.Tensor, threads: int,
                       min_run_time: float, counts_cache: dict | None = None) -> Measured:
    """Time a train step, a training forward or a prefill over x (B, L, D), on its own."""
    point = prepare_throughput(workload, mode, x, threads, counts_cache)
    timing = time_call(point.fn, point.device, threads, min_run_time=min_run_time, warmup=0)
    if mode == "train":
        workload.module.zero_grad(set_to_none=True)
    return Measured(timing, point.tokens, point.flops, point.peak_mem_bytes, point.bytes_moved,
                    [timing.median_s])


def measure_decode(workload: Workload, position: int, batch: int, d_model: int,
                   device: torch.device, dtype: torch.dtype, threads: int,
                   window: int = 16) -> Measured:
    """Latency of the step at `position`: the median over the `window` steps ending there.

    Positions shorter than the window are decoded again from a fresh state until the window
    is full, so position 1 is a median too. The state is never copied: a KV cache is written in
    place, so the only honest way to a position is to decode up to it.
    """
    workload.module.eval()
    x_t = make_input(batch, 1, d_model, device, dtype, seed=1)[:, 0]  # (B, D)
    # an encoder-decoder decodes after a source of `position` tokens; the others need only B
    source = make_input(batch, position if workload.seq2seq else 1, d_model, device, dtype, seed=2)
    first = max(1, position - window + 1)  # the window's first position
    samples: list[float] = []
    held: list[Any] = [None]  # the state being decoded, replaced by every step

    def one_step():
        held[0] = workload.step(held[0], x_t)[1]

    with num_threads(threads), torch.inference_mode():
        held[0] = workload.start(source)
        for _ in range(min(position, 2)):  # first-call allocations and kernel choice
            one_step()
        while len(samples) < window:
            held[0] = workload.start(source)
            for _ in range(first - 1):
                one_step()
            samples += time_steps(one_step, position - first + 1, device)
        state_bytes = tensor_bytes(held[0])
        release_freed_memory(device)
        with PeakMemory(device) as memory:
            one_step()
        counted = count_flops(one_step)
        moved = count_bytes(one_step)
    timing = Timing.of(samples)
    return Measured(timing, batch, total_flops(counted, workload.step_uncounted(batch, position)),
                    memory.peak_bytes, moved, [timing.median_s], position, state_bytes)


def tensor_bytes(state: Any) -> int:
    """Bytes of every tensor a decoding state holds (buffers counted at capacity, once each)."""
    seen: set[int] = set()

    def visit(obj: Any) -> int:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() in seen:
                return 0
            seen.add(storage.data_ptr())
            return storage.nbytes()
        if isinstance(obj, (list, tuple)):
            return sum(visit(o) for o in obj)
        if isinstance(obj, dict):
            return sum(visit(o) for o in obj.values())
        if hasattr(obj, "__dict__") and not isinstance(obj, (nn.Module, type)):
            return sum(visit(o) for o in vars(obj).values())
        return 0

    return visit(state)


def check_paths(workload: Workload, device: torch.device, dtype: torch.dtype,
                backward: bool = True) -> str | None:
    """Why this backbone must not be timed, or None. With the same weights, on a tiny input:
    its fast path's output and (with `backward`, before a training step is timed) its gradients
    must match its reference() path's; step-by-step decoding must match the parallel forward."""
    x = make_input(2, 8, workload.module.d_model, device, dtype, seed=3)
    tolerance = TOLERANCE.get(dtype, 1e-2)
    was_training = workload.module.training
    workload.module.eval()
    try:
        reference_module = workload.module.reference()
        if reference_module is not None:
            reference = Workload(reference_module.to(device, torch.float32).eval())
            for what, got, expected in _against_reference(workload, reference, x, backward):
                error = _relative_error(got, expected)
                if not error <= tolerance:
                    return (f"its {what} differs from the reference path by {error:.3g} "
                            f"(tolerance {tolerance:g})")
        with torch.no_grad():
            y = workload.forward(x).float()  # (2, 8, D)
            try:
                stepped = workload.stepwise(x).float()
            except NoStep:
                return None
        error = _relative_error(stepped, y)
        if not error <= tolerance:
            return (f"step-by-step decoding differs from its forward by {error:.3g} "
                    f"(tolerance {tolerance:g})")
    finally:
        workload.module.zero_grad(set_to_none=True)
        workload.module.train(was_training)
    return None


def _against_reference(fast: Workload, reference: Workload, x: torch.Tensor, backward: bool):
    """(what, fast's figure, the reference's) for the output and, with `backward`, the
    gradients of a mean-square loss with respect to the input and every parameter."""
    results = []
    for workload, inputs in ((fast, x), (reference, x.float())):
        workload.module.zero_grad(set_to_none=True)  # a step taken before must not add to these
        inputs = inputs.detach().requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            y = workload.forward(inputs)
            if backward:
                y.float().square().mean().backward()
        grads = {"input gradient": inputs.grad} if backward else {}
        if backward:
            grads.update((f"gradient of {name}", p.grad if p.grad is not None
                          else torch.zeros_like(p))
                         for name, p in workload.module.named_parameters())
        results.append({"output": y.detach(), **grads})
    got, expected = results
    return [(what, got[what].float(), expected[what].float()) for what in got if what in expected]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / (1 + max |b|); NaN anywhere counts as infinitely wrong."""
    error = (a - b).abs().max().item() / (1.0 + b.abs().max().item())
    return math.inf if math.isnan(error) else error
