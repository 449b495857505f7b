"""After training: one typed summary of a comparison, built once, which every view only renders.

    results (one RunResult per model, length and seed) + the task's metric and baselines
        -> Summary: what was held equal, the sizes, the lr search, one Row per (model, L) with its
           interval, the paired tests, the verdicts, the failed runs, and what the intervals cover

"Best" is decided here, by the verdicts, and nowhere else: the terminal table, the HTML page and
the charts show what a verdict named and highlight nothing on a tie. The metric's name, direction
and baselines are the task's, never a run's, so a failed run changes nothing about the others.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from seqarena.experiment import verdict as v
from seqarena.results import Failed, Row, RunResult, Summary
from seqarena.stats import seeds_interval, spread, values_interval
from seqarena.training.train import window_rates


@dataclass(frozen=True)
class TaskInfo:
    """What the summary needs of the task: its metric, direction, baselines and finish()."""

    name: str
    metric_name: str
    higher_is_better: bool
    baselines: dict
    finish: Callable[[dict], dict] | None = None  # turns per-example sums into metrics
    corpus: bool = False  # the metric is scored on the whole split's outputs (chrF, BLEU)
    trained_lengths: tuple | None = None  # (shortest, longest) trained on, when tested elsewhere

    @classmethod
    def of(cls, task) -> "TaskInfo":
        from seqarena.tasks.base import Task

        corpus = type(task).evaluate_outputs is not Task.evaluate_outputs
        return cls(task.name, task.metric_name, task.higher_is_better, task.baselines(),
                   task.finish, corpus, task.trained_lengths())


def example_scores(r: RunResult, finish, which: dict | None = None):
    """A run's per-example sums as ExampleScores (the final split's, or `which`)."""
    from seqarena.tasks.base import ExampleScores

    sums = which if which is not None else r.examples
    if not sums or finish is None:
        return None
    return ExampleScores({k: np.asarray(x, dtype=float) for k, x in sums["totals"].items()},
                         {k: np.asarray(x, dtype=float) for k, x in sums["counts"].items()},
                         finish)


def at_time(r: RunResult, metric: str, T: float):
    """(value, interval, per-example sums) of the last evaluation at or before T seconds."""
    value = interval = None
    for h in r.history:
        if f"val_{metric}" in h and "train_s" in h and h["train_s"] <= T * (1 + 1e-9):
            value, interval = h[f"val_{metric}"], h.get(f"val_{metric}_ci")
    sums = [e for e in r.eval_examples if e["train_s"] <= T * (1 + 1e-9)]
    return value, interval, (sums[-1] if sums else None)


def coverage(results: Sequence[RunResult], seeds: Sequence[int]) -> str:
    """What the intervals and tests cover: the test sample, and the seeds when there are two."""
    done = [r for r in results if r.metric is not None]
    n = None
    if done and done[0].examples:
        n = len(next(iter(done[0].examples["counts"].values())))
    elif done and done[0].outputs is not None:
        n = len(done[0].outputs)
    sample = f"the test sample ({n:,} examples)" if n else "the test sample"
    if len(seeds) == 1:
        return (f"intervals and paired tests cover {sample} for one trained model per row "
                f"(seed {seeds[0]}), not training noise (seed, data order): add --seeds 0,1,2 "
                f"to include it")
    return (f"intervals and paired tests cover {len(seeds)} seeds ({', '.join(map(str, seeds))}; "
            f"paired by seed) and {sample}")


def summarize(results: list[RunResult], task: TaskInfo, knob: str,
              **context: Any) -> Summary:
    """The comparison's Summary; `context` fills held_equal, sizes, lr_search and wall_s."""
    seeds = sorted({r.seed for r in results})
    groups: dict[tuple[str, int], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.model, r.seq_len), []).append(r)
    T = {}  # the shortest finished run's training time, per length
    for r in results:
        if r.status == "ok" and r.train_s:
            T[r.seq_len] = min(T.get(r.seq_len, r.train_s), r.train_s)
    rows = [_row(model, L, sorted(rs, key=lambda r: r.seed), task, T.get(L))
            for (model, L), rs in groups.items()]
    failed = [Failed(r.model, r.seq_len, r.seed, r.status, r.stopped)
              for r in results if r.status not in ("ok",)]
    lines = []
    for L in sorted({r.seq_len for r in results}):
        at = [row for row in rows if row.seq_len == L]
        runs = {row.model: sorted((r for r in groups[row.model, L] if r.metric is not None),
                                  key=lambda r: r.seed) for row in at}
        lines += _length_verdicts(L, at, runs, task, T.get(L), knob)
    return Summary(task.name, task.metric_name, task.higher_is_better, task.baselines,
                   coverage(results, seeds), rows, [x.as_dict() for x in lines], failed,
                   equal_time_s=T, trained_lengths=list(task.trained_lengths)
                   if task.trained_lengths else None, **context)


