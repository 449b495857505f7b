"""`seqarena compare`: several models trained on one task under one budget, side by side.

Everything but the model is held equal: the task and its data, the sequence lengths, the steps
(or seconds) of training, the batch, the optimizer and its schedule, the seeds, the threads.
The models themselves are made equal in size: each gets the width (the Transformer: its
feed-forward width d_ff) at which its parameter count comes closest to a common target (by
default the largest model's count at --d-model), so a difference in the metric is a difference
of architecture, not of capacity. Each model's peak learning rate is its own, chosen on the
validation split at every length it is compared at (seqarena.experiment.lrsearch), or one given
rate for all (--lr X).

After the runs, one step (seqarena.experiment.summary) turns their results into the comparison's
Summary: rows with 95 % intervals, paired tests, verdicts that name a winner only when the tests
separate it, and the failed runs. The runs go through an Executor (seqarena.experiment.executor):
a pool of local processes for --jobs N, the same numbers as one at a time.

    runs/compare-<time>/compare.json                  the CompareConfig, checked on --resume
    runs/compare-<time>/lr-search/<model>-L<L>-s<seed>-lr<lr>-r<rung>/   the search's runs
    runs/compare-<time>/<model>-L<seq_len>-s<seed>/   one ordinary run directory per run
    runs/compare-<time>/summary.json                  every RunResult (kind "compare") and the
                                                      Summary; the CLI renders report.html from it
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from seqarena.config import TrainConfig, config_from, model_variant as variant
from seqarena.errors import ConfigError, UserError
from seqarena.experiment.executor import Executor, LocalExecutor, RunSpec
from seqarena.fileio import atomic_write_json
from seqarena.experiment.lrsearch import check_grid, rungs, search, validate
from seqarena.experiment.summary import Summary, TaskInfo, summarize
from seqarena.results import RunResult, write_results
from seqarena.tasks import make_task
from seqarena.training.train import resolve_device, set_threads

DEFAULT_MODELS = ("rnn", "lstm", "gru", "mingru", "transformer")
# The default budget is steps, the same on every machine (a wall-clock cap stops a slow model
# early on a busy machine, and then "equal budget" is not). 400 steps at batch 32, evaluated on
# the validation split every 40; the equal-time verdict reads those curves. With the lr search
# (4 rates, 3 rungs, the longest a quarter of the steps) the default comparison stays under
# 5 minutes on 2 CPU cores.
# One thread: these models launch thousands of tiny kernels per step, and with two OpenMP
# threads on a 2-core machine every kernel waits at a barrier for the other core; with any
# other process running we measured steps 5-20x slower than with one thread.
DEFAULT_TRAIN = TrainConfig(task="adding", steps=400, budget_seconds=0.0, batch_size=32,
                            d_model=64, lr=3e-3, eval_every=40, checkpoint_every=0,
                            keep_checkpoints=1, threads=1)
DEFAULT_GRID = (3e-4, 1e-3, 3e-3, 1e-2)  # --lr auto's log grid: half a decade apart
UNBOUNDED_STEPS = 10**9  # the steps of a run that only a time budget ends
TOLERANCE = 0.10  # parameter counts must land within 10 % of the target
SEARCH_DIR = "lr-search"  # the search's runs, beside the comparison's


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
    seeds: tuple[int, ...] = (0,)  # several seeds: intervals over seeds and test examples
    params: int = 0  # parameter target; 0: the largest of the models' counts at train.d_model
    out: str = ""  # the compare directory; "": runs/compare-<date>-<time>
    lr_auto: bool = True  # --lr auto: each model's lr by the validation search; False: train.lr
    lr_grid: tuple[float, ...] = DEFAULT_GRID  # the rates the search tries
    lr_budget: float = 0.25  # the search's longest run, as a fraction of the budget
    jobs: int = 1  # runs at once; 1: concurrent runs moved tokens/s by more than 10 % (README)
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
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise ConfigError(f"jobs must be a positive integer (runs at once), got {self.jobs!r}")
        if isinstance(self.lr_budget, bool) or not isinstance(self.lr_budget, (int, float)) \
                or not 0 < self.lr_budget <= 1:
            raise ConfigError(f"lr_budget is a fraction in (0, 1], got {self.lr_budget!r}")
        check_grid(self.lr_grid)


_OWN = {f.name for f in dataclasses.fields(CompareConfig)} - {"train"}
_PER_RUN = {"model": "models", "seq_len": "seq_lens", "seed": "seeds", "name": "out",
            "label": "models"}


def compare_config_from(*layers: dict[str, Any], where: str = "config") -> CompareConfig:
    """A CompareConfig from dicts (TOML, flags) applied in order; training keys go to `train`.
    The budget is steps or seconds: giving only one of them drops the default of the other.
    `lr = "auto"` asks for the search; a number fixes every model's rate."""
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
        layer = dict(layer)
        if "lr" in layer:
            if layer["lr"] == "auto":
                own["lr_auto"] = True
                del layer["lr"]
            else:
                own["lr_auto"] = False
        own.update({k: tuple(v) if isinstance(v, list) else v for k, v in layer.items() if k in _OWN})
        training.append({k: v for k, v in layer.items() if k not in _OWN})
    return CompareConfig(**own, train=config_from(*training, where=where))


