"""How OpenMP's idle threads wait, chosen before torch loads OpenMP (it reads the setting once).

torch runs its CPU kernels' parallel loops on OpenMP threads, which spin between loops. On an
idle machine spinning is fastest: on 2 idle cores it made an LSTM training step 3x faster than
a passive (sleeping) wait, where every small per-time-step loop pays a wake-up. On a machine
whose cores other processes already use, the spinning threads take the time those processes
need and the reverse holds: beside three busy processes the spinning step took 1.0 s, the
passive one 0.36 s. So the bench picks by the load it starts in. OMP_WAIT_POLICY set by the
user always wins, and the choice is recorded with the results.

This module imports nothing from torch, so it can run before torch is imported.
"""

from __future__ import annotations

import os
import sys


def load_average() -> float:
    """Runnable processes, averaged over the last minute (0 where the OS does not say)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def choose_wait_policy() -> str | None:
    """Wait passively if other processes already keep every core busy; return the policy in
    force (None: OpenMP's default, spinning). Too late once torch is imported: nothing changes."""
    busy = load_average() >= (os.cpu_count() or 1)
    if busy and "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return os.environ.get("OMP_WAIT_POLICY")