def _row(model: str, L: int, rs: list[RunResult], task: TaskInfo, T: float | None) -> Row:
    done = [r for r in rs if r.metric is not None]
    mean = statistics.fmean(r.metric for r in done) if done else None
    ci = None
    if len(done) == 1:
        ci = done[0].metric_ci
    elif len(done) > 1:
        scores = [example_scores(r, task.finish) for r in done]
        found = seeds_interval(scores, task.metric_name) if all(scores) \
            else values_interval([r.metric for r in done])
        ci = list(found) if found else None
    timed = [at_time(r, task.metric_name, T) for r in done] if T else []
    values = [x for x, _, _ in timed if x is not None]
    at_ci = None
    if len(values) == 1:
        at_ci = timed[0][1]
    elif len(values) > 1:
        scores = [example_scores(r, task.finish, sums) for r, (_, _, sums) in zip(done, timed)]
        found = seeds_interval(scores, task.metric_name) if all(scores) \
            else values_interval(values)
        at_ci = list(found) if found else None
    ok = [r for r in rs if r.status == "ok"]
    windows = [rate for r in ok for rate in window_rates(r.history)]
    found_spread = spread(windows)
    speed = statistics.median(windows) if windows else \
        (statistics.median(r.train_tokens_per_s for r in ok) if ok else None)
    by_length = _by_length(done, task)
    return Row(model, L, rs[0].family or next((r.family for r in rs if r.family), ""),
               max(r.params for r in rs), rs[0].lr, rs[0].lr_tuned, len(rs), len(done), mean, ci,
               statistics.fmean(values) if values else None, at_ci, speed,
               list(found_spread) if found_spread else None,
               max(r.peak_mem_bytes for r in rs), statistics.fmean(r.train_s or 0.0 for r in rs),
               statistics.median(r.steps for r in rs),
               ",".join(sorted({r.status for r in rs})), by_length)


def _by_length(done: list[RunResult], task: TaskInfo) -> list | None:
    """[input length, metric, low, high] at each held-out length: the mean over seeds and its
    95 % interval (examples, and seeds with two or more), for tasks tested at other lengths."""
    scores = [example_scores(r, task.finish) for r in done]
    if not done or not all(scores) or any(r.example_lengths is None for r in done):
        return None
    lengths = np.asarray(done[0].example_lengths)
    if any(r.example_lengths != done[0].example_lengths for r in done):
        return None
    out = []
    for n in sorted(set(lengths.tolist())):
        at = np.flatnonzero(lengths == n)
        subsets = [_subset(s, at) for s in scores]
        value = float(np.mean([s.metrics()[task.metric_name] for s in subsets]))
        found = seeds_interval(subsets, task.metric_name)
        out.append([int(n), value, *(found if found else (None, None))])
    return out


def _subset(scores, index: np.ndarray):
    from seqarena.tasks.base import ExampleScores

    return ExampleScores({k: v[index] for k, v in scores.totals.items()},
                         {k: v[index] for k, v in scores.counts.items()}, scores.finish)


def _pair(x) -> tuple[float, float] | None:
    return (float(x[0]), float(x[1])) if x is not None else None


def _tests(order: list[v.Entry], runs: dict[str, list[RunResult]], task: TaskInfo,
           scores_of: Callable[[RunResult], Any]) -> list[v.Paired]:
    """The best entry against each other one, paired on the seeds both finished."""
    best = order[0].model
    tests = []
    for e in order[1:]:
        mine = {r.seed: r for r in runs[best]}
        theirs = {r.seed: r for r in runs[e.model]}
        common = sorted(set(mine) & set(theirs))
        if task.corpus:
            ok = common and all(mine[s].outputs is not None and theirs[s].outputs is not None
                                for s in common)
            test = v.paired_corpus([mine[s].outputs for s in common],
                                   [theirs[s].outputs for s in common],
                                   [mine[s].references for s in common], task.metric_name,
                                   (best, e.model)) if ok else None
        else:
            a = [scores_of(mine[s]) for s in common]
            b = [scores_of(theirs[s]) for s in common]
            test = v.paired_examples(a, b, task.metric_name, (best, e.model)) \
                if common and all(x is not None for x in a + b) else None
        if test is not None:
            tests.append(test)
    return v.holm(tests)