# --- matching parameter counts ------------------------------------------------------------------

@dataclass(frozen=True)
class Sizing:
    model: str  # as the comparison names it: a registered model, or a variant "name@key=value"
    d_model: int
    model_args: dict  # the variant's fields, and the d_ff a Transformer was given
    params: int

    @property
    def base(self) -> str:
        return variant(self.model)[0]


def count(task, model: str, d_model: int, layers: int, **model_args: Any) -> int:
    """Trainable parameters of `model` (a name or a variant) wrapped by `task` (embedding and
    head included)."""
    from seqarena.models import build_model, count_params

    name, fixed = variant(model)
    return count_params(task.wrap(build_model(name, d_model=d_model, layers=layers,
                                              **{**fixed, **model_args})))


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

    name, fixed = variant(model)
    for w in range(width, width + 8):
        try:
            make_config(name, d_model=w, layers=layers, **fixed)
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
        name, fixed = variant(model)
        if "d_ff" in config_fields(name):  # keep the attention width, trade feed-forward width
            size = lambda v: (d_model, {"d_ff": v})  # noqa: E731
        else:
            size = lambda v: (accepted_width(model, v, layers), {})  # noqa: E731

        def params_at(v: int) -> int:
            width, args = size(v)
            return count(task, model, width, layers, **args)

        width, args = size(closest(params_at, target))
        sizes.append(Sizing(model, width, {**fixed, **args},
                            count(task, model, width, layers, **args)))
    return target, sizes


# --- the comparison -----------------------------------------------------------------------------

@dataclass
class CompareOutcome:
    out: Path
    results: list[RunResult]  # every run, failed ones included
    summary: Summary  # rows, intervals, paired tests, verdicts, failed runs: the one conclusion

    @property
    def verdicts(self) -> list[str]:
        return [v["text"] for v in self.summary.verdicts]

    def lr(self, model: str, seq_len: int) -> float | None:
        return next((r.lr for r in self.summary.rows
                     if r.model == model and r.seq_len == seq_len), None)


def held_equal(cfg: CompareConfig, target: int, threads: int) -> dict[str, Any]:
    t = cfg.train
    return {"task": t.task, "task_args": t.task_args, "steps": t.steps,
            "budget_seconds": t.budget_seconds, "budget": "time" if t.budget_seconds else "steps",
            "batch_size": t.batch_size, "layers": t.layers, "optimizer": "AdamW",
            "lr": "auto" if cfg.lr_auto else t.lr,
            "lr_grid": list(cfg.lr_grid) if cfg.lr_auto else None,
            "lr_budget": cfg.lr_budget if cfg.lr_auto else None,
            "weight_decay": t.weight_decay, "warmup": t.warmup, "min_lr": t.min_lr, "clip": t.clip,
            "dropout": t.dropout, "eval_every": t.eval_every, "params_target": target,
            "params_tolerance": TOLERANCE, "seeds": list(cfg.seeds), "threads": threads,
            "jobs": cfg.jobs, "device": str(resolve_device(t.device))}


