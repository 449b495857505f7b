"""Looking inside the models: gradient flow through time, attention maps, hidden-state paths.

Gradient flow (Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013, "On the
difficulty of training recurrent neural networks"): the loss reaches an input x_t that sits
k positions before the output through a product of k Jacobians, so in an Elman RNN its gradient
shrinks (or grows) geometrically with k. Gates (LSTM, GRU) and attention (a path of length one
from every position) are the two answers; gradient clipping is the standard guard against the
growing case. `gradient_flow` measures ‖∂loss/∂x_t‖ against k for each model at initialisation
and after a short training, with and without clipping.

Attention maps: the softmax weights of every layer and head of a trained transformer on one
sample, recorded from the manual attention path (seqarena.models.attention.record_attention).
For a recurrent model, the hidden state h_t on the same sample: the path of h_t through its first
two principal components, and every unit over time.

Both write a results file (seqarena.results: kind "gradients" with GradientResult rows, kind
"attention" with AttentionMap rows and the hidden-state paths beside them) and its chart; the
report reads the same file.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqarena.config import check_fields, model_variant
from seqarena.errors import ConfigError, UserError
from seqarena.results import AttentionMap, GradientResult, write_results

# B batch, L length, D model width, H heads, S key length

GRADIENT_MODELS = ("rnn", "lstm", "gru", "mingru", "transformer")


@dataclass(frozen=True)
class GradientConfig:
    """What `seqarena analyze gradients` measures, and on what."""

    models: tuple[str, ...] = GRADIENT_MODELS  # registered model names, or variants such as
    #                                          "rnn@spectral_radius=1.2;nonlinearity=identity"
    task: str = "adding"  # a task with one output per sequence, read at the last position
    seq_len: int = 128  # long enough for an Elman RNN's gradient to fade over it
    steps: int = 200  # training steps before the "trained" measurement
    batch_size: int = 32  # sequences per training step, and in the measured batch
    d_model: int = 32  # width D; small, so the default run takes about a minute on 2 cores
    layers: int = 1  # stacked layers
    lr: float = 1e-2  # high enough that an unclipped RNN can blow up, which is the point
    clip: float = 1.0  # the gradient-norm threshold of the clipped run
    seed: int = 0  # weights, data and the measured batch
    threads: int = 1  # CPU threads; models this small gain nothing from more, lose on a busy CPU

    def __post_init__(self):
        check_fields(self, positive={"seq_len", "steps", "batch_size", "d_model", "layers",
                                     "threads", "lr", "clip"})
        if not self.models:
            raise ConfigError("models: name at least one model")


def input_gradient_norms(model: nn.Module, task, batch) -> np.ndarray:
    """‖∂loss/∂x_t‖ per position t, averaged over the batch: (L,). x_t is the embedded input."""
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["x"] = output

    handle = model.embedding.register_forward_hook(keep)
    try:
        model.zero_grad(set_to_none=True)
        # The task's loss is a batch mean; times B it is the per-example gradient's scale.
        loss = task.loss(model(batch), batch) * len(batch)
        loss.backward()
    finally:
        handle.remove()
    grad = captured["x"].grad  # (B, L, D)
    model.zero_grad(set_to_none=True)
    return grad.norm(dim=-1).mean(dim=0).double().numpy()  # (L,)


def per_step_rate(distance: list[int], norms: np.ndarray) -> float | None:
    """The geometric rate r of ‖∂loss/∂x_t‖ ≈ C r^d over the distance d to the output: exp of the
    least-squares slope of log-norm against d (d >= 1: the output's own input is a special case).
    r > 1: gradients grow (explode) with distance; r < 1: they vanish."""
    d = np.asarray(distance, dtype=float)
    norms = np.asarray(norms, dtype=float)
    keep = (d >= 1) & np.isfinite(norms) & (norms > 0)
    if keep.sum() < 2:
        return None
    slope = np.polyfit(d[keep], np.log(norms[keep]), 1)[0]
    return float(np.exp(slope))


def gradient_flow(cfg: GradientConfig, out: str | Path, command: list[str] | None = None,
                  progress=None) -> Path:
    """Measure every model under each condition; write gradients.json and return its path."""
    from seqarena.models import MODELS
    from seqarena.tasks import make_task
    from seqarena.config import TrainConfig
    from seqarena.training.train import build, train

    for name in cfg.models:
        MODELS.get(model_variant(name)[0])  # an unknown name fails here, before any training
    task = make_task(cfg.task, seq_len=cfg.seq_len, seed=cfg.seed)
    if task.head_kind not in ("classify", "regress"):
        raise UserError(f"task {cfg.task!r} predicts at every position; gradient flow needs one "
                        "output per sequence (e.g. adding, listops, digits-seq)")
    probe = next(iter(task.batches("val", cfg.batch_size)))
    distance = list(range(cfg.seq_len - 1, -1, -1))  # x_t sits L-1-t positions before the output
    conditions = [("at initialisation", None), ("trained, no clipping", 0.0),
                  (f"trained, clipped at {cfg.clip:g}", cfg.clip)]
    results = []
    with tempfile.TemporaryDirectory(prefix="seqarena-gradients-") as runs:
        for name in cfg.models:
            for condition, clip in conditions:
                if progress:
                    progress(f"{name}: {condition}")
                base, fixed = model_variant(name)
                train_cfg = TrainConfig(model=base, model_args=fixed, label=name,
                                        task=cfg.task, seq_len=cfg.seq_len,
                                        steps=cfg.steps, batch_size=cfg.batch_size,
                                        d_model=cfg.d_model, layers=cfg.layers, lr=cfg.lr,
                                        clip=clip or 0.0, seed=cfg.seed, eval_every=0,
                                        log_every=1, checkpoint_every=0, keep_checkpoints=1,
                                        out=runs, name=f"m{len(results)}-clip{clip}", device="cpu",
                                        threads=cfg.threads)
                status, stopped, trace = "ok", "", {}
                if clip is None:
                    task_, model = build(train_cfg)
                else:
                    outcome = train(train_cfg)
                    task_, model = outcome.task, outcome.model
                    status, stopped = outcome.result.status, outcome.message
                    trace = _training_trace(outcome.result.history)
                norms = input_gradient_norms(model, task_, probe)
                results.append(GradientResult(
                    model=name, condition=condition, trained=clip is not None, clip=clip or None,
                    status=status, distance=distance, stopped=stopped, train=trace,
                    grad_norm=[float(v) if math.isfinite(v) else None for v in norms],
                    family=model.backbone.family, rate=per_step_rate(distance, norms)))
    path = Path(out) / "gradients.json"
    write_results(path, "gradients", results,
                  command=command if command is not None else _gradients_command(cfg, out),
                  **{k: list(v) if isinstance(v, tuple) else v
                     for k, v in dataclasses.asdict(cfg).items()})
    return path


def _gradients_command(cfg: GradientConfig, out: str | Path) -> list[str]:
    """The `seqarena analyze gradients` line that reproduces this measurement."""
    flags = ["--models", ",".join(cfg.models)]
    for f in dataclasses.fields(cfg):
        if f.name != "models":
            flags += [f"--{f.name.replace('_', '-')}", str(getattr(cfg, f.name))]
    return ["seqarena", "analyze", "gradients", *flags, "--out", str(out)]


def _training_trace(history: list[dict[str, Any]]) -> dict[str, list]:
    """Step, loss and pre-clipping gradient norm of every logged step of a run."""
    trace = {"step": [], "loss": [], "grad_norm": []}
    for row in history:
        if "loss" in row:
            for k in trace:
                v = row.get(k)
                trace[k].append(v if isinstance(v, (int, float)) and math.isfinite(v) else None)
    return trace


# --- attention maps and hidden states -------------------------------------------------------

def attention_maps(run_dir: str | Path, out: str | Path | None = None, sample: int = 0,
                   max_positions: int = 96, command: list[str] | None = None) -> Path:
    """Write attention.json (+ chart) for one held-out sample of a trained run; return its path."""
    from seqarena.models.attention import record_attention

    run_dir = Path(run_dir)
    from seqarena.training.inference import load_run

    run = load_run(run_dir)
    cfg, task, model, step = run.cfg, run.task, run.model, run.step
    split = "test" if "test" in task.splits else "val"
    batch = _nth_example(task, split, sample)
    command = command if command is not None else [
        "seqarena", "analyze", "attention", str(run_dir), "--sample", str(sample),
        "--max-positions", str(max_positions), *(["--out", str(out)] if out is not None else [])]
    maps: list[AttentionMap] = []
    hidden: list[dict[str, Any]] = []
    states = {}

    def keep(module, inputs, output):
        states["h"] = output

    handle = model.backbone.register_forward_hook(keep)
    try:
        with torch.no_grad(), record_attention(model) as recorded_maps:
            model(batch)
    finally:
        handle.remove()
    P = max_positions
    for layer, (name, recorded) in enumerate((k, v) for k, v in recorded_maps.items() if v):
        weights = recorded[0][0]  # (H, L, S) of the one example
        for head in range(weights.shape[0]):
            maps.append(AttentionMap(layer, head, name, _rounded(weights[head, :P, :P])))
    h = states.get("h")
    if not maps and isinstance(h, torch.Tensor) and h.dim() == 3:
        hidden.append(_trajectory(h[0, :P].double().numpy(), layer=cfg.layers - 1))
    if not maps and not hidden:
        raise UserError(f"{run_dir}: model {cfg.model!r} exposes neither attention weights nor a "
                        "(B, L, D) hidden state to analyse")
    path = (Path(out) if out is not None else run_dir / "analysis") / "attention.json"
    write_results(path, "attention", maps, command=command, run=run_dir.name,
                  run_dir=str(run_dir), model=cfg.model, family=model.backbone.family,
                  task=cfg.task, seq_len=cfg.seq_len, step=step, split=split, sample=sample,
                  hidden=hidden, positions_shown=min(P, cfg.seq_len))
    return path


def _nth_example(task, split: str, n: int):
    seen = 0
    for batch in task.batches(split, 64):
        if n < seen + len(batch):
            i = n - seen
            return batch.select(slice(i, i + 1))
        seen += len(batch)
    raise UserError(f"--sample {n}: the {split} split has only {seen} examples")


def _trajectory(states: np.ndarray, layer: int) -> dict[str, Any]:
    """h_t (L, D) and its projection on the first two principal components (PCA by SVD)."""
    centred = states - states.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    pca = centred @ vt[:2].T  # (L, 2)
    variance = s**2 / max(float((s**2).sum()), 1e-30)
    return {"layer": layer, "states": _rounded(states), "pca": _rounded(pca),
            "explained": [float(v) for v in variance[:2]]}


def _rounded(a) -> list:
    """A tensor or array as nested lists of floats with 5 significant digits: small JSON."""
    a = a.detach().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, float)
    return np.vectorize(lambda v: float(f"{v:.5g}"))(a).tolist() if a.size else a.tolist()
