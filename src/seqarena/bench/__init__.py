"""The benchmark engine: how fast each architecture trains and decodes, and how close it gets to
what the machine can do. `seqarena bench` is a thin layer over run_sweep."""

from seqarena.bench.peers import PEERS
from seqarena.bench.points import MODES
from seqarena.bench.summary import (crossovers, csv_text, device_speedup, format_results,
                                    thread_scaling, write_outputs)
from seqarena.bench.sweep import SweepConfig, SweepReport, quick_config, run_sweep

__all__ = ["MODES", "PEERS", "SweepConfig", "SweepReport", "crossovers", "csv_text",
           "device_speedup", "format_results", "quick_config", "run_sweep", "thread_scaling",
           "write_outputs"]