def describe_held_equal(h: dict[str, Any]) -> str:
    steps = f"{h['steps']} steps" if h["steps"] < UNBOUNDED_STEPS else ""
    seconds = f"{h['budget_seconds']:g} s of training" if h["budget_seconds"] else ""
    budget = f"{steps} or {seconds}, whichever comes first" if steps and seconds \
        else steps or seconds
    budget += " (the budget is time: a busier machine trains fewer steps)" if seconds else ""
    args = "".join(f" {k}={v}" for k, v in h["task_args"].items())
    lr = f"lr {h['lr']:g}, the same for every model" if h["lr"] != "auto" else \
        (f"lr per model from {', '.join(f'{v:g}' for v in h['lr_grid'])} by successive halving "
         f"on the validation split (longest search run {h['lr_budget']:g} of the budget)")
    return (f"held equal: task {h['task']}{args}, {budget}, batch {h['batch_size']}, "
            f"{h['layers']} layer(s), AdamW, {lr} (warm-up {h['warmup']:.0%}, cosine to "
            f"{h['min_lr']:.0%}), clip {h['clip']:g}, params {h['params_target']:,} "
            f"(±{h['params_tolerance']:.0%}), seeds ({', '.join(map(str, h['seeds']))}), "
            f"{h['threads']} CPU thread(s) per run, {h['jobs']} run(s) at once, "
            f"device {h['device']}")


