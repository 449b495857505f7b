"""Data parallelism on torch.distributed: N copies of one training run, one per core or GPU.

torchrun (or `seqarena train --nproc N`) starts N processes. Each joins the process group from the
variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT), over gloo on a CPU and NCCL on GPUs. Every rank builds the same model, draws its own
stream of training batches, and DistributedDataParallel averages the gradients during backward,
so every rank takes the same optimizer step: N ranks with batch b train like one process with
batch N*b made of their N batches (exactly so when the loss is a mean over examples).

References: Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel
Training" (VLDB); PyTorch's DistributedDataParallel and torchrun (torch.distributed.run) docs.

A process that dies closes its sockets, and the others' next collective fails at once; a process
that hangs makes the others' next collective fail after the process group's timeout
(SEQARENA_DDP_TIMEOUT seconds, default 300). Either way each survivor raises RankLost: one line
saying what happened and how to continue (--resume from the last checkpoint).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from seqarena.errors import UserError

TIMEOUT_ENV = "SEQARENA_DDP_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0  # longer than any pause of one rank (rank 0 saving a checkpoint)


class RankLost(UserError):
    """The process group failed: another rank crashed, was killed or stopped answering."""


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run, and the few collectives the trainer needs.

    Ranks() is one process alone (rank 0 of 1); every method is then the identity.
    """

    rank: int = 0  # this process, 0 .. world - 1 over all nodes
    world: int = 1  # processes in the run
    local_rank: int = 0  # this process on its node: picks its GPU
    local_world: int = 1  # processes on this node: they share its cores

    @property
    def main(self) -> bool:
        """Rank 0 writes the run directory and talks to the user."""
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """This rank's device: under DDP on CUDA, GPU number LOCAL_RANK."""
        if self.world > 1 and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def threads(self) -> int:
        """CPU threads for this process: the node's cores shared among its processes."""
        return max(1, cores() // self.local_world)

    def wrap(self, model: nn.Module) -> nn.Module:
        """What to call in training: DDP around `model` (sharing its parameters), or `model`.

        Building DDP is a collective: rank 0's weights are copied to every rank."""
        if self.world == 1:
            return model
        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                       else None)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of x over all ranks, on every rank (detached)."""
        x = x.detach().clone()
        if self.world > 1:
            dist.all_reduce(x)  # a sum: gloo has no average
            x /= self.world
        return x

    def from_main(self, value: float) -> float:
        """Rank 0's number on every rank, for decisions all ranks must take together (stop now,
        this learning rate): one rank deciding alone leaves the others waiting for it."""
        if self.world == 1:
            return value
        x = torch.tensor([float(value)], dtype=torch.float64, device=self._device())
        dist.broadcast(x, src=0)
        return x.item()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (anything picklable), in rank order, on every rank."""
        if self.world == 1:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def _device(self) -> torch.device:
        """Where the backend wants collective tensors: the rank's GPU for NCCL, else the CPU."""
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


ALONE = Ranks()


def rank_seed(seed: int, rank: int) -> int:
    """A seed for one rank's own randomness (dropout), mixed from (seed, rank) so that rank r of
    seed s shares no stream with rank 0 of seed s + r."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def launched() -> bool:
    """Whether torchrun (or `seqarena train --nproc`) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's rank as the launcher set it (0 when not launched)."""
    return int(os.environ.get("RANK", "0"))


def timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UserError(f"{TIMEOUT_ENV}={raw!r}: give the process-group timeout in seconds, "
                        f"e.g. {TIMEOUT_ENV}=300")
    return value


