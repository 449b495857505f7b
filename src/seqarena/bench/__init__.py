"""The benchmark engine: how fast each architecture trains and decodes, and how close it gets to
what the machine can do. `seqarena bench` is a thin layer over these modules:

- sweep: SweepConfig and run_sweep, the loops, time budgets, OOM and timeout records;
- points: one point in each mode (train, forward, prefill, decode) and the correctness check;
- timer, peak: timing and the roofs (matmul peak, memory bandwidth); FLOPs and bytes are
  counted by seqarena.flops;
- peers: other implementations in the same contract;
- summary, command: crossovers, speed-ups, table, JSON and CSV; the command's library calls;
- openmp: how OpenMP threads wait, chosen before torch loads (so this package imports nothing).
"""
