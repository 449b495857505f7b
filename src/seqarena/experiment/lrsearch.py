"""The learning-rate search of `compare --lr auto`: successive halving over a log grid, scored on
the validation split only.

Each model gets its own peak learning rate: recurrent networks and Transformers want different
ones, so one shared rate favours some families. Every grid value trains a short run (rung 0);
the best 1/REDUCTION of them go on to runs REDUCTION times longer, until the last rung's runs are
`budget` of the comparison's steps (or seconds); the best of the last rung wins. A rung's runs
start from scratch with their own warm-up and cosine, so a rate is judged over a whole schedule,
as the comparison will use it. Runs are scored on "val" (final_split="val"): the test split is
never read.

Optuna keeps the study: the grid is enqueued as its trials (RandomSampler is never left to draw;
GridSampler cannot be used outside study.optimize, it stops the study when the grid is spent),
each rung's scores are reported to the trials, a pruner decides who goes on, and the best trial
is the answer. The pruner is HalvingPruner below, not Optuna's SuccessiveHalvingPruner: that one
is asynchronous (ASHA), judging each trial as it reports against those that reported before it,
so side-by-side runs would make the choice depend on which finished first. Told a rung's reports
in a fixed order it stays deterministic, but keeps far too many: measured on the default
comparison (5 models x 4 rates), it sent 15 of 20 trials to the second rung and 14 to the third
(every rate that is the best so far of its rung goes on), which made the search cost more than
the comparison. HalvingPruner judges a trial only once its whole rung has reported: it keeps the
best ceil(n / REDUCTION), as synchronous successive halving does.

"Best" reads each score's interval (the bootstrap over validation examples that every run
reports): rates whose intervals overlap the best score's are within noise of it, and among those
the largest rate ranks first, then the others by their score. A short search is biased towards
small rates (Wu et al. 2018, "Understanding short-horizon bias in stochastic meta-optimization"):
ranked by the score alone, the search chose 3e-4 for the LSTM on the adding problem (T = 100),
where all four rates were still at the baseline after 250 steps, their scores 0.005 apart with
intervals 0.035 wide, and at 3e-4 the LSTM stayed at the baseline for the whole 1,000 steps. The
tie is said in the search's output and kept in its result. A score with no interval (corpus
BLEU) ranks by the score alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from seqarena.config import TrainConfig
from seqarena.errors import ConfigError, UserError
from seqarena.experiment.executor import Executor, RunSpec
from seqarena.stats import overlap

REDUCTION = 2  # each rung keeps the best half of the rates and trains them twice as long
MIN_RUNG_STEPS = 10  # a shorter first rung would judge warm-up, not a learning rate


Interval = tuple[float, float] | None


def _within_noise(a: Interval, b: Interval) -> bool:
    """Whether two known intervals share a point (an unknown one is never within noise here)."""
    return a is not None and b is not None and overlap(a, b)


def _by_score(scores: dict[float, tuple[float, Interval]], maximize: bool):
    """A sort key over rates: the better score first; equal scores, the smaller rate."""
    return lambda lr: (-scores[lr][0] if maximize else scores[lr][0], lr)


def close_to_best(scores: dict[float, tuple[float, Interval]], maximize: bool) -> list[float]:
    """The rate of the best score and every rate within noise of it, the largest first."""
    if not scores:
        return []
    best = min(scores, key=_by_score(scores, maximize))
    return sorted((lr for lr in scores if lr == best
                   or _within_noise(scores[best][1], scores[lr][1])), reverse=True)


def ranked(scores: dict[float, tuple[float, Interval]], maximize: bool) -> list[float]:
    """The rates, best first: those within noise of the best score, the largest rate first, then
    the others by score (equal scores: the smaller rate). Diverged rates are not in `scores`."""
    close = close_to_best(scores, maximize)
    return close + sorted((lr for lr in scores if lr not in close), key=_by_score(scores, maximize))


def _halving_pruner():
    """An optuna pruner that keeps the first ceil(n / REDUCTION) of a rung's n trials, ranked by
    `ranked` (each trial's interval is its user attribute "ci")."""
    import optuna

    class HalvingPruner(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            step = trial.last_step
            if not math.isfinite(trial.intermediate_values[step]):
                return True
            maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
            rung = {t.params["lr"]: (t.intermediate_values[step], t.user_attrs.get(f"ci{step}"))
                    for t in study.get_trials(deepcopy=False)
                    if step in t.intermediate_values
                    and math.isfinite(t.intermediate_values[step])}
            kept = ranked(rung, maximize)[:math.ceil(len(rung) / REDUCTION)]
            return trial.params["lr"] not in kept

    return HalvingPruner()


@dataclass(frozen=True)
class Trial:
    lr: float
    values: tuple[float | None, ...]  # validation metric at each rung it ran (None: diverged)
    intervals: tuple[Interval, ...] = ()  # each value's 95 % interval (None: unknown)


@dataclass(frozen=True)
class SearchResult:
    model: str
    lr: float  # the chosen peak learning rate
    trials: tuple[Trial, ...]
    rungs: tuple[float, ...]  # each rung's budget: steps, or seconds for a time budget
    tied: tuple[float, ...] = ()  # the last rung's other rates within noise of the best score
    seq_len: int = 0  # the length the rate was chosen for
    searched_at: int = 0  # the length the halving ran at; another: the finalists re-run here


def name_of(cfg: TrainConfig) -> str:
    """The model as the comparison names it (a variant's label, or the registered name)."""
    return cfg.label or cfg.model


def validate(found: dict[str, SearchResult], bases: list[TrainConfig], executor: Executor,
             out: Path, echo: Callable[[str], None] = lambda line: None,
             resume: bool = False) -> dict[str, SearchResult]:
    """The search's finalists (the rates of its last rung) run again at another length, each
    base config's; the best there, by the same rule, is that length's rate. A rate that suits
    short sequences can stall on long ones (and the other way round), so a rate chosen at one
    length is never assumed at another."""
    specs, owners = [], []
    for base in bases:
        result = found[name_of(base)]
        size, time_budget = result.rungs[-1], bool(base.budget_seconds) and base.steps >= 10**9
        for trial in result.trials:
            if len(trial.values) == len(result.rungs):
                cfg = trial_config(base, trial.lr, len(result.rungs) - 1, size, time_budget, out)
                specs.append(RunSpec(dataclasses.asdict(cfg), resume=resume))
                owners.append((base, trial.lr))
    echo(f"lr check at L={bases[0].seq_len}: the finalists again, {len(specs)} run(s)")
    results = executor.run(specs)
    checked = {}
    for base in bases:
        done, trials = {}, []
        for (owner, lr), r in zip(owners, results):
            if owner is not base:
                continue
            ok = r.status == "ok" and r.metric is not None and math.isfinite(r.metric)
            ci = tuple(r.metric_ci) if ok and r.metric_ci else None
            trials.append(Trial(lr, (r.metric if ok else None,), (ci,)))
            if ok:
                done[lr] = (r.metric, ci)
        result = found[name_of(base)]
        if not done:
            raise UserError(f"--lr auto: at L={base.seq_len} every finalist rate diverged for "
                            f"{name_of(base)}; give --lr-grid lower values, or --lr X")
        close = close_to_best(done, _higher_is_better(base))
        if len(close) > 1:
            echo(f"lr check: {name_of(base)} at L={base.seq_len}: "
                 f"{', '.join(f'{v:g}' for v in sorted(close))} within noise; took the largest, "
                 f"{close[0]:g}")
        checked[name_of(base)] = SearchResult(name_of(base), close[0], tuple(trials),
                                           result.rungs[-1:], tuple(close[1:]), base.seq_len,
                                           result.searched_at)
    return checked


def check_grid(grid: tuple[float, ...]) -> tuple[float, ...]:
    """The grid sorted; ConfigError when it is empty, repeats a value or holds a non-positive."""
    if not isinstance(grid, tuple) or not grid:
        raise ConfigError("lr_grid must list at least one learning rate, e.g. 3e-4,1e-3,3e-3,1e-2")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
           or not math.isfinite(v) for v in grid):
        raise ConfigError(f"lr_grid must hold positive numbers, got {grid!r}")
    if len(set(grid)) != len(grid):
        raise ConfigError(f"lr_grid lists a value twice: {grid!r}")
    return tuple(sorted(float(v) for v in grid))


def rungs(n_rates: int, train: TrainConfig, budget: float, time_budget: bool) -> tuple[float, ...]:
    """Each rung's steps (or seconds), shortest first, halving until two or fewer rates are left;
    UserError when the first rung is too short to tell rates apart."""
    count = max(1, math.ceil(math.log(n_rates, REDUCTION) - 1e-9)) if n_rates > 1 else 1
    if time_budget:
        top = budget * train.budget_seconds
        return tuple(top / REDUCTION ** (count - 1 - k) for k in range(count))
    top = int(round(budget * train.steps))
    steps = tuple(top // REDUCTION ** (count - 1 - k) for k in range(count))
    if steps[0] < MIN_RUNG_STEPS:
        raise UserError(f"--lr auto: the search's first rung would train {steps[0]} steps "
                        f"({budget:g} of {train.steps} steps halved {count - 1} times for "
                        f"{n_rates} rates), under {MIN_RUNG_STEPS}; raise --steps or "
                        f"--lr-budget, use fewer --lr-grid values, or give --lr X")
    return steps


def trial_config(base: TrainConfig, lr: float, rung: int, budget: float, time_budget: bool,
                 out: Path) -> TrainConfig:
    """The run of rate `lr` at a rung: scored on val, one evaluation (at the end), no extras."""
    limit = {"budget_seconds": budget} if time_budget else {"steps": int(budget)}
    return dataclasses.replace(base, lr=lr, final_split="val", eval_every=0, patience=0,
                               checkpoint_every=0, keep_checkpoints=1, tensorboard=False,
                               out=str(out), name=f"{base.run_name}-lr{lr:g}-r{rung}",
                               **limit)


def search(bases: list[TrainConfig], grid: tuple[float, ...], budget: float, executor: Executor,
           out: Path, echo: Callable[[str], None] = lambda line: None,
           resume: bool = False) -> dict[str, SearchResult]:
    """Each base config's model's best learning rate; all models' trials of a rung run together."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid = check_grid(grid)
    time_budget = bool(bases[0].budget_seconds) and bases[0].steps >= 10**9
    sizes = rungs(len(grid), bases[0], budget, time_budget)
    studies, trials, values, intervals = {}, {}, {}, {}
    for base in bases:
        m = name_of(base)
        maximize = _higher_is_better(base)
        study = optuna.create_study(
            direction="maximize" if maximize else "minimize",
            sampler=optuna.samplers.RandomSampler(seed=0),
            pruner=_halving_pruner())
        for lr in grid:  # every grid value once: enqueued values come before any sampled one
            study.enqueue_trial({"lr": lr})
        asked = [study.ask() for _ in grid]
        by_lr = {t.suggest_float("lr", grid[0], grid[-1], log=True): t for t in asked}
        studies[m] = study
        trials[m] = [by_lr[lr] for lr in grid]  # grid order: the order reports are told
        values[m] = {lr: [] for lr in grid}
        intervals[m] = {lr: [] for lr in grid}
    alive = {name_of(base): list(grid) for base in bases}
    unit = "s" if time_budget else "steps"
    for k, size in enumerate(sizes):
        specs, owners = [], []
        for base in bases:
            for lr in alive[name_of(base)]:
                cfg = trial_config(base, lr, k, size, time_budget, out)
                specs.append(RunSpec(dataclasses.asdict(cfg), resume=resume))
                owners.append((name_of(base), lr))
        echo(f"lr search, rung {k + 1}/{len(sizes)}: {len(specs)} run(s) of {size:g} {unit}")
        results = executor.run(specs)
        scored = {owner: (r.metric, r.metric_ci) if r.status == "ok" else (None, None)
                  for owner, r in zip(owners, results)}
        last = k == len(sizes) - 1
        for m in map(name_of, bases):
            study, running = studies[m], []
            for lr, trial in zip(grid, trials[m]):
                if lr in alive[m]:
                    value, ci = scored[(m, lr)]
                    ok = value is not None and math.isfinite(value)
                    ci = tuple(ci) if ok and ci else None
                    values[m][lr].append(value)
                    intervals[m][lr].append(ci)
                    trial.set_user_attr(f"ci{k}", ci)
                    if last and ok:
                        study.tell(trial, value)
                    elif last:
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    else:
                        trial.report(value if ok else math.nan, step=k)
                        running.append((lr, trial))
            # the whole rung has reported: now each decision sees all of it
            alive[m] = []
            for lr, trial in running:
                if trial.should_prune():
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    alive[m].append(lr)
    found = {}
    for base in bases:
        m = name_of(base)
        study = studies[m]
        done = {t.params["lr"]: (t.value, t.user_attrs.get(f"ci{len(sizes) - 1}"))
                for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
        if not done:
            raise UserError(f"--lr auto: no learning rate of the grid trained {m} without "
                            f"diverging ({', '.join(f'{v:g}' for v in grid)}); give --lr-grid "
                            f"lower values, or --lr X")
        close = close_to_best(done, study.direction == optuna.study.StudyDirection.MAXIMIZE)
        best, tied = close[0], tuple(close[1:])
        if tied:
            rates = ", ".join(f"{v:g}" for v in sorted(close))
            echo(f"lr search: {m}: {rates} within noise of the best score at "
                 f"{sizes[-1]:g} {unit}; took the largest, {best:g}")
        found[m] = SearchResult(
            m, best, tuple(Trial(lr, tuple(values[m][lr]), tuple(intervals[m][lr]))
                           for lr in grid),
            sizes, tied, base.seq_len, base.seq_len)
    return found


def _higher_is_better(cfg: TrainConfig) -> bool:
    from seqarena.tasks import TASKS

    return bool(TASKS.get(cfg.task).higher_is_better)
