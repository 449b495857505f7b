"""The training loop: a config in; a run directory, a RunResult and the trained model out.

In the spirit of minGPT's trainer.py: nothing here knows which model or which task it trains.
The task builds the data, the embedding, the head, the loss and the metric; the registry builds
the backbone; this file only runs AdamW over their parameters and writes what happened.

    runs/<name>/config.json      the TrainConfig, enough to rebuild the model (`seqarena generate`)
    runs/<name>/metrics.jsonl    one object per logged step (+ the task's metric when evaluated)
    runs/<name>/summary.json     the RunResult, via seqarena.results.write_results
    runs/<name>/checkpoints/     see seqarena.training.checkpoint

Precision: on CUDA the forward pass and the loss run under bf16 autocast, which lowers matmuls
and attention to bf16 and keeps reductions and losses in float32; weights, gradients and AdamW's
state stay float32. Keeping recurrences and scans in float32 is part of the model contract, not
a special case here: a long product of bf16 gates loses the signal, so a recurrent model turns
autocast off around its recurrence (`torch.autocast(device_type, enabled=False)` and float32
inputs). On CPU everything is float32.

Data parallelism (seqarena.training.distributed): started by torchrun, every process trains the same
model on its own stream of batches (stream = its rank, beside the task's seed) and DDP averages
the gradients, so every rank takes the same step. The loop meets the other ranks through
`self.ranks` at a few points only: the model it calls (`self.forward`), the loss it checks and
logs (the mean over ranks), the decisions all ranks must share (time budget, early stopping:
rank 0's), each rank's RNG state in a checkpoint; and rank 0 alone writes files (`self.main`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqarena import runtime
from seqarena.training import checkpoint, distributed
from seqarena.errors import UserError
from seqarena.fileio import atomic_write_json, atomic_write_text
from seqarena.config import RESUMABLE_CHANGES, TrainConfig, normalized
from seqarena.memory import PeakMemory
from seqarena.results import RunResult, write_results


# --- building -----------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def build(cfg: TrainConfig, run_dir: str | Path | None = None):
    """(task, wrapped model) of a config: the same config always builds the same initial weights.
    With run_dir, the task first reads back what it saved there (e.g. its tokenizer)."""
    from seqarena.models import build_model
    from seqarena.tasks import make_task

    seed_everything(cfg.seed)
    task = make_task(cfg.task, seq_len=cfg.seq_len, seed=cfg.seed, **cfg.task_args)
    if run_dir is not None:
        task.restore(Path(run_dir))
    backbone = build_model(cfg.model, d_model=cfg.d_model, layers=cfg.layers, dropout=cfg.dropout,
                           **cfg.model_args)
    longest = backbone.longest_input()
    if longest is not None and task.config.seq_len > longest:  # fail before training, not after
        raise UserError(f"task {cfg.task!r} holds sequences of up to {task.config.seq_len} "
                        f"tokens, longer than model {cfg.model!r} accepts ({longest}, its "
                        f"learned positions); set max_len >= {task.config.seq_len}, or positions "
                        f"that need no table ('sinusoidal', 'rope', 'alibi')")
    return task, task.wrap(backbone)


def built_config(cfg: TrainConfig, task) -> TrainConfig:
    """cfg with model_args and task_args as the built model and task hold them."""
    from seqarena.models import make_config

    model_config = make_config(cfg.model, d_model=cfg.d_model, layers=cfg.layers,
                               dropout=cfg.dropout, **cfg.model_args)
    return normalized(cfg, model_config, task.config)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple's MPS backend is not available here; use --device cpu")
    return torch.device(name)


def set_threads(threads: int, ranks: distributed.Ranks = distributed.ALONE) -> int:
    """Set torch's CPU threads explicitly (0: this node's cores shared among its processes)."""
    n = threads or ranks.threads()
    torch.set_num_threads(n)
    return n


def lr_factor(progress: float, warmup: float, min_lr: float) -> float:
    """Linear warm-up to 1 over `warmup` of the run, then a cosine down to `min_lr` at the end."""
    if progress < warmup:
        return progress / warmup
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return min_lr + (1 - min_lr) * 0.5 * (1 + math.cos(math.pi * t))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; like nanoGPT, matrices decay and vectors (biases, norm gains) do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def _tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: "
                        "pip install seqarena[tensorboard]") from None
    return SummaryWriter(log_dir=str(run_dir))


# --- the loop -----------------------------------------------------------------------------------

@dataclass
class TrainOutcome:
    result: RunResult
    model: nn.Module  # the wrapped model (task embedding + backbone + head), trained
    task: Any
    run_dir: Path
    message: str = ""  # why the run stopped, when it was not by finishing its steps


class Trainer:
    """Runs one config to its end; `run()` returns a TrainOutcome."""

    def __init__(self, cfg: TrainConfig, resume: bool = False,
                 ranks: distributed.Ranks = distributed.ALONE):
        self.resume = resume
        self.ranks, self.rank, self.world, self.main = ranks, ranks.rank, ranks.world, ranks.main
        self.device = ranks.place(resolve_device(cfg.device))
        self.threads = set_threads(cfg.threads, ranks)
        self.task, self.model = build(cfg, cfg.run_dir if resume else None)
        self.cfg = cfg = built_config(cfg, self.task)
        self.model.to(self.device)
        self.forward = ranks.wrap(self.model)  # what training calls: DDP around the model, or it
        if self.world > 1:  # every rank starts from the same weights, then draws its own dropout
            seed_everything(distributed.rank_seed(cfg.seed, self.rank))
        self.run_dir = cfg.run_dir
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.optimizer = make_optimizer(self.model, cfg)
        # counters a checkpoint carries so that a resumed run continues exactly
        self.step = 0  # optimizer steps done
        self.batches_drawn = 0  # position in the training stream
        self.train_s = 0.0  # seconds inside training steps (no eval, no saving)
        self.timed_tokens, self.timed_s = 0, 0.0  # for tokens/s, without each process's first step
        self.window_tokens = 0  # tokens trained on since the last logged record
        self.wall_before = 0.0  # wall seconds of the earlier part of a resumed run
        self.best: float | None = None  # best validation metric so far
        self.bad_evals = 0  # evaluations since it last improved
        self.history: list[dict[str, Any]] = []  # every record logged, for the results file
        self.eval_examples: list[dict[str, Any]] = []  # per-example val sums at each evaluation
        self.outputs: tuple[list, list] | None = None  # a corpus task's (hypotheses, references)

    # A checkpoint holds everything above, the optimizer and every RNG state of every rank.
    def training_state(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.cfg), "optimizer": self.optimizer.state_dict(),
                "world_size": self.world, "rng": self.ranks.gather(checkpoint.rng_state()),
                "data": {"batches_drawn": self.batches_drawn},
                "trainer": {"train_s": self.train_s, "timed_tokens": self.timed_tokens,
                            "timed_s": self.timed_s, "wall_s": self.wall_s(),
                            "best": self.best, "bad_evals": self.bad_evals,
                            "eval_examples": self.eval_examples}}

    def save(self) -> None:
        state = self.training_state()  # on every rank: it gathers each rank's RNG state
        if self.main:
            checkpoint.save(self.ckpt_dir, self.step, self.model, state,
                            keep=self.cfg.keep_checkpoints)
        self.saved_step = self.step

    def restore(self) -> dict[str, Any]:
        """Load the newest checkpoint after checking it was written by this same config."""
        ckpt = checkpoint.latest(self.ckpt_dir)
        if ckpt is None:
            raise UserError(f"{self.run_dir}: no checkpoint to resume from; drop --resume to "
                            f"start this run")
        state = checkpoint.load_state(ckpt.state)
        mine = dataclasses.asdict(self.cfg)
        theirs = state.get("config", {})
        for key in sorted(set(mine) | set(theirs)):
            if key not in RESUMABLE_CHANGES and mine.get(key) != theirs.get(key):
                raise UserError(f"{ckpt.state}: written with {key}={theirs.get(key)!r}, this run "
                                f"has {key}={mine.get(key)!r}; resume with the same settings")
        if state.get("world_size", 1) != self.world:
            raise UserError(f"{ckpt.state}: written by {state.get('world_size', 1)} process(es), "
                            f"this run has {self.world}; resume with as many (--nproc, or "
                            f"torchrun's --nnodes and --nproc-per-node)")
        checkpoint.load_weights(self.model, ckpt.weights)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError) as e:
            raise UserError(f"{ckpt.state}: optimizer state does not fit the model ({e})") from None
        self.step = state["step"]
        self.batches_drawn = state["data"]["batches_drawn"]
        t = state["trainer"]
        self.train_s, self.timed_tokens, self.timed_s = t["train_s"], t["timed_tokens"], t["timed_s"]
        self.wall_before, self.best, self.bad_evals = t["wall_s"], t["best"], t["bad_evals"]
        self.eval_examples = t.get("eval_examples", [])
        return state

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    def progress(self) -> float:
        """How far through its budget the run is after the step being taken: drives the lr."""
        by_steps = (self.step + 1) / self.cfg.steps
        if self.cfg.budget_seconds:
            return max(by_steps, self.train_s / self.cfg.budget_seconds)
        return by_steps

    def evaluate(self, split: str) -> dict[str, Any]:
        """The split's metrics and `<split>_<metric>_ci`, its 95 % interval over the examples."""
        from seqarena.stats import example_interval

        self.model.eval()
        with torch.no_grad(), self.autocast():
            try:
                self.scores = self.task.evaluate_examples(self.model, split, self.cfg.batch_size)
                metrics = {**self.task.companion_metrics(self.model, self.cfg.batch_size),
                           **self.scores.metrics()}
            except NotImplementedError:  # a corpus-scored task: no per-example interval
                self.scores = None
                metrics, self.outputs = self.task.evaluate_outputs(self.model, split,
                                                                   self.cfg.batch_size)
        self.model.train()
        ci = example_interval(self.scores, self.task.metric_name) if self.scores else None
        return {**{f"{split}_{k}": float(v) for k, v in metrics.items()},
                f"{split}_{self.task.metric_name}_ci": list(ci) if ci else None}

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.device.type == "cuda")

    def log(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        self.history.append(record)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def prepare_run_dir(self) -> None:
        """Create the run directory; never overwrite another run's files."""
        metrics = self.run_dir / "metrics.jsonl"
        if self.resume:
            # steps after the checkpoint are redone, so their lines go
            lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.exists() else []
            kept = [ln for ln in lines if _line_step(ln) is not None and _line_step(ln) <= self.step]
            atomic_write_text(metrics, "".join(ln + "\n" for ln in kept))
            self.history = [json.loads(ln) for ln in kept]
        elif metrics.exists() or checkpoint.latest(self.ckpt_dir) is not None:
            raise UserError(f"{self.run_dir} already holds a run; add --resume to continue it, "
                            f"or choose another --name or --out")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / "config.json", dataclasses.asdict(self.cfg))
        self.task.save(self.run_dir)

    def run(self) -> TrainOutcome:
        cfg = self.cfg
        self.writer = _tensorboard_writer(self.run_dir) if cfg.tensorboard and self.main else None
        state = self.restore() if self.resume else None
        if self.main:
            self.prepare_run_dir()
        self.t_start = time.perf_counter()
        self.saved_step = self.step if state else -1
        batches = self.task.batches("train", cfg.batch_size, seed=self.rank)
        # Replaying the stream up to the checkpoint is the one way to reach the same position in
        # any task's generator; the RNGs are restored after it, so the replay leaves no trace.
        for _ in islice(batches, self.batches_drawn):
            pass
        if state:  # one RNG state per rank (a checkpoint older than that holds one state)
            rng = state["rng"]
            checkpoint.set_rng_state(rng[self.rank] if isinstance(rng, list) else rng)
        bar = _progress_bar(cfg, self.step, show=self.main)
        try:
            status, stopped = self.loop(batches, bar)
            if status == "ok" and self.saved_step != self.step:
                self.save()
            return self.finish(status, stopped, self.step_memory())
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()

    def loop(self, batches, bar) -> tuple[str, str]:
        """Train until the steps or the budget run out; (status, why it stopped early)."""
        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.model.train()
        first_step, since = True, (self.step, self.train_s)
        exit_at = _test_exit_at()
        while self.step < cfg.steps:
            if cfg.budget_seconds and self.out_of_time():
                return "ok", f"stopped by the time budget of {cfg.budget_seconds:g} s"
            batch = next(batches).to(self.device)
            self.batches_drawn += 1
            t0 = time.perf_counter()
            lr = cfg.lr * lr_factor(self.progress(), cfg.warmup, cfg.min_lr)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with self.autocast():
                loss = self.task.loss(self.forward(batch), batch)
            mean_loss = self.ranks.mean(loss)  # of all ranks' batches, so all ranks stop together
            if not torch.isfinite(mean_loss):
                return "nan", f"loss became {mean_loss.item()} at step {self.step + 1}"
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(params, cfg.clip or math.inf)
            if not torch.isfinite(grad_norm):
                return "nan", f"gradient norm became {grad_norm.item()} at step {self.step + 1}"
            self.optimizer.step()
            loss_value = mean_loss.item()  # also waits for the device: honest timing
            dt = time.perf_counter() - t0
            self.step += 1
            self.train_s += dt
            if exit_at and self.step == exit_at[0]:
                _test_exit(exit_at[1])
            tokens_in_batch = batch.x.shape[0] * batch.x.shape[1] * self.world  # a task may
            self.window_tokens += tokens_in_batch  # draw shorter sequences than seq_len
            if not first_step:  # the first step pays for allocation and kernel selection
                self.timed_tokens += tokens_in_batch
                self.timed_s += dt
            first_step = False
            bar.update(1)

            record: dict[str, Any] = {}
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                tokens, self.window_tokens = self.window_tokens, 0
                record = {"step": self.step, "loss": loss_value, "lr": lr,
                          "grad_norm": grad_norm.item(),
                          "tokens_per_s": tokens / max(self.train_s - since[1], 1e-9),
                          "train_s": self.train_s, "wall_s": self.wall_s()}
                since = (self.step, self.train_s)
                bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)
            stop, evaluated = False, bool(cfg.eval_every) and self.step % cfg.eval_every == 0
            if evaluated:
                record = {"step": self.step, "train_s": self.train_s, **record,
                          **self.evaluate("val")}
                if self.scores is not None:
                    self.eval_examples.append({"step": self.step, "train_s": self.train_s,
                                               **example_sums(self.scores)})
                stop = self.early_stop(record)
            if record:
                self.log(record)
            if evaluated and self.main:  # what a crash would leave for the report
                self.write_summary(self.result("running", "", {}, 0))
            if stop:
                return "ok", f"early stopping: no better validation {self.task.metric_name} " \
                             f"in {cfg.patience} evaluations"
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save()
        return "ok", ""

    def step_memory(self) -> int:
        """Peak memory of one forward and backward pass (a held-out batch of the training shape)
        above what the weights and the optimizer hold. Measured apart from the timed steps: on
        CPU, PeakMemory samples from a thread, which would slow the steps it watches."""
        batch = next(iter(self.task.batches("val", self.cfg.batch_size))).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        _release_freed_memory()
        with PeakMemory(self.device) as mem:
            with self.autocast():
                loss = self.task.loss(self.model(batch), batch)
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return mem.peak_bytes

    def early_stop(self, record: dict[str, Any]) -> bool:
        value = record[f"val_{self.task.metric_name}"]
        sign = 1 if self.task.higher_is_better else -1
        if self.best is None or sign * (value - self.best) > 0:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        return bool(self.ranks.from_main(bool(self.cfg.patience) and
                                         self.bad_evals >= self.cfg.patience))

    def out_of_time(self) -> bool:
        """Whether the time budget is spent, by rank 0's clock: so all ranks stop at the same
        step, having used the same learning rates (which follow the clock)."""
        self.train_s = self.ranks.from_main(self.train_s)
        return self.train_s >= self.cfg.budget_seconds

    def finish(self, status: str, stopped: str, peak_mem: int) -> TrainOutcome:
        """Evaluate on the held-out split, write summary.json and return the outcome."""
        cfg, task = self.cfg, self.task
        split = cfg.final_split if cfg.final_split in task.splits else "val"
        final = self.evaluate(split) if status == "ok" else {}
        if final and self.main:
            self.log({"step": self.step, **final})
        if status == "nan":
            last = checkpoint.latest(self.ckpt_dir)
            stopped += (f"; the last good checkpoint is step {last.step} in {self.ckpt_dir}"
                        if last else "; no checkpoint was saved before it") + \
                (" (try a lower --lr)" if cfg.clip else " (try a lower --lr, or --clip 1)")
        result = self.result(status, stopped, final, peak_mem)
        if self.main:
            self.write_summary(result)
        return TrainOutcome(result, self.model, task, self.run_dir, stopped)

    def result(self, status: str, stopped: str, final: dict[str, float],
               peak_mem: int) -> RunResult:
        """The RunResult of the run so far ("running" while it trains)."""
        from seqarena.models import count_params

        cfg, task = self.cfg, self.task
        split = cfg.final_split if cfg.final_split in task.splits else "val"
        rate, spread = tokens_per_s(self.history, self.timed_tokens, self.timed_s)
        scored = bool(final) and self.scores is not None
        outputs = self.outputs if final else None
        return RunResult(
            model=cfg.label or cfg.model, task=cfg.task, seq_len=cfg.seq_len,
            params=count_params(self.model), metric_name=task.metric_name,
            metric=final.get(f"{split}_{task.metric_name}"),
            higher_is_better=task.higher_is_better,
            train_tokens_per_s=rate, train_tokens_per_s_spread=spread, lr_tuned=cfg.lr_tuned,
            peak_mem_bytes=int(peak_mem), wall_s=self.wall_s(), steps=self.step,
            seed=cfg.seed, status=status, family=self.model.backbone.family, split=split,
            metric_ci=final.get(f"{split}_{task.metric_name}_ci"), lr=cfg.lr,
            metrics=final, best_val=self.best, baselines=task.baselines(), train_s=self.train_s,
            stopped=stopped, device=str(self.device), threads=self.threads,
            world_size=self.world, d_model=cfg.d_model, layers=cfg.layers,
            model_args=cfg.model_args, task_version=task.version, run_dir=str(self.run_dir),
            truncated=task.truncated(),
            history=list(self.history), examples=example_sums(self.scores) if scored else None,
            example_lengths=lengths_of(task, split) if scored else None,
            eval_examples=list(self.eval_examples),
            outputs=outputs[0] if outputs else None, references=outputs[1] if outputs else None)

    def write_summary(self, result: RunResult) -> None:
        """summary.json: the final result, or the one so far, so a crashed run still shows."""
        write_results(self.run_dir / "summary.json", "train", [result])


