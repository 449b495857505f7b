"""dates: answers checked with datetime; decoder-only and encoder-decoder decoding by step()."""

import re
from datetime import datetime

import numpy as np
import pytest
import torch
from test_tasks_backbones import TinyBiGRU, TinyGRU, TinySeq2Seq

from seqarena.errors import ConfigError, UserError
from seqarena.tasks import make_task
from seqarena.tasks import Batch
from seqarena.tasks.dates import (ANSWER_LEN, FORMATS, MAX_SOURCE, SEP, VOCAB, DecoderOnlyModel,
                                  EncoderDecoderModel, random_dates, to_text)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

PATTERNS = ["%d %B %Y", "%m/%d/%y", "%a, %b %d, %Y", "%B %d, %Y", "%d.%m.%Y", "%Y/%m/%d",
            "%d %b %Y", "%A, %B %d, %Y", "%d-%b-%Y", "%Y%m%d", "%b %d %Y", "%m/%d/%Y", "%Y-%m-%d"]


def parse(text: str) -> set:
    """Every date that some strptime pattern reads in `text` (ordinal suffixes dropped)."""
    text = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text)
    found = set()
    for pattern in PATTERNS:
        try:
            found.add(datetime.strptime(text, pattern))
        except ValueError:
            pass
    return found


def test_answers_are_the_dates_datetime_reads_in_the_sources():
    pairs = random_dates(3000, np.random.default_rng(0))
    for source, answer in pairs:
        expected = datetime.strptime(answer, "%Y-%m-%d")
        assert expected in parse(source), source
        for name in re.findall(r"[A-Za-z]{3,}", source):  # a weekday name must be the right one
            if name[:3].lower() in {"mon", "tue", "wed", "thu", "fri", "sat", "sun"}:
                assert expected.strftime("%a").lower() == name[:3].lower(), source
        assert len(source) <= MAX_SOURCE and 1969 <= expected.year <= 2068
    sources = {}
    for source, answer in pairs:  # no written date means two different days
        assert sources.setdefault(source, answer) == answer
    shapes = {re.sub(r"\d", "9", re.sub(r"[A-Za-z]+", "A", s)) for s, _ in pairs}
    assert len(shapes) >= 12  # many formats occur


def test_longest_source_and_seq_len_minimum():
    assert MAX_SOURCE == len("Wednesday, September 29, 2021") == 29
    assert len(FORMATS) == 15
    with pytest.raises(ConfigError, match="seq_len >= 39"):
        make_task("dates", seq_len=38)


def test_batches_hold_both_layouts_of_the_same_pairs():
    task = make_task("dates")
    batch = task.encode([("Mon, Nov 23, 2026", "2026-11-23"), ("23.11.2026", "2026-11-23")])
    assert to_text(batch.y[0]) == "2026-11-23"
    n = len("Mon, Nov 23, 2026")
    assert batch.extra["answer_at"].tolist() == [n, len("23.11.2026")]
    assert batch.x[0, n] == SEP and to_text(batch.x[0, :n]) == "Mon, Nov 23, 2026"
    assert torch.equal(batch.x[0, n + 1:n + ANSWER_LEN], batch.y[0, :-1])
    assert batch.mask[0].sum() == n + ANSWER_LEN and not batch.x[0, n + ANSWER_LEN:].any()
    assert torch.equal(batch.extra["src"][0, :n], batch.x[0, :n])
    assert batch.extra["tgt_in"][0, 0] == SEP and torch.equal(batch.extra["tgt_in"][0, 1:],
                                                              batch.y[0, :-1])


def reference_greedy(model, batch):
    """Greedy decoding that re-runs the full parallel forward for every answer character."""
    batch = Batch(batch.x.clone(), torch.zeros_like(batch.y), batch.mask,
                  {k: v.clone() for k, v in batch.extra.items()})
    for k in range(ANSWER_LEN):
        pred = model(batch).argmax(-1)  # (B, T): position k only sees answer characters < k
        batch.y[:, k] = pred[:, k]
        if isinstance(model, DecoderOnlyModel):
            at = batch.extra["answer_at"]
            if k + 1 < ANSWER_LEN:
                batch.x[torch.arange(len(at)), at + 1 + k] = pred[:, k]
        else:
            if k + 1 < ANSWER_LEN:
                batch.extra["tgt_in"][:, k + 1] = pred[:, k]
    return batch.y


@pytest.mark.parametrize("backbone, kind", [(TinyGRU, DecoderOnlyModel),
                                            (TinySeq2Seq, EncoderDecoderModel)])
def test_greedy_decoding_by_step_matches_full_recomputation(backbone, kind):
    torch.manual_seed(0)
    task = make_task("dates", eval_size=16)
    model = task.wrap(backbone(16))
    assert isinstance(model, kind)
    batch = task.heldout("val").select(slice(0, 12))
    assert model(batch).shape == (12, ANSWER_LEN, len(VOCAB))
    answers = task.greedy(model, batch)
    assert len(set(answers.flatten().tolist())) > 3  # varied answers, so agreement means something
    torch.testing.assert_close(answers, reference_greedy(model, batch))


@pytest.mark.parametrize("backbone", [TinyGRU, TinySeq2Seq])
def test_evaluate_scores_exact_match_of_greedy_answers(backbone):
    torch.manual_seed(0)
    task = make_task("dates", eval_size=24)
    model = task.wrap(backbone(16))
    metrics = task.evaluate(model, "val", batch_size=10)
    assert set(metrics) == {"exact_match", "char_accuracy", "cross_entropy"}
    assert 0 <= metrics["exact_match"] <= metrics["char_accuracy"] <= 1
    answers = torch.cat([task.greedy(model, b) for b in task.batches("val", 10)])
    truth = task.heldout("val").y
    assert metrics["exact_match"] == (answers == truth).all(1).float().mean().item()
    assert len(task.translate(model, ["Nov 23, 2026", "1/2/1999"])) == 2


def test_dates_refuses_bidirectional_backbones_and_unreadable_input():
    task = make_task("dates")
    with pytest.raises(ConfigError, match="encoder-decoder or a causal model"):
        task.wrap(TinyBiGRU(16))
    with pytest.raises(UserError, match="cannot read"):
        task.translate(task.wrap(TinyGRU(16)), ["le 23 novembre \u00e0 midi"])
