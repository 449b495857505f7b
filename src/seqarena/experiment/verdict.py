"""Verdicts a person can act on: who is best, at each length, and only when a paired test says so.

Three questions per sequence length:

- best at equal steps: the test metric after the same number of steps;
- best at equal training time: the validation metric every model had reached by T, the shortest
  finished run's training time (read off the evaluations, evaluation time excluded);
- fastest to train: training tokens/s, with its 25-75 % spread over the logged windows.

Every model is scored on the same examples, so "is A better than B?" is a question about the
paired difference, not about two intervals side by side: two 95 % intervals can overlap while the
difference, example by example, is clearly not zero (Koehn 2004, "Statistical significance tests
for machine translation evaluation"; Dror et al. 2018). The best model by its point estimate is
tested against every other one by a paired bootstrap over the shared examples (with several seeds,
over the seeds too, paired by seed); the family of tests is corrected by Holm's step-down method,
and the best is named only when it is separated from every other model. Otherwise the line says
"tie", naming the models it could not separate. Corpus metrics (chrF, BLEU) are not means over
examples: sacrebleu's own paired bootstrap tests them.

Throughput has no shared examples: its winner must have a spread clear of every other one's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from seqarena.stats import LEVEL, RESAMPLES, SEED, overlap

if TYPE_CHECKING:
    from seqarena.tasks.base import ExampleScores

ALPHA = 1 - LEVEL  # the family-wise error rate of one verdict's tests
MARGIN = 0.10  # "a clear margin" over a baseline: 10 % of its value, beyond the interval's end
CORPUS_RESAMPLES = 1000  # sacrebleu's default for --paired-bs


@dataclass(frozen=True)
class Paired:
    """One paired test: `a` minus `b` of the metric, its 95 % interval and its p-value."""

    a: str
    b: str
    diff: float
    interval: tuple[float, float]
    p: float  # two-sided bootstrap p-value of "no difference"
    p_holm: float = 1.0  # after Holm's correction over the verdict's family of tests
    separated: bool = False  # p_holm < ALPHA


def bootstrap_p(distribution: np.ndarray) -> float:
    """Two-sided p-value of a zero difference from the bootstrap distribution of the difference:
    twice the share of resamples on the far side of zero (the test the percentile interval
    inverts), with the +1 that keeps it above zero for a finite number of resamples."""
    d = np.asarray(distribution, dtype=float)
    d = d[np.isfinite(d)]
    if not len(d):
        return 1.0
    tail = min((d <= 0).sum(), (d >= 0).sum())
    return float(min(1.0, 2 * (tail + 1) / (len(d) + 1)))


def paired_examples(a: Sequence[ExampleScores], b: Sequence[ExampleScores], metric: str,
                    names: tuple[str, str] = ("a", "b"), resamples: int = RESAMPLES,
                    seed: int = SEED) -> Paired | None:
    """metric(a) - metric(b) on the same examples, by a paired bootstrap: one seed each, the
    examples resampled with the same indices for both (scipy.stats.bootstrap, paired); several
    seeds (a[i] and b[i] trained with the same seed), the seeds resampled first, then each drawn
    seed's examples, the same draws for both. None when they were not scored on the same
    examples."""
    from scipy import stats

    if not a or len(a) != len(b) or any(len(x) != len(y) or not len(x) for x, y in zip(a, b)):
        return None
    observed = (np.mean([x.metrics()[metric] for x in a])
                - np.mean([y.metrics()[metric] for y in b]))
    if not np.isfinite(observed):
        return None
    if len(a) == 1:
        x, y = a[0], b[0]

        def statistic(index: np.ndarray) -> float:
            index = index.astype(np.int64)
            return x.metrics(index)[metric] - y.metrics(index)[metric]

        res = stats.bootstrap((np.arange(len(x)),), statistic, n_resamples=resamples,
                              vectorized=False, confidence_level=LEVEL, method="percentile",
                              rng=np.random.default_rng(seed))
        dist = res.bootstrap_distribution
    else:
        rng = np.random.default_rng(seed)
        dist = np.empty(resamples)
        for r in range(resamples):
            drawn = rng.integers(len(a), size=len(a))
            diffs = []
            for i in drawn:
                index = rng.integers(len(a[i]), size=len(a[i]))
                diffs.append(a[i].metrics(index)[metric] - b[i].metrics(index)[metric])
            dist[r] = np.mean(diffs)
    finite = dist[np.isfinite(dist)]
    if not len(finite):
        return None
    low, high = np.quantile(finite, [ALPHA / 2, 1 - ALPHA / 2])
    return Paired(names[0], names[1], float(observed), (float(low), float(high)),
                  bootstrap_p(finite))


def paired_corpus(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]],
                  references: Sequence[Sequence[str]], metric: str,
                  names: tuple[str, str] = ("a", "b"),
                  resamples: int = CORPUS_RESAMPLES) -> Paired | None:
    """metric(a) - metric(b) of a corpus metric ("chrf" or "bleu") by sacrebleu's paired
    bootstrap (`--paired-bs`). Several seeds: each system's seeds are one corpus, seed after seed,
    against the references repeated, so a resample draws (seed, sentence) pairs for both alike."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    scorer = {"chrf": CHRF, "bleu": BLEU}.get(metric)
    if scorer is None or not a or len(a) != len(b) or len(a) != len(references):
        return None
    hyp_a = [h for seed in a for h in seed]
    hyp_b = [h for seed in b for h in seed]
    refs = [r for seed in references for r in seed]
    if not refs or len(hyp_a) != len(refs) or len(hyp_b) != len(refs):
        return None
    test = PairedTest([(names[1], hyp_b), (names[0], hyp_a)], {metric: scorer()}, [refs],
                      test_type="bs", n_samples=resamples)
    _, results = test()
    # keyed by the metric's own name ("chrF2"); the baseline (b) first, then a with its p-value
    base, other = next(v for k, v in results.items() if k != "System")
    diff = other.score - base.score
    # sacrebleu (after multeval) counts only resampled differences strictly above the observed
    # one, so a system against itself gets p = 1 / (n + 1); a zero difference separates nothing
    p = 1.0 if diff == 0 else float(other.p_value)
    # sacrebleu gives each system's interval (mean +- ci over the resamples), not the
    # difference's; the difference's half-width is bounded by the sum of the two
    half = other.ci + base.ci
    return Paired(names[0], names[1], float(diff), (float(diff - half), float(diff + half)), p)