def example_sums(scores) -> dict[str, dict[str, list[float]]]:
    """ExampleScores as plain lists, for the results file."""
    return {"totals": {k: v.tolist() for k, v in scores.totals.items()},
            "counts": {k: v.tolist() for k, v in scores.counts.items()}}


def lengths_of(task, split: str) -> list[int] | None:
    """Each held-out example's input length, for tasks tested at lengths they never trained on."""
    lengths = task.example_lengths(split)
    return None if lengths is None else [int(n) for n in lengths]


def window_rates(history: list[dict[str, Any]]) -> list[float]:
    """The logged windows' training tokens/s but the first, which pays for allocation and
    kernel selection."""
    return [h["tokens_per_s"] for h in history if "tokens_per_s" in h][1:]


def tokens_per_s(history: list[dict[str, Any]], timed_tokens: int,
                 timed_s: float) -> tuple[float, list[float] | None]:
    """Training tokens/s and its 25-75 % spread, both from the logged windows, the first window
    (which pays for allocation and kernel selection) left out; with no window after it, the
    timed steps' mean (every step but the first) and no spread."""
    from seqarena.stats import spread

    rates = window_rates(history)
    if not rates:
        return (timed_tokens / timed_s if timed_s else 0.0), None
    found = spread(rates)
    return statistics.median(rates), list(found) if found else None


