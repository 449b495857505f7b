"""Verdicts a person can act on: who is best, at each length, and only when the gap beats noise.

Three questions per sequence length, each answered from a comparison's rows (one per model):

- best at equal steps: the test metric after the same number of steps;
- best at equal training time: the validation metric every model had reached by T, the shortest
  finished run's training time (read off the evaluation curves, evaluation time excluded);
- fastest to train: training tokens/s, with its spread.

A winner is named only when its interval does not overlap any other model's; otherwise the line
says "tie: A, B (within noise)", naming every model whose interval overlaps the best one's. When
no model beats the task's baseline by a clear margin (the interval's worse end MARGIN better than
the baseline), the verdict says so and names the budget knob to raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from seqarena.stats import overlap

MARGIN = 0.10  # "a clear margin": 10 % of the baseline's value, beyond the interval's worse end


@dataclass(frozen=True)
class Entry:
    """One model's figure in a verdict: its value and the interval around it."""

    model: str
    value: float | None
    interval: tuple[float, float] | None  # None: the noise is unknown (never a clear winner)


@dataclass(frozen=True)
class Verdict:
    seq_len: int
    question: str  # "steps", "time", "speed" or "baseline"
    winner: str | None  # named only when its interval overlaps no other's
    tied: tuple[str, ...]  # the best and every model within noise of it (empty for a winner)
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq_len": self.seq_len, "question": self.question, "winner": self.winner,
                "tied": list(self.tied), "text": self.text}


def rank(entries: Sequence[Entry], higher_is_better: bool) -> tuple[str | None, tuple[str, ...]]:
    """(winner, ()) when the best entry's interval overlaps no other's, else (None, tied)."""
    scored = [e for e in entries if e.value is not None]
    if not scored:
        return None, ()
    scored.sort(key=lambda e: -e.value if higher_is_better else e.value)
    best = scored[0]
    close = [e.model for e in scored[1:] if overlap(best.interval, e.interval)]
    if not close and len(scored) > 1 and best.interval is not None:
        return best.model, ()
    if len(scored) == 1:
        return (best.model, ()) if best.interval is not None else (None, (best.model,))
    return None, (best.model, *close)


def clear_of_baseline(entry: Entry, baseline: float, higher_is_better: bool) -> bool:
    """Whether the entry's worse interval end beats the baseline by MARGIN of its value."""
    if entry.value is None:
        return False
    low, high = entry.interval or (entry.value, entry.value)
    if higher_is_better:
        return low > baseline + MARGIN * abs(baseline)
    return high < baseline - MARGIN * abs(baseline)


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


def _figure(e: Entry) -> str:
    ci = f" [{_fmt(e.interval[0])}, {_fmt(e.interval[1])}]" if e.interval else ""
    return f"{e.model} {_fmt(e.value)}{ci}"


def line(seq_len: int, question: str, title: str, entries: Sequence[Entry],
         higher_is_better: bool, unit: str) -> Verdict:
    """One verdict line, e.g. "L=50, equal steps: gru mse 0.0021 [0.0019, 0.0023], then ..."."""
    winner, tied = rank(entries, higher_is_better)
    order = sorted((e for e in entries if e.value is not None),
                   key=lambda e: -e.value if higher_is_better else e.value)
    if not order:
        return Verdict(seq_len, question, None, (), f"L={seq_len}, {title}: no finished run")
    if winner:
        rest = f"; runner-up {_figure(order[1])}" if len(order) > 1 else ""
        head = _figure(order[0]).split(" ", 1)[1]
        return Verdict(seq_len, question, winner, (),
                       f"L={seq_len}, {title}: {winner}, {unit} {head}{rest}")
    figures = ", ".join(_figure(e) for e in order if e.model in tied)
    return Verdict(seq_len, question, None, tied,
                   f"L={seq_len}, {title}: tie: {', '.join(tied)} (within noise; {unit} {figures})")


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
                   f"L={seq_len}: no model beats the baseline ({name} {_fmt(base)}) by a clear "
                   f"margin ({MARGIN:.0%}); the task is not learned at this budget: raise {knob}")


def verdicts(rows: Sequence[dict[str, Any]], knob: str) -> list[Verdict]:
    """Every length's verdicts from compare's rows (see compare.aggregate)."""
    out: list[Verdict] = []
    for L in sorted({r["seq_len"] for r in rows}):
        at = [r for r in rows if r["seq_len"] == L]
        metric, higher = at[0]["metric_name"] or "metric", at[0]["higher_is_better"]
        steps = [Entry(r["model"], r["metric"], _pair(r["metric_ci"])) for r in at]
        out.append(line(L, "steps", "best at equal steps", steps, higher, f"test {metric}"))
        T = at[0].get("equal_time_s")
        timed = [Entry(r["model"], r.get("metric_at_time"), _pair(r.get("metric_at_time_ci")))
                 for r in at]
        title = f"best at equal training time ({T:.1f} s)" if T else ""
        if T and all(e.value is None for e in timed):
            out.append(Verdict(L, "time", None, (), f"L={L}, {title}: no model was evaluated by "
                               f"then (set eval_every lower in a --config file)"))
        elif T:
            out.append(line(L, "time", title, timed, higher, f"val {metric}"))
        speed = [Entry(r["model"], r["train_tokens_per_s"], _pair(r["train_tokens_per_s_spread"]))
                 for r in at]
        out.append(line(L, "speed", "fastest to train", speed, True, "train tokens/s"))
        base = baseline_verdict(L, steps, at[0].get("baselines") or {}, metric, higher, knob)
        if base:
            out.append(base)
    return out


def _pair(x) -> tuple[float, float] | None:
    return (float(x[0]), float(x[1])) if x is not None else None
