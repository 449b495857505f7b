"""`seqarena compare`: several models trained on one task under one budget, side by side.

Everything but the model is held equal: the task and its data, the sequence lengths, the steps
(or seconds) of training, the batch, the optimizer and its schedule, the seeds, the threads.
The models themselves are made equal in size: each gets the width (the Transformer: its
feed-forward width d_ff) at which its parameter count comes closest to a common target (by
default the largest model's count at --d-model), so a difference in the metric is a difference
of architecture, not of capacity.

    runs/compare-<time>/<model>-L<seq_len>-s<seed>/   one ordinary run directory per run
    runs/compare-<time>/summary.json                  every RunResult, kind "compare"
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from seqarena.errors import ConfigError, UserError
from seqarena.report import write_report
from seqarena.results import RunResult, write_results
from seqarena.tasks import make_task
from seqarena.config import TrainConfig, config_from
from seqarena.train import resolve_device, set_threads, train

DEFAULT_MODELS = ("rnn", "lstm", "gru", "mingru", "transformer")
# The default budget: 600 steps, or 40 s of training if a run gets there first. On 2 CPU cores
# the 10 runs of the default comparison take about 3 minutes (3:16 measured with the machine
# busy with other work), and the cap keeps them under 8 even when a slow kernel or a busier
# machine would stretch them; the table shows the steps each run made.
# One thread: these models launch thousands of tiny kernels per step, and with two OpenMP
# threads on a 2-core machine every kernel waits at a barrier for the other core; with any
# other process running we measured steps 5-20x slower than with one thread.
DEFAULT_TRAIN = TrainConfig(task="adding", steps=600, budget_seconds=40.0, batch_size=32,
                            d_model=64, lr=3e-3, eval_every=200, checkpoint_every=0,
                            keep_checkpoints=1, threads=1)
UNBOUNDED_STEPS = 10**9  # the steps of a run that only a time budget ends
TOLERANCE = 0.10  # parameter counts must land within 10 % of the target


def run_dir_name(model: str, seq_len: int, seed: int) -> str:
    """<model>-L<seq_len>-s<seed> as a plain directory name for any model name: a plug-in's
    `package.module:factory` becomes `package.module+factory` plus a short hash of the name
    (whenever a character had to change), so two models never share a directory."""
    safe = re.sub(r"[^\w.+=-]", "+", model)
    if safe != model:
        safe = ("" if re.match(r"\w", safe) else "plugin") + safe + "." + \
            hashlib.sha1(model.encode()).hexdigest()[:6]
    return f"{safe}-L{seq_len}-s{seed}"


@dataclass(frozen=True)
class CompareConfig:
    """What varies across the runs (models, lengths, seeds) and what is held equal (`train`)."""

    models: tuple[str, ...] = DEFAULT_MODELS  # the contenders, each sized to `params`
    seq_lens: tuple[int, ...] = (50, 200)  # a short and a long sequence length
    seeds: tuple[int, ...] = (0,)  # several seeds: the table shows mean and std
    params: int = 0  # parameter target; 0: the largest of the models' counts at train.d_model
    out: str = ""  # the compare directory; "": runs/compare-<date>-<time>
    train: TrainConfig = DEFAULT_TRAIN  # the settings every run shares

    def __post_init__(self):
        for name in ("models", "seq_lens", "seeds"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or not values:
                raise ConfigError(f"{name} must be a non-empty list, got {values!r}")
            if len(set(values)) != len(values):
                raise ConfigError(f"{name} lists a value twice: {values!r}")
        if any(not isinstance(v, int) or v <= 0 for v in self.seq_lens):
            raise ConfigError(f"seq_lens must be positive integers, got {self.seq_lens!r}")
        if not isinstance(self.params, int) or self.params < 0:
            raise ConfigError(f"params must be a non-negative integer, got {self.params!r}")


_OWN = {f.name for f in dataclasses.fields(CompareConfig)} - {"train"}
_PER_RUN = {"model": "models", "seq_len": "seq_lens", "seed": "seeds", "name": "out"}


def compare_config_from(*layers: dict[str, Any], where: str = "config") -> CompareConfig:
    """A CompareConfig from dicts (TOML, flags) applied in order; training keys go to `train`.
    The budget is steps or seconds: giving only one of them drops the default of the other."""
    own: dict[str, Any] = {}
    training: list[dict[str, Any]] = [dataclasses.asdict(DEFAULT_TRAIN)]
    given = set().union(*layers)
    if "steps" in given and "budget_seconds" not in given:
        training.append({"budget_seconds": 0.0})
    if "budget_seconds" in given and "steps" not in given:
        training.append({"steps": UNBOUNDED_STEPS})
    for layer in layers:
        clash = sorted(set(layer) & set(_PER_RUN))
        if clash:
            raise ConfigError(f"{where}: {clash[0]!r} varies across a comparison; set "
                              f"{_PER_RUN[clash[0]]!r} instead")
        own.update({k: tuple(v) if isinstance(v, list) else v for k, v in layer.items() if k in _OWN})
        training.append({k: v for k, v in layer.items() if k not in _OWN})
    return CompareConfig(**own, train=config_from(*training, where=where))


# --- matching parameter counts ------------------------------------------------------------------

@dataclass(frozen=True)
class Sizing:
    model: str
    d_model: int
    model_args: dict  # the d_ff a Transformer was given, else empty
    params: int


def count(task, model: str, d_model: int, layers: int, **model_args: Any) -> int:
    """Trainable parameters of `model` wrapped by `task` (embedding and head included)."""
    from seqarena.models import build_model, count_params

    return count_params(task.wrap(build_model(model, d_model=d_model, layers=layers, **model_args)))


def closest(params_at: Callable[[int], int], target: int, lo: int = 1, hi: int = 1 << 16) -> int:
    """The integer v in [lo, hi] whose params_at(v) is nearest target (params_at non-decreasing)."""
    top = lo
    while top < hi and params_at(top) < target:
        top = min(hi, top * 2)
    a, b = max(lo, top // 2), top  # the first v with params_at(v) >= target lies in [a, b]
    while a < b:
        mid = (a + b) // 2
        if params_at(mid) < target:
            a = mid + 1
        else:
            b = mid
    return min((a - 1, a) if a > lo else (a,), key=lambda v: abs(params_at(v) - target))


def accepted_width(model: str, width: int, layers: int) -> int:
    """`width`, or the next one the model accepts (rnn-ed halves its width between two
    encoder directions, so it takes even ones only)."""
    from seqarena.models import make_config

    for w in range(width, width + 8):
        try:
            make_config(model, d_model=w, layers=layers)
            return w
        except ConfigError:
            continue
    return width


def size_models(models: tuple[str, ...], task, d_model: int, layers: int,
                target: int = 0) -> tuple[int, list[Sizing]]:
    """(target, each model's size): the width, or a Transformer's d_ff, that comes closest."""
    from seqarena.models import config_fields

    if not target:
        target = max(count(task, model, d_model, layers) for model in models)
    sizes = []
    for model in models:
        if "d_ff" in config_fields(model):  # keep the attention width, trade feed-forward width
            size = lambda v: (d_model, {"d_ff": v})  # noqa: E731
        else:
            size = lambda v: (accepted_width(model, v, layers), {})  # noqa: E731

        def params_at(v: int) -> int:
            width, args = size(v)
            return count(task, model, width, layers, **args)

        width, args = size(closest(params_at, target))
        sizes.append(Sizing(model, width, args, count(task, model, width, layers, **args)))
    return target, sizes


# --- the comparison -----------------------------------------------------------------------------

@dataclass
class CompareOutcome:
    out: Path
    results: list[RunResult]
    rows: list[dict[str, Any]]  # one per (model, seq_len), seeds aggregated
    held_equal: dict[str, Any]
    sizes: list[Sizing]
    wall_s: float = 0.0
    messages: list[str] = field(default_factory=list)


def held_equal(cfg: CompareConfig, target: int, threads: int) -> dict[str, Any]:
    t = cfg.train
    return {"task": t.task, "task_args": t.task_args, "steps": t.steps,
            "budget_seconds": t.budget_seconds, "batch_size": t.batch_size,
            "layers": t.layers, "optimizer": "AdamW", "lr": t.lr, "weight_decay": t.weight_decay,
            "warmup": t.warmup, "min_lr": t.min_lr, "clip": t.clip, "dropout": t.dropout,
            "params_target": target, "params_tolerance": TOLERANCE, "seeds": list(cfg.seeds),
            "threads": threads, "device": str(resolve_device(t.device))}


def describe_held_equal(h: dict[str, Any]) -> str:
    steps = f"{h['steps']} steps" if h["steps"] < UNBOUNDED_STEPS else ""
    seconds = f"{h['budget_seconds']:g} s of training" if h["budget_seconds"] else ""
    budget = f"{steps} or {seconds}, whichever comes first" if steps and seconds \
        else steps or seconds
    args = "".join(f" {k}={v}" for k, v in h["task_args"].items())
    return (f"held equal: task {h['task']}{args}, {budget}, batch {h['batch_size']}, "
            f"{h['layers']} layer(s), AdamW lr {h['lr']:g} (warm-up {h['warmup']:.0%}, cosine to "
            f"{h['min_lr']:.0%}), clip {h['clip']:g}, params {h['params_target']:,} "
            f"(±{h['params_tolerance']:.0%}), seeds ({', '.join(map(str, h['seeds']))}), "
            f"{h['threads']} CPU thread(s), device {h['device']}")


def compare(cfg: CompareConfig, echo: Callable[[str], None] = lambda line: None) -> CompareOutcome:
    """Train every (model, seq_len, seed) of `cfg`; `echo` receives progress lines."""
    t0 = time.perf_counter()
    out = Path(cfg.out or Path(cfg.train.out) / time.strftime("compare-%Y%m%d-%H%M%S"))
    if (out / "summary.json").exists():
        raise UserError(f"{out} already holds a comparison; choose another --out")
    threads = set_threads(cfg.train.threads)
    # Build every task first: a length too short for the task fails before any training.
    tasks = {L: make_task(cfg.train.task, seq_len=L, seed=cfg.train.seed, **cfg.train.task_args)
             for L in cfg.seq_lens}
    target, sizes = size_models(cfg.models, tasks[cfg.seq_lens[0]], cfg.train.d_model,
                                cfg.train.layers, cfg.params)
    equal = held_equal(cfg, target, threads)
    echo(describe_held_equal(equal))
    for s in sizes:
        gap = s.params / target - 1
        args = "".join(f", {k}={v}" for k, v in s.model_args.items())
        echo(f"  {s.model:<12} d_model={s.d_model}{args}: {s.params:,} parameters ({gap:+.1%})")
    far = [s.model for s in sizes if abs(s.params / target - 1) > TOLERANCE]
    if far:
        raise UserError(f"cannot size {', '.join(far)} to within {TOLERANCE:.0%} of {target:,} "
                        f"parameters; choose another --d-model or --params")

    results: list[RunResult] = []
    runs = [(L, s, seed) for L in cfg.seq_lens for s in sizes for seed in cfg.seeds]
    for i, (L, s, seed) in enumerate(runs, 1):
        run_cfg = dataclasses.replace(cfg.train, model=s.model, seq_len=L, seed=seed,
                                      d_model=s.d_model, model_args=s.model_args, out=str(out),
                                      name=run_dir_name(s.model, L, seed))
        result = _train_one(run_cfg)
        results.append(result)
        metric = "-" if result.metric is None else f"{result.metric:.4g}"
        echo(f"[{i}/{len(runs)}] {s.model} L={L} seed {seed}: {result.metric_name} {metric} "
             f"({result.status}, {result.steps} steps, {result.wall_s:.0f} s)")
    rows = aggregate(results)
    wall = time.perf_counter() - t0
    write_results(out / "summary.json", "compare", results, held_equal=equal, table=rows,
                  sizes=[dataclasses.asdict(s) for s in sizes], wall_s=wall)
    report = write_report([out], out / "report.html", log=echo)
    echo(f"report: {report}")
    return CompareOutcome(out, results, rows, equal, sizes, wall)


def _train_one(cfg: TrainConfig) -> RunResult:
    """One run; running out of memory is a result (status "oom"), not the end of the sweep."""
    try:
        return train(cfg).result
    except torch.OutOfMemoryError:
        status = "oom"
    except RuntimeError as e:
        if "out of memory" not in str(e) and "can't allocate memory" not in str(e):
            raise
        status = "oom"
    return RunResult(model=cfg.model, task=cfg.task, seq_len=cfg.seq_len, params=0,
                     metric_name="", metric=None, higher_is_better=True, train_tokens_per_s=0.0,
                     peak_mem_bytes=0, wall_s=0.0, steps=0, seed=cfg.seed, status=status,
                     run_dir=str(cfg.run_dir))


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def aggregate(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per (model, seq_len): metric mean and std over seeds, medians of the rest."""
    groups: dict[tuple[str, int], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.model, r.seq_len), []).append(r)
    rows = []
    for (model, L), rs in groups.items():
        done = [r for r in rs if r.metric is not None]
        mean, std = _mean_std([r.metric for r in done])
        ok = [r for r in rs if r.status == "ok"]
        rows.append({
            "model": model, "seq_len": L, "params": rs[0].params,
            "metric_name": rs[0].metric_name, "metric": mean, "metric_std": std,
            "higher_is_better": rs[0].higher_is_better, "seeds": len(rs), "finished": len(done),
            "train_tokens_per_s": statistics.median(r.train_tokens_per_s for r in ok) if ok else None,
            "peak_mem_bytes": max(r.peak_mem_bytes for r in rs),
            "wall_s": statistics.fmean(r.wall_s for r in rs),
            "steps": statistics.median(r.steps for r in rs),
            "status": ",".join(sorted({r.status for r in rs})),
            "baselines": rs[0].baselines})
    return rows


def table_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(rows, columns, headers) for seqarena.table.format_table."""
    name = rows[0]["metric_name"] if rows else "metric"
    better = "higher" if rows and rows[0]["higher_is_better"] else "lower"
    shown = []
    for r in rows:
        metric = "-" if r["metric"] is None else f"{r['metric']:.4g}"
        if r["metric_std"] is not None:
            metric += f" ± {r['metric_std']:.2g}"
        shown.append({"model": r["model"], "L": r["seq_len"], "params": r["params"],
                      "metric": metric, "tokens_per_s": _round(r["train_tokens_per_s"]),
                      "peak_mib": None if r["peak_mem_bytes"] is None
                      else round(r["peak_mem_bytes"] / 2**20, 1),
                      "wall_s": round(r["wall_s"], 1), "steps": int(r["steps"]),
                      "status": r["status"]})
    columns = ["model", "L", "params", "metric", "tokens_per_s", "peak_mib", "wall_s", "steps",
               "status"]
    headers = ["model", "L", "params", f"{name} ({better} is better)", "train tok/s",
               "peak MiB", "wall s", "steps", "status"]
    return shown, columns, headers


def _round(x: float | None) -> int | None:
    return None if x is None else int(round(x))