def _test_exit_at() -> tuple[int, Path] | None:
    """Test-only: SEQARENA_TEST_EXIT_AT="STEP:MARKER" makes the first run that reaches STEP while
    MARKER does not exist create MARKER and end its process, as a dying worker would. Unset: None,
    read once per run."""
    value = os.environ.get("SEQARENA_TEST_EXIT_AT")
    if not value:
        return None
    step, marker = value.split(":", 1)
    return int(step), Path(marker)


def _test_exit(marker: Path) -> None:
    """End this process at once (no cleanup, no exception), the first time only."""
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return
    os._exit(1)


def train(cfg: TrainConfig, resume: bool = False) -> TrainOutcome:
    """Train `cfg` into cfg.run_dir (continuing its newest checkpoint when resume is True).

    Started by torchrun as one of several processes, it trains data-parallel with the others."""
    runtime.setup()  # every process that trains, however started (a pool, Ray, a library call)
    with distributed.process_group(resolve_device(cfg.device).type) as ranks:
        return Trainer(cfg, resume, ranks).run()


def train_processes(cfg: TrainConfig, nproc: int, resume: bool = False) -> RunResult:
    """Train `cfg` data-parallel in `nproc` processes on this machine (`seqarena train --nproc`),
    as `torchrun --standalone --nproc-per-node nproc -m seqarena train` does; rank 0's result."""
    return distributed.launch(nproc, _train_rank, dataclasses.asdict(cfg), resume)


def _train_rank(fields: dict[str, Any], resume: bool) -> RunResult:
    runtime.setup()  # a spawned rank starts with torch's defaults
    return train(TrainConfig(**fields), resume).result


def _release_freed_memory() -> None:
    """Hand memory that earlier runs in this process freed back to the OS. PeakMemory measures
    CPU memory as resident size above the level at entry; without this, a run would reuse the
    heap an earlier run left behind and its peak would read as zero."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            pass


def _line_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _progress_bar(cfg: TrainConfig, start: int, show: bool):
    from tqdm import tqdm

    total = None if cfg.budget_seconds else cfg.steps  # a time budget ends runs, not steps
    return tqdm(total=total, initial=start, desc=cfg.run_name, leave=False,
                disable=not (show and sys.stdout.isatty()), dynamic_ncols=True)
