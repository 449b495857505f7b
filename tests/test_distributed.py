"""Data-parallel training: 2 processes on the CPU (gloo), joined as torchrun joins them.

The ranks are forked from the test process with the variables torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT on a port free at run time) and run the
trainer's own `train()`. Every wait has a deadline, so a regression fails instead of hanging.

The proof of equivalence uses a task whose training example number g is fixed by g alone: stream s
of `shards` streams draws, at step t, examples [(t*shards + s)*b, (t*shards + s + 1)*b). Two ranks
with batch b therefore see, together, exactly the batch of 2b that one process sees with one
stream: the same data, so the same parameters if DDP averages the gradients right.
"""

import json
import os
import pickle
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from itertools import count
from typing import ClassVar

import multiprocessing as mp
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from seqarena.training import distributed
from seqarena.training.distributed import RankLost, Ranks
from seqarena.errors import UserError
from seqarena.results import read_results
from seqarena.tasks import TASKS, Batch, Task, TaskConfig, register_task
from seqarena.tasks.base import PoolHead
from seqarena.config import TrainConfig
from seqarena.training.train import build, train

torch.set_num_threads(1)
TIMEOUT_S = 60  # deadline of one multi-process run in these tests


# --- a task whose data is fixed per example, not per stream ----------------------------------

@dataclass(frozen=True)
class ShardsConfig(TaskConfig):
    seq_len: int = 6  # input length L
    shards: int = 1  # streams sharing one global batch; stream s draws its s-th slice
    eval_size: int = 16  # examples in each held-out split


class Shards(Task):
    """Two real features per step -> the mean of their product (MSE, a mean over the batch)."""

    metric_name: ClassVar[str] = "mse"
    higher_is_better: ClassVar[bool] = False
    head_kind: ClassVar[str] = "regress"
    config_cls = ShardsConfig
    fault: ClassVar[dict] = {}  # test hook, not config: {stream: (batch index, "die" or "hang")}

    def make_embedding(self, d_model):
        return nn.Linear(2, d_model)

    def make_head(self, d_model, causal=True):
        return PoolHead(d_model, 1, causal, squeeze=True)

    def examples(self, split, ids):
        x = np.stack([np.random.default_rng([self.config.seed, len(split), g]).standard_normal(
            (self.config.seq_len, 2)) for g in ids]).astype(np.float32)
        x = torch.from_numpy(x).to(torch.get_default_dtype())  # float64 in the float64 test
        return Batch(x, (x[..., 0] * x[..., 1]).mean(1))

    def batches(self, split, batch_size, seed=0):
        if split != "train":
            return iter([self.examples(split, range(self.config.eval_size))])
        return self.stream(batch_size, seed)

    def stream(self, b, s):
        for t in count():
            at, kind = self.fault.get(s, (None, None))
            if t == at and kind == "die":
                os._exit(1)
            if t == at and kind == "hang":
                time.sleep(3600)
            start = (t * self.config.shards + s) * b
            yield self.examples("train", range(start, start + b))

    def loss(self, pred, batch):
        return nn.functional.mse_loss(pred, batch.y)

    def score(self, model, batch):
        return {"mse": (((model(batch) - batch.y) ** 2).sum().item(), len(batch))}


if "ddp-shards" not in TASKS:
    register_task("ddp-shards")(Shards)


def config(tmp_path, **fields):
    base = dict(model="gru", task="ddp-shards", seq_len=6, steps=6, batch_size=4,
                d_model=8, layers=1, lr=1e-2, warmup=0.3, clip=0.05, eval_every=0, log_every=1,
                checkpoint_every=0, out=str(tmp_path), device="cpu")
    return TrainConfig(**{**base, **fields})


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir):
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in read_metrics(run_dir)
            if "loss" in r]


# --- ranks as torchrun starts them ------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(tmp_path, fn, *args, world=2, need=None, env=None):
    """fn(*args) on every rank of a `world`-process group; each rank's return value, the
    exception it raised, or its exit code if it died. `need`: ranks whose outcome the test
    reads (default: all); once they are done the others are killed."""
    port, box = free_port(), tmp_path / f"ranks-{time.monotonic_ns()}"
    box.mkdir()
    env = {"SEQARENA_DDP_TIMEOUT": "20", **(env or {})}
    ctx = mp.get_context("fork")  # the ranks inherit the imports and this module's task
    procs = [ctx.Process(target=_rank_main, args=(rank, world, port, env, box, fn, args))
             for rank in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for rank in sorted(range(world) if need is None else need):
            procs[rank].join(max(0.0, deadline - time.monotonic()))
            assert procs[rank].exitcode is not None, f"rank {rank} still running after {TIMEOUT_S} s"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
    outcomes = []
    for rank, p in enumerate(procs):
        path = box / f"{rank}.pkl"
        outcomes.append(pickle.loads(path.read_bytes()) if path.exists() else p.exitcode)
    return outcomes


def _rank_main(rank, world, port, env, box, fn, args):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      **env)
    try:
        outcome = fn(*args)
    except Exception as e:
        outcome = e
    (box / f"{rank}.pkl").write_bytes(pickle.dumps(outcome))


