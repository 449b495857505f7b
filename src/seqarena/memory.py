"""Peak memory of a region of code: CUDA's allocator counter, or sampled resident memory on CPU.

tracemalloc does not see tensor memory (it lives outside Python's allocator), so on CPU a thread
samples the process's resident set size while the region runs and reports the peak above the
resident size at entry.
"""

from __future__ import annotations

import os
import threading

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: fall back to the high-water mark, coarser but portable
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """`with PeakMemory(device) as m: ...; m.peak_bytes` -> bytes above the level at entry."""

    def __init__(self, device: str | torch.device = "cpu", interval_s: float = 0.001):
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.peak_bytes = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base = rss_bytes()
        self._max = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, rss_bytes())
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self._max, rss_bytes()) - self._base
