"""The serving ledger: what one request of P prompt tokens and G generated tokens costs each model,
from the bench's measured prefill and decode, and the G from which a recurrence beats attention.

A request is a prefill over the P prompt tokens, then G decode steps at positions P+1..P+G (the
step at position p reads a state holding p - 1 tokens: a KV cache that grows, or a recurrent
state that does not). Its time is the measured prefill at L = P plus the sum of the measured
per-token decode latencies over those positions; every figure is for the bench's batch of B
sequences served together.

The bench times decode at a few positions (1, 64, 256, ...), so the sum reads the latency at
the positions between them off a straight line through their neighbours, and a prefill at a P
between two measured lengths likewise; every row says which of its numbers were measured and
which interpolated. Past the last measured position (or length) nothing is computed: the row
says "beyond measured", and extrapolating is seqarena.bench.projection's job.

Pure functions over BenchResult rows: seqarena.bench.projection runs them on projected rows too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from seqarena.bench.summary import CONTEXT
from seqarena.errors import UserError
from seqarena.results import BenchResult
from seqarena.table import format_table

# P prompt tokens, G generated tokens, B batch

LEDGER_MODES = ("prefill", "decode")
ATTENTION = "attention"  # the family every other model is held against
MEASURED, INTERPOLATED, BEYOND = "measured", "interpolated", "beyond measured"


@dataclass
class LedgerRow:
    """One model serving one request shape: its time and the state it ends with."""

    model: str
    family: str
    prompt: int  # P: prompt tokens, prefilled in one call
    generated: int  # G: tokens decoded after the prompt, at positions P+1..P+G
    batch: int  # B: sequences served together; every time is for the whole batch
    prefill_s: float | None  # the prefill at L = P; None: beyond the measured lengths
    decode_s: float | None  # the sum of the G decode steps; None: beyond the measured positions
    total_s: float | None  # prefill_s + decode_s; None when either is not computed
    state_bytes: float | None  # the decoding state holding P + G tokens; None: not measured
    prefill_basis: str  # "measured", "interpolated" (between measured lengths), "beyond measured"
    decode_basis: str  # "measured" (every position timed), "interpolated", "beyond measured"
    state_basis: str  # "measured", "interpolated", "extrapolated" (a growing cache past its last
    #                   measured position, on the line through the last two), "flat" (a state
    #                   that never grew where it was measured), "not measured"
    status: str  # "ok", or "beyond measured" when prefill or decode is not computed
    cheapest: bool  # the least total_s of the models at the same P, G, B and settings
    d_model: int
    layers: int
    threads: int
    device: str
    dtype: str


@dataclass
class BreakEven:
    """For one prompt length: the G from which a model's request costs no more than attention's."""

    model: str  # the model held against attention (any family but "attention")
    family: str
    attention: str  # the attention model it is held against
    prompt: int  # P
    batch: int  # B
    generated: int | None  # least G with total <= attention's; None: never within measured range
    up_to: int | None  # the largest G both could be computed at; None: P beyond the measured
    cheaper_throughout: bool  # whether it stays no dearer from `generated` up to `up_to`
    prefill_basis: str  # "measured" when both prefills were timed at L = P, else "interpolated"
    decode_basis: str  # "measured" only when every position summed was timed (rare)
    text: str
    d_model: int
    layers: int
    threads: int
    device: str
    dtype: str


class Curves:
    """One model's measured prefill (by L) and decode (by position) in one setting, and the
    interpolations the ledger reads between them."""

    def __init__(self, prefill: list[BenchResult], decode: list[BenchResult]):
        self.family = (prefill or decode)[0].family
        prefill = sorted(prefill, key=lambda r: r.seq_len)
        decode = sorted(decode, key=lambda r: r.seq_len)
        self.lengths = np.array([r.seq_len for r in prefill], float)
        self.prefill = np.array([r.latency_s for r in prefill], float)
        self.positions = np.array([r.seq_len for r in decode], float)
        self.decode = np.array([r.latency_s for r in decode], float)
        states = [(r.seq_len, r.state_bytes) for r in decode if r.state_bytes is not None]
        self.state_positions = np.array([p for p, _ in states], float)
        self.states = np.array([s for _, s in states], float)

    def prefill_at(self, prompt: int) -> tuple[float | None, str]:
        """Seconds of the prefill at L = prompt, and whether that was measured or interpolated."""
        if not len(self.lengths) or not self.lengths[0] <= prompt <= self.lengths[-1]:
            return None, BEYOND
        seconds = float(np.interp(prompt, self.lengths, self.prefill))
        return seconds, MEASURED if prompt in self.lengths else INTERPOLATED

    def last_position(self) -> int:
        return int(self.positions[-1]) if len(self.positions) else 0

    def decode_steps(self, prompt: int, generated: int) -> tuple[np.ndarray | None, str]:
        """Seconds of each decode step at positions prompt+1..prompt+generated."""
        first, last = prompt + 1, prompt + generated
        if not len(self.positions) or first < self.positions[0] or last > self.positions[-1]:
            return None, BEYOND
        positions = np.arange(first, last + 1, dtype=float)
        steps = np.interp(positions, self.positions, self.decode)
        timed = np.isin(positions, self.positions).all()
        return steps, MEASURED if timed else INTERPOLATED

    def state_at(self, tokens: int) -> tuple[float | None, str]:
        """Bytes of the state holding `tokens` tokens (read at the decode position that many)."""
        p, s = self.state_positions, self.states
        if not len(p):
            return None, "not measured"
        if s.min() == s.max():  # a recurrent state: the same size at every position
            return float(s[0]), "flat"
        if tokens in p:
            return float(s[p == tokens][0]), MEASURED
        if p[0] <= tokens <= p[-1]:
            return float(np.interp(tokens, p, s)), INTERPOLATED
        # a KV cache grows with the tokens it holds: the line through the nearest two points
        a, b = (0, 1) if tokens < p[0] else (-2, -1)
        if len(p) < 2:
            return float(s[0] * tokens / p[0]), "extrapolated"
        slope = (s[b] - s[a]) / (p[b] - p[a])
        return float(max(0.0, s[b] + slope * (tokens - p[b]))), "extrapolated"


def curves(results: Iterable[BenchResult], batch: int | None = None
           ) -> dict[tuple, dict[str, Curves]]:
    """Each setting's (CONTEXT's values) models, with their prefill and decode curves; one
    UserError line when the run lacks a mode the ledger needs or the batch asked for."""
    results = [r for r in results if r.status == "ok" and r.impl == "seqarena"
               and r.mode in LEDGER_MODES and r.latency_s]
    for mode in LEDGER_MODES:
        if not any(r.mode == mode for r in results):
            raise UserError(f"the bench run has no {mode} results, and the serving ledger needs "
                            f"both prefill and decode; rerun `seqarena bench` with "
                            f"--modes prefill,decode")
    batches = sorted({r.batch for r in results})
    if batch is not None and batch not in batches:
        raise UserError(f"batch {batch} was not measured; the bench run has B = "
                        f"{', '.join(map(str, batches))}")
    groups: dict[tuple, dict[str, dict[str, list]]] = defaultdict(
        lambda: defaultdict(lambda: {m: [] for m in LEDGER_MODES}))
    for r in results:
        if batch is None or r.batch == batch:
            groups[tuple(getattr(r, c) for c in CONTEXT)][r.model][r.mode].append(r)
    # a model that cannot decode (not causal) or was never prefilled serves no request
    return {key: {m: Curves(rows["prefill"], rows["decode"]) for m, rows in models.items()
                  if rows["prefill"] and rows["decode"]}
            for key, models in groups.items()}


def ledger(results: Iterable[BenchResult], prompts: Iterable[int], generated: Iterable[int],
           batch: int | None = None) -> list[LedgerRow]:
    """Every model's time and final state for each request of P prompt and G generated tokens
    (every B measured, or `batch`), the cheapest marked."""
    prompts, generated = list(prompts), list(generated)
    rows = []
    for key, models in curves(results, batch).items():
        context = dict(zip(CONTEXT, key))
        for P in prompts:
            for G in generated:
                cell = [_row(model, c, P, G, context) for model, c in models.items()]
                done = [r for r in cell if r.total_s is not None]
                if done:
                    min(done, key=lambda r: r.total_s).cheapest = True
                rows += cell
    return rows


def _row(model: str, c: Curves, P: int, G: int, context: dict) -> LedgerRow:
    prefill_s, prefill_basis = c.prefill_at(P)
    steps, decode_basis = c.decode_steps(P, G)
    decode_s = None if steps is None else float(steps.sum())
    total = None if prefill_s is None or decode_s is None else prefill_s + decode_s
    state, state_basis = c.state_at(P + G)
    return LedgerRow(model, c.family, P, G, context["batch"], prefill_s, decode_s, total, state,
                     prefill_basis, decode_basis, state_basis,
                     "ok" if total is not None else BEYOND, False,
                     **{k: context[k] for k in CONTEXT if k != "batch"})


def break_even(results: Iterable[BenchResult], prompts: Iterable[int],
               batch: int | None = None) -> list[BreakEven]:
    """For each P (and B, setting) and each model outside the attention family, the least G at
    which its request costs no more than each attention model's, searched over every G up to
    the last position both measured."""
    prompts = list(prompts)
    found = []
    for key, models in curves(results, batch).items():
        context = dict(zip(CONTEXT, key))
        attention = sorted(m for m, c in models.items() if c.family == ATTENTION)
        others = sorted(m for m, c in models.items() if c.family != ATTENTION)
        for P in prompts:
            for a in attention:
                for m in others:
                    found.append(_break_even(m, models[m], a, models[a], P, context))
    return found


def _break_even(model: str, c: Curves, attention: str, ca: Curves, P: int,
                context: dict) -> BreakEven:
    def row(generated, up_to, throughout, bases, text):
        return BreakEven(model, c.family, attention, P, context["batch"], generated, up_to,
                         throughout, *bases, text,
                         **{k: context[k] for k in CONTEXT if k != "batch"})

    (pm, pm_basis), (pa, pa_basis) = c.prefill_at(P), ca.prefill_at(P)
    up_to = min(c.last_position(), ca.last_position()) - P
    if pm is None or pa is None or up_to < 1:
        return row(None, None, False, (BEYOND, BEYOND),
                   f"P={P}: beyond the measured prompt lengths or decode positions")
    steps_m, basis_m = c.decode_steps(P, up_to)
    steps_a, basis_a = ca.decode_steps(P, up_to)
    if steps_m is None or steps_a is None:
        return row(None, None, False, (BEYOND, BEYOND),
                   f"P={P}: beyond the measured decode positions")
    # totals after G = 1..up_to generated tokens
    cheaper = pm + np.cumsum(steps_m) <= pa + np.cumsum(steps_a)
    bases = (MEASURED if MEASURED == pm_basis == pa_basis else INTERPOLATED,
             MEASURED if MEASURED == basis_m == basis_a else INTERPOLATED)
    if not cheaper.any():
        return row(None, up_to, False, bases,
                   f"P={P}: {model} never costs less than {attention} within the measured "
                   f"range (G <= {up_to})")
    G = int(np.argmax(cheaper)) + 1
    throughout = bool(cheaper[G - 1:].all())
    when = "from the first token" if G == 1 else f"from G={G}"
    tail = "" if throughout else f"; not at every G after it up to {up_to}"
    return row(G, up_to, throughout, bases,
               f"P={P}: {model} costs no more than {attention} {when}{tail}")


def map_grid(results: Iterable[BenchResult]) -> tuple[list[int], list[int]]:
    """The P and G a ledger map draws: every measured prefill length, and G = 1, 2, 4, ... up
    to the last measured decode position."""
    results = [r for r in results if r.status == "ok" and r.mode in LEDGER_MODES]
    prompts = sorted({r.seq_len for r in results if r.mode == "prefill"})
    last = max((r.seq_len for r in results if r.mode == "decode"), default=1)
    generated, g = [], 1
    while g < last:
        generated.append(g)
        g *= 2
    return prompts, generated


# --- the terminal tables -------------------------------------------------------------------------

def _settings(row) -> str:
    return (f"B={row.batch}, D={row.d_model}, {row.layers} layer{'s' * (row.layers != 1)}, "
            f"{row.device} {row.dtype}, {row.threads} thread{'s' * (row.threads != 1)}")


def _basis(row: LedgerRow) -> str:
    if row.status != "ok":
        return BEYOND
    kinds = {row.prefill_basis, row.decode_basis}
    return MEASURED if kinds == {MEASURED} else f"prefill {row.prefill_basis}, decode " \
                                                f"{row.decode_basis}"


def render_text(rows: list[LedgerRow], breaks: list[BreakEven] | None = None) -> str:
    """The ledger as terminal tables, one per setting, then the break-even lines."""
    lines = []
    for setting in dict.fromkeys(_settings(r) for r in rows):
        group = [r for r in rows if _settings(r) == setting]
        table = [{"model": r.model, "P": r.prompt, "G": r.generated,
                  "prefill_ms": None if r.prefill_s is None else r.prefill_s * 1e3,
                  "decode_ms": None if r.decode_s is None else r.decode_s * 1e3,
                  "total_ms": None if r.total_s is None else r.total_s * 1e3,
                  "state_mib": None if r.state_bytes is None else r.state_bytes / 2 ** 20,
                  "state": r.state_basis, "cheapest": "<-" if r.cheapest else "",
                  "basis": _basis(r)} for r in group]
        lines += [f"serving ledger [{setting}], seconds for the whole batch:",
                  format_table(table, ["model", "P", "G", "prefill_ms", "decode_ms", "total_ms",
                                       "cheapest", "state_mib", "state", "basis"],
                               ["model", "P", "G", "prefill ms", "decode ms", "total ms", "",
                                "state MiB", "state", "times"]), ""]
    if breaks:
        lines += ["break-even G (generated tokens) against attention:"]
        lines += [f"  [{_settings(b)}] {b.text}" for b in breaks]
    return "\n".join(lines).rstrip()