@contextmanager
def process_group(device_type: str) -> Iterator[Ranks]:
    """Join the process group the launcher describes in the environment, for the block.

    Not launched (or launched alone): yields ALONE and touches nothing. Inside the block a failure
    of the group itself (a rank lost, a timeout) becomes RankLost, one line for the user."""
    if not launched():
        yield ALONE
        return
    if dist.is_initialized():  # the caller owns the group; use it as it is
        yield _ranks()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    seconds = timeout_s()
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=seconds))
    except (RuntimeError, ValueError) as e:
        raise UserError(f"rank {env_rank()} could not join the process group at {where} "
                        f"({_reason(e)}); check --rdzv-endpoint and that every node started "
                        f"within {seconds:g} s") from None
    ranks = _ranks()
    try:
        yield ranks
    except RuntimeError as e:
        if not _group_failed(e):
            raise
        raise RankLost(f"rank {ranks.rank} of {ranks.world} lost contact with the others "
                       f"({_reason(e)}): one crashed, was killed or hung for {seconds:g} s; this "
                       f"run stopped, continue it from its last checkpoint with --resume") from None
    else:
        dist.destroy_process_group()  # after a failure the group is broken: the process just exits


def _ranks() -> Ranks:
    return Ranks(dist.get_rank(), dist.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", "0")),
                 int(os.environ.get("LOCAL_WORLD_SIZE", str(dist.get_world_size()))))


# gloo and NCCL report a lost peer or a timeout as a RuntimeError (from backward, through
# autograd) or a DistError (from a direct collective); the text names the transport.
_GROUP_FAILURE = re.compile(r"gloo|NCCL|[Cc]onnection (reset|closed|refused)|Timed out|"
                            r"[Bb]roken pipe|ProcessGroup")


def _group_failed(e: BaseException) -> bool:
    return isinstance(e, dist.DistError) or bool(_GROUP_FAILURE.search(str(e)))


def _reason(e: BaseException) -> str:
    """The first sentence of a backend's error, without the source-file prefix."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(e).strip().splitlines()[0] if str(e).strip() else "")
    return (text.split(". ")[0] or type(e).__name__)[:160]


# --- launching N processes on this machine (`seqarena train --nproc N`) ------------------------

def launch(nproc: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in `nproc` fresh processes on this machine, joined as `torchrun --standalone`
    joins them (rendezvous on a port the OS picks), and return rank 0's return value.

    A failed rank stops all of them, and the first failure becomes one UserError: a UserError
    keeps its message; a crash names the rank and its exception, its traceback printed above;
    a rank that exited or was killed names its exit status or signal."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}")
    # A rank killed by a signal leaves the semaphores of its result queue behind; the resource
    # tracker would warn about them below the one line that says what happened.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:multiprocessing.resource_tracker")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.1, start_method="spawn")
    with _quiet("torch.distributed.elastic", "torch.multiprocessing"):
        try:
            return elastic_launch(config, fn)(*args)[0]
        except ChildFailedError as e:
            rank, failure = _first_failure(e.failures)
        except SignalException:
            raise KeyboardInterrupt from None
    error = failure.message if isinstance(failure.message, dict) else {}
    name, _, said = error.get("message", "").partition(": ")
    if name in _user_error_names():
        raise UserError(said)
    if error:  # a crash: its traceback, then the line
        print(error.get("extraInfo", {}).get("py_callstack", ""), file=sys.stderr, end="")
        raise UserError(f"rank {rank} of {nproc} failed: {error['message']}; every process stopped")
    if failure.exitcode < 0:
        raise UserError(f"rank {rank} of {nproc} was killed by "
                        f"{signal.Signals(-failure.exitcode).name}; every process stopped")
    raise UserError(f"rank {rank} of {nproc} exited with status {failure.exitcode}; every "
                    f"process stopped")


def _first_failure(failures: dict[int, Any]) -> tuple[int, Any]:
    """The rank that failed first, preferring any other to those that only lost contact."""
    def lost_contact(failure) -> bool:
        error = failure.message if isinstance(failure.message, dict) else {}
        return error.get("message", "").startswith(f"{RankLost.__name__}: ")

    return min(failures.items(), key=lambda rf: (lost_contact(rf[1]), rf[1].timestamp, rf[0]))


def _user_error_names() -> set[str]:
    names, todo = set(), [UserError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """The launcher's own logs off: failures reach the user as one line, not a log dump."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
