"""Translate human-written dates to ISO 8601: "Mon, Nov 23, 2026" -> "2026-11-23".

A small sequence-to-sequence task with an exact answer, in the spirit of the date-normalisation
exercise of Andrew Ng's Deep Learning Specialization (attention for neural machine translation)
and of Bahdanau, Cho & Bengio 2015 ("Neural Machine Translation by Jointly Learning to Align and
Translate"). Dates run from 1969 to 2068, the range in which a two-digit year is unambiguous
(the POSIX / Python `%y` rule).

Two kinds of model can do it:
- decoder-only (any causal backbone): one sequence `source SEP answer`, a conditional language
  model trained only on the answer's characters, decoded greedily with step() (the state after
  the source is reused for every answer character);
- encoder-decoder (`seq2seq = True`): the encoder reads the source, the decoder writes the answer
  after a start token (SEP), teacher-forced in training and greedy with step() at evaluation.
The metric is exact match of the greedy answer, all 10 characters right.
"""

from __future__ import annotations

import calendar
import string
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqarena.errors import ConfigError, UserError
from seqarena.tasks.base import (Batch, GeneratedConfig, GeneratedTask, SequenceModel, TokenHead,
                                 register_task, token_sums, unwrapped)

# B batch (n when generating), L length (seq_len), T answer length, D model width, V vocabulary

FIRST_DAY, DAYS_SPANNED = date(1969, 1, 1), (date(2068, 12, 31) - date(1969, 1, 1)).days + 1
ANSWER_LEN = 10  # "YYYY-MM-DD"
MONTHS, WEEKDAYS = list(calendar.month_name)[1:], list(calendar.day_name)  # English, any locale


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


# The formats, each unambiguous: day-first numeric dates use dots, month-first ones slashes.
FORMATS: list[Callable[[date], str]] = [
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",  # 23 November 2026
    lambda d: f"{d.month:02}/{d.day:02}/{d.year % 100:02}",  # 11/23/26
    lambda d: f"{WEEKDAYS[d.weekday()][:3]}, {MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",  # November 23, 2026
    lambda d: f"{d.day:02}.{d.month:02}.{d.year}",  # 23.11.2026
    lambda d: f"{d.year}/{d.month:02}/{d.day:02}",  # 2026/11/23
    lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}",  # 23 Nov 2026
    lambda d: f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day:02}-{MONTHS[d.month - 1][:3]}-{d.year}",  # 23-Nov-2026
    lambda d: f"{d.year}{d.month:02}{d.day:02}",  # 20261123
    lambda d: f"{MONTHS[d.month - 1][:3].lower()} {d.day} {d.year}",  # nov 23 2026
    lambda d: f"{d.day} {MONTHS[d.month - 1].upper()} {d.year}",  # 23 NOVEMBER 2026
    lambda d: f"{d.month}/{d.day}/{d.year}",  # 11/23/2026
    lambda d: f"{MONTHS[d.month - 1]} {_ordinal(d.day)}, {d.year}",  # November 23rd, 2026
    lambda d: d.isoformat(),  # 2026-11-23: already ISO, to be copied
]
LONGEST_DATE = date(2021, 9, 29)  # a Wednesday in September: the longest names
MAX_SOURCE = max(len(f(LONGEST_DATE)) for f in FORMATS)

PAD, SEP = 0, 1  # SEP ends the source; the encoder-decoder's decoder also starts from it
CHARS = string.digits + string.ascii_letters + " ,./-"
VOCAB = ["<pad>", "<sep>"] + list(CHARS)
STOI = {ch: i for i, ch in enumerate(VOCAB)}


