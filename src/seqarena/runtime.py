"""How a seqarena process sets up torch before it trains, compares, benchmarks or analyses.

Subnormal floats (|x| < 1.2e-38 in float32) take a slow microcode path on x86 CPUs, up to 100x
per operation. A recurrence whose gradients decay drives many values through that range: on a
2-core Xeon an rnn trained on adding at L=200 ran at 17,465 tokens/s for its first ~100 steps
and 139,544 with subnormals flushed to zero, to the same test MSE. So seqarena flushes them by
default on CPU (`torch.set_flush_denormal`, SSE3 and later), and `--keep-denormals` or
SEQARENA_KEEP_DENORMALS=1 turns that off. The flag travels to child processes (data-parallel
ranks, compare's runs) through the environment; the setting in force is recorded in the
machine block of every results file, as observed, not as asked.

This module imports torch only inside its functions, so the CLI can load it before torch.
"""

from __future__ import annotations

import os
from typing import Any

KEEP_DENORMALS_ENV = "SEQARENA_KEEP_DENORMALS"


def keep_denormals() -> bool:
    """Whether the user asked to keep subnormal floats (the flag or the environment)."""
    return os.environ.get(KEEP_DENORMALS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def set_keep_denormals(keep: bool) -> None:
    """Record the flag in the environment, so this process and its children follow it."""
    if keep:
        os.environ[KEEP_DENORMALS_ENV] = "1"


def setup() -> dict[str, Any]:
    """Flush subnormals to zero unless asked to keep them; returns float_settings()."""
    import torch

    torch.set_flush_denormal(not keep_denormals())
    return float_settings()


def float_settings() -> dict[str, Any]:
    """The floating-point settings in force in this thread, observed: does a subnormal
    product come out as zero?"""
    import torch

    flushed = bool((torch.tensor(1e-39) * 1.0).item() == 0.0)
    return {"flush_denormal": flushed}