def _length_verdicts(L: int, at: list[Row], runs: dict[str, list[RunResult]], task: TaskInfo,
                     T: float | None, knob: str) -> list[v.Verdict]:
    metric, higher = task.metric_name or "metric", task.higher_is_better
    how = " (paired bootstrap, Holm-corrected)" if not task.corpus else \
        " (sacrebleu paired bootstrap, Holm-corrected)"
    out = []
    steps = [v.Entry(r.model, r.metric, _pair(r.metric_ci)) for r in at]
    order = v.ordered(steps, higher)
    tests = _tests(order, runs, task, lambda r: example_scores(r, task.finish)) if order else []
    winner, tied = v.decide(order, tests)
    out.append(v.line(L, "steps", "best at equal steps", order, winner, tied, f"test {metric}",
                      tests, how))
    if T:
        title = f"best at equal training time ({T:.1f} s)"
        timed = [v.Entry(r.model, r.metric_at_time, _pair(r.metric_at_time_ci)) for r in at]
        order = v.ordered(timed, higher)
        if not order:
            out.append(v.Verdict(L, "time", None, (), f"L={L}, {title}: no model was evaluated "
                                 f"by then (set eval_every lower in a --config file)"))
        else:
            def at_T(r: RunResult):
                return example_scores(r, task.finish, at_time(r, metric, T)[2])

            tests = [] if task.corpus else _tests(order, runs, task, at_T)
            winner, tied = v.decide(order, tests)
            how = " (a corpus metric: evaluations during training keep no outputs to test, so " \
                "no winner is named)" if task.corpus else \
                " (paired bootstrap on the validation examples, Holm-corrected)"
            out.append(v.line(L, "time", title, order, winner, tied, f"val {metric}", tests, how))
    speed = [v.Entry(r.model, r.train_tokens_per_s, _pair(r.train_tokens_per_s_spread))
             for r in at]
    order = v.ordered(speed, True)
    winner, tied = v.decide_by_spread(order)
    out.append(v.line(L, "speed", "fastest to train", order, winner, tied,
                      "train tokens/s [25-75 %]"))
    base = v.baseline_verdict(L, steps, task.baselines, metric, higher, knob)
    if base:
        out.append(base)
    return out


# --- the terminal table -------------------------------------------------------------------------

def table_rows(summary: Summary) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(rows, columns, headers) for seqarena.table.format_table; the verdict's winner starred."""
    better = "higher" if summary.higher_is_better else "lower"
    shown = []
    for r in summary.rows:
        metric = "-" if r.metric is None else f"{r.metric:.4g}"
        if r.metric_ci:
            metric += f" [{r.metric_ci[0]:.4g}, {r.metric_ci[1]:.4g}]"
        if summary.winner(r.seq_len) == r.model:
            metric += " *"
        speed = r.train_tokens_per_s
        spread = r.train_tokens_per_s_spread
        shown.append({"model": r.model, "L": r.seq_len, "params": r.params,
                      "lr": "-" if r.lr is None else f"{r.lr:g}{' (tuned)' if r.lr_tuned else ''}",
                      "metric": metric,
                      "tokens_per_s": "-" if speed is None else f"{speed:,.0f}" + (
                          f" [{spread[0]:,.0f}, {spread[1]:,.0f}]" if spread else ""),
                      "peak_mib": round(r.peak_mem_bytes / 2**20, 1),
                      "train_s": round(r.train_s, 1), "steps": int(r.steps), "status": r.status})
    columns = ["model", "L", "params", "lr", "metric", "tokens_per_s", "peak_mib", "train_s",
               "steps", "status"]
    headers = ["model", "L", "params", "lr",
               f"{summary.metric_name} [95 % interval] ({better} is better; * named best)",
               "train tok/s [25-75 %]", "peak MiB", "train s", "steps", "status"]
    return shown, columns, headers
