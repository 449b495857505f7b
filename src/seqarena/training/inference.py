"""Using a trained run: load it from its directory, generate from it.

A run directory holds everything needed (config.json and the newest checkpoint), so `generate`,
`analyze attention` and the report rebuild the model exactly as it was trained.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqarena.training import checkpoint
from seqarena.config import TrainConfig, read_run_config
from seqarena.errors import UserError


@dataclass
class LoadedRun:
    """A trained run, rebuilt: its config, its task and the model holding its newest weights."""

    cfg: TrainConfig
    task: Any
    model: nn.Module  # in eval mode
    step: int  # the optimizer step of the checkpoint loaded


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> LoadedRun:
    """The run in `run_dir`, its model holding the newest checkpoint's weights."""
    from seqarena.training.train import build, resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    cfg = read_run_config(run_dir)
    ckpt = checkpoint.latest(run_dir / "checkpoints")
    if ckpt is None:
        raise UserError(f"{run_dir}: no checkpoint in {run_dir / 'checkpoints'}; "
                        "train the run to its end (or to a --checkpoint-every step) first")
    task, model = build(cfg, run_dir)
    model.to(resolve_device(device))
    checkpoint.load_weights(model, ckpt.weights)
    return LoadedRun(cfg, task, model.eval(), ckpt.step)


def generate(run_dir: str | os.PathLike, prompt: str, max_new_tokens: int = 200,
             temperature: float = 1.0, seed: int = 0, device: str = "cpu") -> str:
    """Sample a continuation of `prompt` from a trained run (recurrent state or KV cache)."""
    run = load_run(run_dir, device)
    if not hasattr(run.task, "generate"):
        raise UserError(f"task {run.cfg.task!r} does not generate text; generate samples from "
                        f"runs of a language-model task such as text-lm")
    with torch.no_grad():
        return run.task.generate(run.model, prompt, max_new_tokens, temperature, seed)
