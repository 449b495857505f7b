"""The machine's roofs: large square matmuls (the compute peak) and a STREAM triad (memory
bandwidth), timed in the same run, device, dtype and threads.

MFU (model FLOPs utilisation, PaLM, Chowdhery et al. 2022, appendix B) divides a model's counted
FLOP/s by what this machine reaches on the work it is best at. Measuring that here, instead of
quoting a datasheet, keeps the ratio honest about this BLAS, this clock and these threads.

The peak is the fastest of two sizes and, on CPU, two libraries: torch's matmul calls its
BLAS (MKL in the official wheels), while oneDNN runs the fused RNN kernels and can be the faster
of the two (on AMD CPUs MKL avoids its AVX-512 code paths). A model that reaches oneDNN's speed
must not show an MFU above 100 %. Each path's rate is the median of its runs, the same
statistic as the model timings it divides: on a shared machine the best run can catch a moment
with twice the usual share of the cores, which no model timing would see.
"""

from __future__ import annotations

import re
from typing import Callable

import torch

from seqarena.bench.timer import time_call


def peak_sizes(device: torch.device) -> tuple[int, ...]:
    """Sides n of the n x n matmuls: large enough to saturate the device, quick to time."""
    return (4096, 8192) if device.type == "cuda" else (1024, 2048)


def blas_name(device: torch.device) -> str:
    """The library behind torch's matmul on this device: "mkl", "openblas", ... on CPU (from
    torch's build settings), "cublas" on CUDA."""
    if device.type == "cuda":
        return "cublas"
    match = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    name = match.group(1).lower() if match else "blas"
    return "openblas" if name == "open" else name


def matmul_paths(a: torch.Tensor, b: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The ways torch can multiply a by b on their device: its BLAS, and oneDNN on CPU."""
    paths = {blas_name(a.device): lambda: a @ b}
    if a.device.type == "cpu" and torch.backends.mkldnn.is_available():
        a_packed, b_packed = a.to_mkldnn(), b.t().contiguous().to_mkldnn()  # linear: a @ w^T
        paths["onednn"] = lambda: torch._C._nn.mkldnn_linear(a_packed, b_packed, None)
    return paths


def matmul_peaks(device: torch.device, dtype: torch.dtype, threads: int,
                 min_run_time: float = 1.0, sizes: tuple[int, ...] | None = None
                 ) -> dict[str, float]:
    """FLOP/s of each path's n x n by n x n matmul (2 n^3 FLOPs): the median run, at the best
    of the given sizes."""
    peaks: dict[str, float] = {}
    generator = torch.Generator(device=device).manual_seed(0)
    sizes = sizes or peak_sizes(device)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        for name, fn in matmul_paths(a, b).items():
            try:
                timing = time_call(fn, device, threads, min_run_time=min_run_time / len(sizes))
            except RuntimeError:  # this library has no kernel for this dtype
                continue
            peaks[name] = max(peaks.get(name, 0.0), 2.0 * n ** 3 / timing.median_s)
    return peaks


def matmul_peak(device: torch.device, dtype: torch.dtype, threads: int,
                min_run_time: float = 1.0, sizes: tuple[int, ...] | None = None
                ) -> tuple[float, dict[str, float]]:
    """The machine's peak FLOP/s (the best path), and every path's best."""
    peaks = matmul_peaks(device, dtype, threads, min_run_time, sizes)
    return max(peaks.values()), peaks


def triad_elements(device: torch.device) -> int:
    """Elements per triad array: each far larger than the caches, so memory is what is timed."""
    return 1 << 27 if device.type == "cuda" else 1 << 25


def stream_triad(device: torch.device, dtype: torch.dtype, threads: int,
                 min_run_time: float = 1.0, elements: int | None = None) -> float:
    """Memory bandwidth in bytes/s: STREAM's triad a = b + s * c (McCalpin 1995), which reads
    two arrays and writes one, 3 n elements moved; the median run, as for the matmul peak."""
    n = elements or triad_elements(device)
    b = torch.ones(n, device=device, dtype=dtype)
    c = torch.ones(n, device=device, dtype=dtype)
    a = torch.empty_like(b)
    timing = time_call(lambda: torch.add(b, c, alpha=3.0, out=a), device, threads,
                       min_run_time=min_run_time)
    return 3.0 * n * b.element_size() / timing.median_s


def peak_key(device: str, dtype: str, threads: int) -> str:
    """How results files name one peak: "cpu/float32/2t"."""
    return f"{device}/{dtype}/{threads}t"
