"""Timing one call: warm-up, repeated runs, median and spread, threads and GPU sync explicit.

torch.utils.benchmark.Timer sets the thread count for the measurement and restores it, and
blocked_autorange groups fast calls into blocks so the timer's own overhead drops out. A slow call
fills one block on its own, so a few extra single runs make a median out of at least three.

A point that would run past its budget is stopped by SIGALRM (between Python bytecodes, so a long
single kernel finishes first) and recorded as a timeout by the sweep.
"""

from __future__ import annotations

import contextlib
import math
import signal
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch.utils.benchmark import Timer


class PointTimeout(Exception):
    """A sweep point ran past its time budget."""


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median of the runs and the spread between their quartiles."""

    median_s: float
    iqr_s: float
    runs: int

    @classmethod
    def of(cls, times: list[float]) -> "Timing":
        quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        return cls(statistics.median(times), quartiles[2] - quartiles[0], len(times))


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock read after it measures the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with n intra-op threads, then put the previous count back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise PointTimeout inside the block once `seconds` have passed (main thread only)."""
    if seconds <= 0:
        raise PointTimeout(f"time budget {seconds:g} s leaves no time to run")
    if math.isinf(seconds) or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise PointTimeout(f"ran past its time budget of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def time_call(fn: Callable[[], object], device: torch.device, threads: int,
              min_run_time: float = 1.0, min_runs: int = 3, warmup: int = 1) -> Timing:
    """Median seconds per fn() after `warmup` untimed calls, over >= min_run_time and min_runs.

    A call slow enough that min_runs of them fill min_run_time is timed min_runs times, one by
    one; faster calls go to blocked_autorange, which groups them so the clock's cost drops out.
    """
    def call():
        fn()
        sync(device)  # both sides of the timed region: Timer reads its clock after this returns

    with num_threads(threads):
        for _ in range(warmup):
            call()
        sync(device)
        timer = Timer(stmt="call()", globals={"call": call}, num_threads=threads)
        times = list(timer.timeit(number=1).times)
        if times[0] * min_runs < min_run_time:
            times = list(timer.blocked_autorange(min_run_time=min_run_time).times)
        while len(times) < min_runs:
            times.extend(timer.timeit(number=1).times)
    return Timing.of(times)


def time_round(fn: Callable[[], object], device: torch.device, threads: int,
               min_run_time: float) -> Timing:
    """One round of an interleaved point, the call already warm: a call that fills
    min_run_time is timed once (Timer.timeit would add two warm-up calls); faster calls go to
    blocked_autorange for at least min_run_time."""
    with num_threads(threads):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        first = time.perf_counter() - start
        if first >= min_run_time:
            return Timing.of([first])

        def call():
            fn()
            sync(device)

        timer = Timer(stmt="call()", globals={"call": call}, num_threads=threads)
        return Timing.of(list(timer.blocked_autorange(min_run_time=min_run_time).times))


def time_steps(step: Callable[[], object], n: int, device: torch.device) -> list[float]:
    """Wall seconds of each of n consecutive calls; for decoding, where each call moves on."""
    times = []
    for _ in range(n):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times