def _check_out(cfg: CompareConfig, out: Path, resume: bool) -> None:
    """Refuse to overwrite a comparison; on resume, refuse a different one."""
    saved = out / "compare.json"
    mine = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items()
            if k not in ("jobs", "out")}
    if not resume:
        if saved.exists() or (out / "summary.json").exists():
            raise UserError(f"{out} already holds a comparison; add --resume to continue it, "
                            f"or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(saved, mine)
        return
    if not saved.exists():
        raise UserError(f"{out}: no comparison to resume (no compare.json); drop --resume to "
                        f"start one, or give its --out")
    theirs = json.loads(saved.read_text(encoding="utf-8"))
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            raise UserError(f"{saved}: started with {key}={theirs.get(key)!r}, this has "
                            f"{key}={mine.get(key)!r}; resume with the same settings")


def compare(cfg: CompareConfig, echo: Callable[[str], None] = lambda line: None,
            resume: bool = False, executor: Executor | None = None) -> CompareOutcome:
    """Train every (model, seq_len, seed) of `cfg`; `echo` receives progress lines. resume:
    continue the comparison in cfg.out (finished runs are read back, the others continue)."""
    t0 = time.perf_counter()
    if resume and not cfg.out:
        raise UserError("--resume continues a comparison: give its directory with --out")
    out = Path(cfg.out or Path(cfg.train.out) / time.strftime("compare-%Y%m%d-%H%M%S"))
    executor = executor or LocalExecutor(cfg.jobs)
    threads = set_threads(cfg.train.threads)
    # Build every task first: a length too short for the task fails before any training.
    tasks = {L: make_task(cfg.train.task, seq_len=L, seed=cfg.train.seed, **cfg.train.task_args)
             for L in cfg.seq_lens}
    target, sizes = size_models(cfg.models, tasks[cfg.seq_lens[0]], cfg.train.d_model,
                                cfg.train.layers, cfg.params)
    equal = held_equal(dataclasses.replace(cfg, jobs=executor.jobs), target, threads)
    echo(describe_held_equal(equal))
    for s in sizes:
        gap = s.params / target - 1
        args = "".join(f", {k}={v}" for k, v in s.model_args.items())
        echo(f"  {s.model:<12} d_model={s.d_model}{args}: {s.params:,} parameters ({gap:+.1%})")
    far = [s.model for s in sizes if abs(s.params / target - 1) > TOLERANCE]
    if far:
        raise UserError(f"cannot size {', '.join(far)} to within {TOLERANCE:.0%} of {target:,} "
                        f"parameters; choose another --d-model or --params")
    time_budget = bool(cfg.train.budget_seconds) and cfg.train.steps >= UNBOUNDED_STEPS
    if cfg.lr_auto:
        rungs(len(cfg.lr_grid), cfg.train, cfg.lr_budget, time_budget)  # too small: fail now
    _check_out(cfg, out, resume)

    def run_config(s: Sizing, L: int, seed: int, lr: float) -> TrainConfig:
        return dataclasses.replace(cfg.train, model=s.base, seq_len=L, seed=seed, lr=lr,
                                   d_model=s.d_model, model_args={**cfg.train.model_args,
                                                                  **s.model_args},
                                   label=s.model if s.model != s.base else "", out=str(out),
                                   name=run_dir_name(s.model, L, seed))

    lrs = {(s.model, L): cfg.train.lr for s in sizes for L in cfg.seq_lens}
    search_doc = None
    if cfg.lr_auto:
        lrs, search_doc = tune(cfg, sizes, run_config, executor, out, echo, resume)

    runs = [(L, s, seed) for L in cfg.seq_lens for s in sizes for seed in cfg.seeds]
    specs = [RunSpec(dataclasses.asdict(dataclasses.replace(
        run_config(s, L, seed, lrs[s.model, L]), lr_tuned=cfg.lr_auto)), resume=resume)
        for L, s, seed in runs]
    finished = [0]

    def done(i: int, result: RunResult) -> None:
        finished[0] += 1
        L, s, seed = runs[i]
        metric = "-" if result.metric is None else f"{result.metric:.4g}"
        ci = f" [{result.metric_ci[0]:.4g}, {result.metric_ci[1]:.4g}]" if result.metric_ci else ""
        why = f": {result.stopped}" if result.status != "ok" and result.stopped else ""
        echo(f"[{finished[0]}/{len(runs)}] {s.model} L={L} seed {seed} lr {lrs[s.model, L]:g}: "
             f"{result.metric_name} {metric}{ci} ({result.status}, {result.steps} steps, "
             f"{result.train_s or 0:.0f} s training{why})")

    results = executor.run(specs, done)
    knob = f"--budget-seconds (now {cfg.train.budget_seconds:g})" if time_budget else \
        f"--steps (now {cfg.train.steps})"
    summary = summarize(results, TaskInfo.of(tasks[cfg.seq_lens[0]]), knob, held_equal=equal,
                        sizes=[dataclasses.asdict(s) for s in sizes], lr_search=search_doc,
                        wall_s=time.perf_counter() - t0)
    write_results(out / "summary.json", "compare", results, summary=dataclasses.asdict(summary))
    return CompareOutcome(out, results, summary)


def tune(cfg: CompareConfig, sizes: list[Sizing], run_config: Callable[..., TrainConfig],
         executor: Executor, out: Path, echo: Callable[[str], None], resume: bool):
    """Each model's rate at each length: successive halving at the shortest length, then its
    finalists again at every other length (seqarena.experiment.lrsearch.validate). The search's
    runs report no throughput, so a local search uses every core even where the comparison's
    timed runs go one at a time."""
    searcher = executor
    if isinstance(executor, LocalExecutor) and executor.jobs < (os.cpu_count() or 1):
        searcher = LocalExecutor(os.cpu_count() or 1)
    first, seed = min(cfg.seq_lens), cfg.seeds[0]
    echo(f"lr search: each model at L={first}, seed {seed}, scored on the validation split")
    found = search([run_config(s, first, seed, cfg.train.lr) for s in sizes], cfg.lr_grid,
                   cfg.lr_budget, searcher, out / SEARCH_DIR, echo=echo, resume=resume)
    chosen = {(m, first): r for m, r in found.items()}
    for L in sorted(set(cfg.seq_lens) - {first}):
        checked = validate(found, [run_config(s, L, seed, cfg.train.lr) for s in sizes],
                           searcher, out / SEARCH_DIR, echo=echo, resume=resume)
        chosen.update({(m, L): r for m, r in checked.items()})
    for L in cfg.seq_lens:
        echo(f"lr chosen at L={L}: " + ", ".join(f"{s.model} {chosen[s.model, L].lr:g}"
                                                 for s in sizes))
    doc = {"seed": seed, "split": "val", "searched_at": first, "grid": list(cfg.lr_grid),
           "runs": [dataclasses.asdict(r) for r in chosen.values()]}
    return {key: r.lr for key, r in chosen.items()}, doc