def random_dates(n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """n (written date, ISO date) pairs: uniform over days and over formats."""
    days, formats = rng.integers(0, DAYS_SPANNED, n), rng.integers(0, len(FORMATS), n)
    pairs = []
    for k, f in zip(days.tolist(), formats.tolist()):
        d = FIRST_DAY + timedelta(days=k)
        pairs.append((FORMATS[f](d), d.isoformat()))
    return pairs


def _ids(text: str) -> list[int]:
    return [STOI[ch] for ch in text]


def to_text(ids: torch.Tensor) -> str:
    return "".join(VOCAB[i] if i > SEP else "" for i in ids.tolist())


@dataclass(frozen=True)
class DatesConfig(GeneratedConfig):
    seq_len: int = 40  # L: the longest date (29 characters), SEP and the answer fit

    def validate(self) -> None:
        super().validate()
        self.need_seq_len("dates", MAX_SOURCE + ANSWER_LEN,
                          f"the longest date has {MAX_SOURCE} characters, then the separator and "
                          f"{ANSWER_LEN - 1} answer characters as inputs")


class DecoderOnlyModel(SequenceModel):
    """`source SEP answer` through a causal backbone; pred (B, T, V) read from SEP onwards."""

    def forward(self, batch: Batch) -> torch.Tensor:
        h = self.backbone(self.embedding(batch.x), mask=batch.mask)  # (B, L, D)
        at = batch.extra["answer_at"][:, None] + torch.arange(ANSWER_LEN, device=h.device)  # (B, T)
        h = h.gather(1, at[..., None].expand(-1, -1, h.shape[-1]))  # (B, T, D)
        return self.head(h)  # (B, T, V)


class EncoderDecoderModel(SequenceModel):
    """Encoder reads the source; the decoder, teacher-forced, writes the answer. (B, T, V)"""

    def forward(self, batch: Batch) -> torch.Tensor:
        src, tgt = self.embedding(batch.extra["src"]), self.embedding(batch.extra["tgt_in"])
        return self.head(self.backbone(src, tgt, src_mask=batch.extra["src_mask"]))


@register_task("dates")
class Dates(GeneratedTask):
    config_cls = DatesConfig
    summary = "written dates in 15 formats -> ISO 'YYYY-MM-DD' (seq2seq or decoder-only)"
    metric_name = "exact_match"
    higher_is_better = True
    head_kind = "seq2seq"

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        return self.encode(random_dates(n, rng))

    def encode(self, pairs: list[tuple[str, str]]) -> Batch:
        """Both layouts of (source, answer) pairs, so one batch serves either kind of model:
        x (B, L) = source SEP answer[:-1] for decoder-only; extra src/tgt_in for encoder-decoder."""
        n, L = len(pairs), self.config.seq_len
        x, src = torch.full((n, L), PAD), torch.full((n, L), PAD)
        y = torch.empty(n, ANSWER_LEN, dtype=torch.long)
        answer_at = torch.empty(n, dtype=torch.long)
        for i, (source, answer) in enumerate(pairs):
            s, a = _ids(source), _ids(answer)
            x[i, :len(s) + ANSWER_LEN] = torch.tensor(s + [SEP] + a[:-1])
            src[i, :len(s)] = torch.tensor(s)
            y[i], answer_at[i] = torch.tensor(a), len(s)
        tgt_in = torch.cat([torch.full((n, 1), SEP), y[:, :-1]], dim=1)  # (B, T) shifted right
        return Batch(x, y, x != PAD, {"src": src, "src_mask": src != PAD, "tgt_in": tgt_in,
                                      "answer_at": answer_at})

    def wrap(self, backbone: nn.Module, d_model: int | None = None) -> nn.Module:
        d = d_model or backbone.d_model
        embedding, head = nn.Embedding(len(VOCAB), d), TokenHead(d, len(VOCAB))
        if backbone.seq2seq:
            return EncoderDecoderModel(embedding, backbone, head)
        if not backbone.causal:
            raise ConfigError(f"task 'dates' needs an encoder-decoder or a causal model; "
                              f"{type(backbone).__name__} is bidirectional")
        return DecoderOnlyModel(embedding, backbone, head)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(pred.flatten(0, 1), batch.y.flatten())

    @torch.no_grad()
    def greedy(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """(B, T) answer ids decoded greedily, one step() per character."""
        model = unwrapped(model)
        try:
            if isinstance(model, EncoderDecoderModel):
                return self._greedy_encoder_decoder(model, batch)
            return self._greedy_decoder_only(model, batch)
        except NotImplementedError as e:
            raise UserError(f"task 'dates' decodes with the model's step(): {e}") from None

    def _greedy_decoder_only(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x, at = batch.x, batch.extra["answer_at"]  # (B, L), (B,) where each SEP sits
        B, L = x.shape
        out = torch.full((B, ANSWER_LEN), PAD, device=x.device)
        state, token = model.backbone.init_state(B), x[:, 0]
        for t in range(int(at.max()) + ANSWER_LEN):
            y, state = model.backbone.step(state, model.embedding(token))  # (B, D)
            guess = model.head(y).argmax(-1)  # (B,)
            k = t - at  # (B,) which answer character this step predicts, if any
            writing = (k >= 0) & (k < ANSWER_LEN)
            out[writing, k[writing]] = guess[writing]
            # Sources differ in length: each row reads its own prompt, then its own guesses.
            token = torch.where(t + 1 <= at, x[:, min(t + 1, L - 1)], guess)
        return out

    def _greedy_encoder_decoder(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        src_mask = batch.extra["src_mask"]
        memory = model.backbone.encode(model.embedding(batch.extra["src"]), src_mask)  # (B, L, D)
        state = model.backbone.init_state(len(memory), memory, src_mask)
        token = torch.full((len(memory),), SEP, device=memory.device)
        out = []
        for _ in range(ANSWER_LEN):
            y, state = model.backbone.step(state, model.embedding(token))  # (B, D)
            token = model.head(y).argmax(-1)  # (B,)
            out.append(token)
        return torch.stack(out, dim=1)

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[float, float]]:
        answer = self.greedy(model, batch)
        right = answer == batch.y  # (B, T)
        n = len(batch)
        return {"exact_match": (right.all(1).sum().item(), n),
                "char_accuracy": (right.sum().item(), right.numel()),
                "cross_entropy": token_sums(model(batch), batch.y)["cross_entropy"]}

    def translate(self, model: nn.Module, texts: list[str]) -> list[str]:
        """ISO dates for written ones, e.g. ["Nov 23, 2026"] -> ["2026-11-23"]."""
        for text in texts:
            bad = sorted(set(text) - set(CHARS))
            if bad or not 0 < len(text) <= MAX_SOURCE:
                raise UserError(f"cannot read {text!r} as a date: use 1-{MAX_SOURCE} characters "
                                f"from letters, digits and ' ,./-'")
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            answers = self.greedy(model, self.encode([(t, "0000-00-00") for t in texts]).to(device))
        finally:
            model.train(was_training)
        return [to_text(a) for a in answers]

    def baselines(self) -> dict[str, float]:
        # The best fixed answer: the most common character at each position of the val answers.
        y = self.heldout("val").y  # (N, T)
        mode = torch.mode(y, dim=0).values  # (T,)
        right = y == mode
        return {"constant_exact_match": right.all(1).float().mean().item(),
                "constant_char_accuracy": right.float().mean().item()}