def holm(tests: list[Paired]) -> list[Paired]:
    """The tests with Holm-adjusted p-values (statsmodels) and whether each one separates."""
    from dataclasses import replace

    from statsmodels.stats.multitest import multipletests

    if not tests:
        return []
    reject, adjusted, _, _ = multipletests([t.p for t in tests], alpha=ALPHA, method="holm")
    return [replace(t, p_holm=float(p), separated=bool(r))
            for t, p, r in zip(tests, adjusted, reject)]


@dataclass(frozen=True)
class Entry:
    """One model's figure in a verdict: its value and the interval around it."""

    model: str
    value: float | None
    interval: tuple[float, float] | None  # None: the noise is unknown


@dataclass(frozen=True)
class Verdict:
    seq_len: int
    question: str  # "steps", "time", "speed" or "baseline"
    winner: str | None  # named only when the test separates it from every other model
    tied: tuple[str, ...]  # the best and every model it could not be separated from
    text: str
    tests: tuple[Paired, ...] = ()  # the best against each other model, Holm-corrected

    def as_dict(self) -> dict:
        return {"seq_len": self.seq_len, "question": self.question, "winner": self.winner,
                "tied": list(self.tied), "text": self.text,
                "tests": [t.__dict__ | {"interval": list(t.interval)} for t in self.tests]}


def ordered(entries: Sequence[Entry], higher_is_better: bool) -> list[Entry]:
    """The entries with a value, best first."""
    return sorted((e for e in entries if e.value is not None),
                  key=lambda e: -e.value if higher_is_better else e.value)


def decide(order: list[Entry], tests: list[Paired]) -> tuple[str | None, tuple[str, ...]]:
    """(winner, ()) when the best is separated from every other entry by its tests (which must
    cover every other entry), else (None, the best and those it was not separated from)."""
    if not order:
        return None, ()
    best = order[0].model
    by_other = {t.b: t for t in tests}
    close = [e.model for e in order[1:] if e.model not in by_other
             or not by_other[e.model].separated]
    if len(order) == 1:
        return None, (best,)
    return (best, ()) if not close else (None, (best, *close))


def decide_by_spread(order: list[Entry]) -> tuple[str | None, tuple[str, ...]]:
    """As decide(), for figures without shared examples (throughput): the best must have a
    known spread clear of every other one's."""
    if not order:
        return None, ()
    best = order[0]
    close = [e.model for e in order[1:] if overlap(best.interval, e.interval)]
    if len(order) > 1 and not close and best.interval is not None:
        return best.model, ()
    return None, (best.model, *close)


def fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


def figure(e: Entry) -> str:
    ci = f" [{fmt(e.interval[0])}, {fmt(e.interval[1])}]" if e.interval else ""
    return f"{e.model} {fmt(e.value)}{ci}"


def line(seq_len: int, question: str, title: str, order: list[Entry], winner: str | None,
         tied: tuple[str, ...], unit: str, tests: Sequence[Paired] = (),
         how: str = "") -> Verdict:
    """One verdict line, e.g. "L=50, best at equal steps: gru, test mse 0.0021 [...]; ..."."""
    if not order:
        return Verdict(seq_len, question, None, (), f"L={seq_len}, {title}: no finished run")
    if winner:
        rest = f"; runner-up {figure(order[1])}" if len(order) > 1 else ""
        head = figure(order[0]).split(" ", 1)[1]
        return Verdict(seq_len, question, winner, (),
                       f"L={seq_len}, {title}: {winner}, {unit} {head}{rest}{how}", tuple(tests))
    figures = ", ".join(figure(e) for e in order if e.model in tied)
    why = "no other model has a value" if len(order) == 1 else "not separated"
    return Verdict(seq_len, question, None, tied,
                   f"L={seq_len}, {title}: tie: {', '.join(tied)} ({why}; {unit} {figures})"
                   f"{how}", tuple(tests))


def clear_of_baseline(entry: Entry, baseline: float, higher_is_better: bool) -> bool:
    """Whether the entry's worse interval end beats the baseline by MARGIN of its value."""
    if entry.value is None:
        return False
    low, high = entry.interval or (entry.value, entry.value)
    if higher_is_better:
        return low > baseline + MARGIN * abs(baseline)
    return high < baseline - MARGIN * abs(baseline)


def baseline_verdict(seq_len: int, entries: Sequence[Entry], baselines: dict[str, float],
                     metric: str, higher_is_better: bool, knob: str) -> Verdict | None:
    """The "nobody learned it" line, or None when some model clears the strongest baseline."""
    mine = {k: v for k, v in baselines.items() if k.endswith(metric)}
    if not mine:
        return None
    name, base = (max if higher_is_better else min)(mine.items(), key=lambda kv: kv[1])
    if any(clear_of_baseline(e, base, higher_is_better) for e in entries):
        return None
    return Verdict(seq_len, "baseline", None, (),
                   f"L={seq_len}: no model beats the baseline ({name} {fmt(base)}) by a clear "
                   f"margin ({MARGIN:.0%}); the task is not learned at this budget: raise {knob}")
