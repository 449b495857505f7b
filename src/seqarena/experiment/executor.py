"""Where the runs of a comparison run: one small seam, `Executor`, and the local process pool.

A run travels as a RunSpec, plain picklable data (a TrainConfig's fields), and comes back as a
RunResult; `execute(spec)` is the one function that runs a spec, in whichever process or machine
an executor calls it. The comparison and its learning-rate search see nothing but this seam, so a
cluster executor (one Ray task per spec, asking for `threads` CPUs) is one more class with the
same `run`.

    specs = [RunSpec(dataclasses.asdict(cfg), resume=True), ...]
    results = LocalExecutor(jobs=2).run(specs, done=lambda i, result: print(i, result.metric))

A run's numbers do not depend on where it runs: each seeds its own data and weights and sets its
own threads, so `--jobs 2` gives the numbers of `--jobs 1`. Only the timings share the machine.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from seqarena.results import RunResult

Done = Callable[[int, RunResult], None]  # (index of the spec, its result), as each run finishes


@dataclass(frozen=True)
class RunSpec:
    """One training run, as plain data any executor can carry."""

    config: dict[str, Any]  # TrainConfig fields (dataclasses.asdict)
    resume: bool = False  # continue what the run directory holds; a finished run is read back

    @property
    def threads(self) -> int:
        """CPU threads the run uses (0 in the config: every core): what a cluster executor asks
        a node for."""
        return int(self.config.get("threads") or os.cpu_count() or 1)


class Executor(Protocol):
    """Runs specs somewhere and hands back their results in the order of the specs."""

    jobs: int  # runs at once

    def run(self, specs: Sequence[RunSpec], done: Done | None = None) -> list[RunResult]:
        """Every spec's RunResult, in spec order; done(i, result) as each one finishes."""
        ...


class LocalExecutor:
    """`jobs` runs at once on this machine: in this process for 1, else a pool of processes
    (spawned, so no run inherits another's threads or allocator state)."""

    def __init__(self, jobs: int = 1):
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}")
        self.jobs = jobs

    def run(self, specs: Sequence[RunSpec], done: Done | None = None) -> list[RunResult]:
        done = done or (lambda i, result: None)
        results: list[RunResult | None] = [None] * len(specs)
        if self.jobs == 1 or len(specs) <= 1:
            for i, spec in enumerate(specs):
                results[i] = execute(spec)
                done(i, results[i])
            return results  # type: ignore[return-value]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(self.jobs, len(specs)), mp_context=context) as pool:
            pending = {pool.submit(execute, spec): i for i, spec in enumerate(specs)}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        i = pending.pop(future)
                        results[i] = future.result()
                        done(i, results[i])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return results  # type: ignore[return-value]


def execute(spec: RunSpec) -> RunResult:
    """Run one spec here: train it, continue it (resume) or read back its finished result."""
    from seqarena import runtime
    from seqarena.training import checkpoint
    from seqarena.config import TrainConfig
    from seqarena.training.train import set_threads

    runtime.setup()  # first: a pool or Ray worker starts with torch's defaults
    cfg = TrainConfig(**spec.config)
    set_threads(cfg.threads)
    resume = False
    if spec.resume:
        finished = finished_result(cfg.run_dir)
        if finished is not None:
            return finished
        if checkpoint.latest(cfg.run_dir / "checkpoints") is not None:
            resume = True
        elif cfg.run_dir.exists():  # started, stopped before its first checkpoint: start again
            shutil.rmtree(cfg.run_dir)
    return _train(cfg, resume)


def finished_result(run_dir: Path) -> RunResult | None:
    """The RunResult of a run directory that holds a finished run, else None."""
    from seqarena.results import read_results

    if not (run_dir / "summary.json").exists():
        return None
    result = read_results(run_dir / "summary.json")["results"][0]
    if result.status == "running":  # written at an evaluation of a run that did not finish
        return None
    return result


def _train(cfg, resume: bool) -> RunResult:
    """One run; a run that fails (out of memory, an exception in a model) is a result with its
    status, not the end of the comparison. Bad input (UserError) still stops everything."""
    import torch

    from seqarena.errors import UserError, first_line
    from seqarena.training.train import train

    try:
        return train(cfg, resume=resume).result
    except UserError:
        raise
    except torch.OutOfMemoryError as e:
        return failed_result(cfg, "oom", first_line(e))
    except Exception as e:  # noqa: BLE001  recorded in the result, as the Ray executor does
        oom = "out of memory" in str(e) or "can't allocate memory" in str(e)
        return failed_result(cfg, "oom" if oom else "error", f"{type(e).__name__}: {first_line(e)}")


def failed_result(cfg, status: str, stopped: str = "") -> RunResult:
    """The RunResult of a run that ended without a metric: status "oom", "error", ... Its metric
    name, direction and baselines are the task's, as a finished run's are."""
    from seqarena.tasks import TASKS

    task = TASKS.get(cfg.task)
    return RunResult(model=cfg.label or cfg.model, task=cfg.task, seq_len=cfg.seq_len, params=0,
                     metric_name=task.metric_name, metric=None,
                     higher_is_better=task.higher_is_better, train_tokens_per_s=0.0,
                     peak_mem_bytes=0, wall_s=0.0, steps=0, seed=cfg.seed, status=status,
                     lr=cfg.lr, lr_tuned=cfg.lr_tuned, run_dir=str(cfg.run_dir), stopped=stopped)