def train_rank(cfg, resume=False, fault=None):
    """One rank's training: its final weights and summary (the test reads them from each rank)."""
    Shards.fault = fault or {}
    out = train(cfg, resume)
    return {k: v.clone() for k, v in out.model.state_dict().items()}, out.result


# --- the tests -------------------------------------------------------------------------------

@pytest.fixture
def default_dtype(request):
    saved = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    yield request.param
    torch.set_default_dtype(saved)


# The transformer runs in float64: the key bias of attention has a gradient that is zero in exact
# arithmetic (softmax ignores a constant added to every score), so in float32 Adam turns its
# rounding noise into steps of size lr, different in any two summation orders.
@pytest.mark.timeout(2 * TIMEOUT_S)
@pytest.mark.parametrize("model, default_dtype", [("gru", torch.float32),
                                                  ("transformer", torch.float64)],
                         indirect=["default_dtype"])
def test_two_ranks_with_batch_b_match_one_process_with_batch_2b(tmp_path, model, default_dtype):
    """After k steps of AdamW with warm-up, weight decay and active clipping, 2-rank DDP with
    per-rank batch b holds the parameters of 1 process trained on the 2b-batch of both ranks."""
    initial = build(config(tmp_path, model=model))[1].state_dict()
    one = train(config(tmp_path, model=model, name="one", batch_size=8, threads=1))
    (w0, r0), (w1, _) = run_ranks(tmp_path, train_rank, config(
        tmp_path, model=model, name="two", task_args={"shards": 2}))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # the replicas stay bitwise the same
    reference = one.model.state_dict()
    assert set(w0) == set(reference)
    for k, v in reference.items():
        assert v.dtype == default_dtype
        assert torch.allclose(w0[k], v, rtol=0, atol=1e-5), \
            f"{k}: max |diff| {(w0[k] - v).abs().max():.2e} > 1e-5"
    assert max((v - initial[k]).abs().max() for k, v in reference.items()) > 1e-2  # it trained
    # the logged loss is the whole 2b-batch's, the clipped norm the global one
    for (s1, l1, g1, lr1), (s2, l2, g2, lr2) in zip(losses(tmp_path / "one"),
                                                    losses(tmp_path / "two"), strict=True):
        assert (s1, lr1) == (s2, lr2)
        assert l1 == pytest.approx(l2, rel=1e-5) and g1 == pytest.approx(g2, rel=1e-5)
        assert g1 > 0.05  # so clipping (at 0.05) acted on every step
    summary = read_results(tmp_path / "two" / "summary.json")["results"][0]
    assert summary.world_size == 2 and r0.world_size == 2
    assert summary.threads == max(1, distributed.cores() // 2)
    assert [r["step"] for r in read_metrics(tmp_path / "two")] == [1, 2, 3, 4, 5, 6, 6]


@pytest.mark.timeout(2 * TIMEOUT_S)
def test_a_rank_that_dies_makes_the_other_exit_with_a_clear_error(tmp_path):
    start = time.monotonic()
    first, second = run_ranks(tmp_path, train_rank, config(tmp_path, steps=50),
                              False, {1: (3, "die")})
    assert second == 1  # the dead rank's exit status
    assert isinstance(first, RankLost), first
    message = str(first)
    assert "rank 0 of 2 lost contact with the others" in message and "--resume" in message
    assert "\n" not in message
    assert time.monotonic() - start < 20  # well within the process group's timeout


@pytest.mark.timeout(2 * TIMEOUT_S)
def test_a_rank_that_hangs_makes_the_other_fail_after_the_timeout(tmp_path):
    start = time.monotonic()
    first, _ = run_ranks(tmp_path, train_rank, config(tmp_path, steps=50), False,
                         {1: (3, "hang")}, need=[0], env={"SEQARENA_DDP_TIMEOUT": "3"})
    assert isinstance(first, RankLost), first
    assert "hung for 3 s" in str(first) and "Timed out" in str(first)
    assert 3 <= time.monotonic() - start < 20


@pytest.mark.timeout(3 * TIMEOUT_S)
def test_resume_under_ddp_continues_exactly_like_an_uninterrupted_run(tmp_path):
    """Killed after its checkpoint at step 4 and resumed, a 2-rank run logs the same losses at
    every step as one never stopped; dropout makes each rank's own RNG state matter."""
    cfg = dict(steps=8, checkpoint_every=4, dropout=0.3)
    run_ranks(tmp_path, train_rank, config(tmp_path, name="straight", **cfg))
    stopped = run_ranks(tmp_path, train_rank, config(tmp_path, name="stopped", **cfg), False,
                        {0: (6, "die"), 1: (6, "die")})
    assert stopped == [1, 1]
    assert max(r["step"] for r in read_metrics(tmp_path / "stopped")) == 6
    (w0, _), (w1, _) = run_ranks(tmp_path, train_rank, config(tmp_path, name="stopped", **cfg),
                                 True)
    assert losses(tmp_path / "stopped") == losses(tmp_path / "straight")  # bitwise
    final = load_file(tmp_path / "straight" / "checkpoints" / "step-00000008.safetensors")
    assert all(torch.equal(w0[k], final[k]) and torch.equal(w1[k], final[k]) for k in final)


@pytest.mark.timeout(2 * TIMEOUT_S)
def test_resume_with_another_number_of_processes_is_refused(tmp_path):
    run_ranks(tmp_path, train_rank, config(tmp_path, steps=2))
    with pytest.raises(UserError, match="written by 2 process"):
        train(config(tmp_path, steps=2), resume=True)


def test_one_process_alone_is_rank_0_of_1_and_its_collectives_are_identities():
    ranks = Ranks()
    model = nn.Linear(2, 2)
    x = torch.tensor([1.5, -2.0])
    assert ranks.main and ranks.wrap(model) is model
    assert torch.equal(ranks.mean(x), x) and ranks.from_main(3.5) == 3.5
    assert ranks.gather("a") == ["a"]
    assert ranks.threads() == distributed.cores()
    with distributed.process_group("cpu") as alone:
        assert alone == distributed.ALONE


def collectives():
    with distributed.process_group("cpu") as ranks:
        mean = ranks.mean(torch.tensor([float(ranks.rank + 1)])).item()
        return ranks, mean, ranks.from_main(10.0 + ranks.rank), ranks.gather(ranks.rank * 2)


@pytest.mark.timeout(2 * TIMEOUT_S)
def test_collectives_agree_across_ranks(tmp_path):
    for rank, (ranks, mean, main, gathered) in enumerate(run_ranks(tmp_path, collectives)):
        assert ranks == Ranks(rank, 2, rank, 2) and ranks.threads() == max(1, distributed.cores() // 2)
        assert (mean, main, gathered) == (1.5, 10.0, [0, 2])


def test_rank_seeds_differ_by_rank_and_by_seed():
    seeds = {distributed.rank_seed(s, r) for s in range(3) for r in range(3)}
    assert len(seeds) == 9


def test_bad_timeout_is_a_user_error(monkeypatch):
    monkeypatch.setenv("SEQARENA_DDP_TIMEOUT", "soon")
    with pytest.raises(UserError, match="SEQARENA_DDP_TIMEOUT='soon'"):
        distributed.timeout_s()


# --- the launcher of `seqarena train --nproc` ------------------------------------------------

def exits_on_rank_1(code):
    if int(os.environ["RANK"]) == 1:
        os._exit(code)
    time.sleep(30)  # rank 0 is stopped by the launcher long before this


def raises_user_error_on_rank_1():
    if int(os.environ["RANK"]) == 1:
        raise UserError("the data file is gone")
    time.sleep(30)


@pytest.mark.timeout(2 * TIMEOUT_S)
def test_launcher_turns_a_dead_rank_into_one_line():
    start = time.monotonic()
    with pytest.raises(UserError) as e:
        distributed.launch(2, exits_on_rank_1, 3)
    assert str(e.value) == "rank 1 of 2 exited with status 3; every process stopped"
    with pytest.raises(UserError, match="^the data file is gone$"):
        distributed.launch(2, raises_user_error_on_rank_1)
    assert time.monotonic() - start < TIMEOUT_S


@pytest.mark.timeout(2 * TIMEOUT_S)
def test_train_nproc_2_from_the_command_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "seqarena", "train", "--nproc", "2", "--model", "gru", "--task",
         "adding", "--seq-len", "16", "--steps", "3", "--batch-size", "4", "--d-model", "8",
         "--eval-every", "0", "--log-every", "1", "--out", str(tmp_path), "--name", "run",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert "over 2 processes" in done.stdout and done.stderr == ""
    summary = read_results(tmp_path / "run" / "summary.json")["results"][0]
    assert summary.world_size == 2 and summary.steps == 3
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3, 3]  # rank 0 alone writes
