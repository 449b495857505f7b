"""Generated memory tasks: copy, adding, selective copy, multi-query associative recall.

Each probes one thing a sequence model must do over a distance, with a known answer and a
baseline that a model with no memory reaches:
- copy: Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks", section 4.1
  (after Hochreiter & Schmidhuber 1997): recall 10 symbols after a delay of T blanks.
- adding: Hochreiter & Schmidhuber 1997, "Long Short-Term Memory", experiment 4, in the form of
  Le, Jaitly & Hinton 2015 and Arjovsky et al. 2016: values in [0, 1), one marker in each half.
- selective-copy: Gu & Dao 2023, "Mamba", section 3.1 and appendix E.1: recall the tokens that
  sit at random positions among noise, so the spacing is not fixed.
- mqar: Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language Models",
  section 3: key-value pairs, then the keys again as queries, each to be answered by its value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqarena.errors import ConfigError
from seqarena.tasks.base import (IGNORE, Batch, GeneratedConfig, GeneratedTask, PoolHead,
                                 TokenHead, register_task, squared_error_sums, token_sums)

# B batch (n when generating), L length, D model width, V vocabulary


def distinct_sorted(rng: np.random.Generator, n: int, high: int, k: int) -> np.ndarray:
    """(n, k) rows of k distinct integers from [0, high), each row ascending."""
    return np.sort(np.argsort(rng.random((n, high)), axis=1)[:, :k], axis=1)


def as_batch(x: np.ndarray, y: np.ndarray) -> Batch:
    return Batch(torch.from_numpy(x).long(), torch.from_numpy(y).long())


class TokenTask(GeneratedTask):
    """Tokens in, one prediction per position out; positions with target IGNORE carry no loss."""

    head_kind = "tokens"
    metric_name = "accuracy"
    higher_is_better = True

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def make_embedding(self, d_model: int) -> nn.Module:
        return nn.Embedding(self.vocab_size, d_model)

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        return TokenHead(d_model, self.vocab_size)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(pred.flatten(0, 1), batch.y.flatten(), ignore_index=IGNORE)

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[float, float]]:
        return token_sums(model(batch), batch.y)


# --- copy ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CopyConfig(GeneratedConfig):
    delay: int = 0  # T, steps from the last symbol to the delimiter; 0: seq_len - 2 * copy_len
    copy_len: int = 10  # symbols to memorise and then recall (10 in Arjovsky et al.)
    alphabet: int = 8  # distinct symbols (8 in Arjovsky et al.); a blank and a delimiter are added

    zero_ok = ("delay",)

    def validate(self) -> None:
        super().validate()
        c = self.copy_len
        self.need_seq_len("copy", 2 * c + 1, f"{c} symbols, the delimiter, {c} recalls")
        if self.delay and self.delay + 2 * c != self.seq_len:
            raise ConfigError(f"task 'copy': delay={self.delay} with copy_len={c} makes sequences "
                              f"of {self.delay + 2 * c}, not seq_len={self.seq_len}; set seq_len="
                              f"{self.delay + 2 * c}, or delay=0 to derive the delay from seq_len")


@register_task("copy")
class Copy(TokenTask):
    """Inputs: c symbols, T-1 blanks, a delimiter, c blanks. Targets: blanks, then the c symbols.

    Loss and cross-entropy are over all L = T + 2c positions, as in Arjovsky et al.; accuracy is
    over the c recalled symbols, the part that needs memory.
    """

    config_cls = CopyConfig
    summary = "recall a sequence of symbols after a delay of T blanks (Arjovsky et al. 2016)"

    @property
    def vocab_size(self) -> int:
        return self.config.alphabet + 2  # 0 blank, 1..alphabet symbols, alphabet + 1 delimiter

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        L, c = self.config.seq_len, self.config.copy_len
        symbols = rng.integers(1, self.config.alphabet + 1, size=(n, c))
        x = np.zeros((n, L), dtype=np.int64)
        x[:, :c] = symbols
        x[:, L - c - 1] = self.config.alphabet + 1  # the delimiter: "recall now"
        y = np.zeros((n, L), dtype=np.int64)
        y[:, L - c:] = symbols
        return as_batch(x, y)

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[float, float]]:
        logits = model(batch)  # (B, L, V)
        c = self.config.copy_len
        return {"cross_entropy": token_sums(logits, batch.y)["cross_entropy"],
                "accuracy": token_sums(logits[:, -c:], batch.y[:, -c:])["accuracy"]}

    def baselines(self) -> dict[str, float]:
        # No memory: blanks are certain, each recalled symbol is a uniform guess among `alphabet`.
        c, L, a = self.config.copy_len, self.config.seq_len, self.config.alphabet
        return {"memoryless_cross_entropy": c * math.log(a) / L, "memoryless_accuracy": 1 / a}


# --- adding --------------------------------------------------------------------------------

@dataclass(frozen=True)
class AddingConfig(GeneratedConfig):
    def validate(self) -> None:
        super().validate()
        self.need_seq_len("adding", 2, "one marker in each half")


@register_task("adding")
class Adding(GeneratedTask):
    """Two features per step, (value, marker); the target is the sum of the two marked values."""

    config_cls = AddingConfig
    summary = "sum the two marked values of a long sequence (Hochreiter & Schmidhuber 1997)"
    metric_name = "mse"
    higher_is_better = False
    head_kind = "regress"

    def make_embedding(self, d_model: int) -> nn.Module:
        return nn.Linear(2, d_model)

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        return PoolHead(d_model, 1, causal, squeeze=True)

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        L, half, rows = self.config.seq_len, self.config.seq_len // 2, np.arange(n)
        x = np.zeros((n, L, 2), dtype=np.float32)
        x[..., 0] = rng.random((n, L))
        first, second = rng.integers(0, half, n), rng.integers(half, L, n)
        x[rows, first, 1] = x[rows, second, 1] = 1.0
        y = x[rows, first, 0] + x[rows, second, 0]
        return Batch(torch.from_numpy(x), torch.from_numpy(y))

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.mse_loss(pred, batch.y)

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[float, float]]:
        return squared_error_sums(model(batch), batch.y)

    def baselines(self) -> dict[str, float]:
        # Always answering 1, the mean of the sum of two U(0, 1): MSE = Var = 2 / 12.
        return {"predict_one_mse": 1 / 6}


# --- selective copy ------------------------------------------------------------------------

@dataclass(frozen=True)
class SelectiveCopyConfig(GeneratedConfig):
    copy_len: int = 16  # tokens to memorise, scattered among noise (16 in the Mamba paper)
    alphabet: int = 16  # distinct tokens (16 in the Mamba paper); noise and a recall cue are added

    def validate(self) -> None:
        super().validate()
        c = self.copy_len
        self.need_seq_len("selective-copy", 2 * c, f"room for {c} tokens, then {c} recalls")


@register_task("selective-copy")
class SelectiveCopy(TokenTask):
    """Inputs: c tokens at random positions among noise in the first L - c positions, then c
    recall cues. Targets: the c tokens in order at the cues; nothing elsewhere."""

    config_cls = SelectiveCopyConfig
    summary = "recall the tokens scattered among noise, in order (Gu & Dao 2023, Mamba)"

    @property
    def vocab_size(self) -> int:
        return self.config.alphabet + 2  # 0 noise, 1..alphabet tokens, alphabet + 1 recall cue

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        L, c = self.config.seq_len, self.config.copy_len
        region = L - c
        where = distinct_sorted(rng, n, region, c)  # (n, c) positions of the tokens
        tokens = rng.integers(1, self.config.alphabet + 1, size=(n, c))
        x = np.zeros((n, L), dtype=np.int64)
        x[np.arange(n)[:, None], where] = tokens
        x[:, region:] = self.config.alphabet + 1
        y = np.full((n, L), IGNORE, dtype=np.int64)
        y[:, region:] = tokens
        return as_batch(x, y)

    def baselines(self) -> dict[str, float]:
        return {"chance_accuracy": 1 / self.config.alphabet}


# --- multi-query associative recall --------------------------------------------------------

@dataclass(frozen=True)
class MQARConfig(GeneratedConfig):
    pairs: int = 8  # key-value pairs in the context, each queried once (Zoology: 4 to 64)
    vocab: int = 256  # keys from the lower half, values from the upper (Zoology uses 8192;
    # a smaller one keeps the output softmax cheap on a CPU without changing the task)

    def validate(self) -> None:
        super().validate()
        if self.pairs > self.vocab // 2 - 1:
            raise ConfigError(f"task 'mqar': pairs={self.pairs} needs distinct keys, and vocab="
                              f"{self.vocab} has {self.vocab // 2 - 1}; raise vocab to at least "
                              f"{2 * self.pairs + 2}")
        self.need_seq_len("mqar", 3 * self.pairs,
                          f"{self.pairs} key-value pairs, then {self.pairs} queries")


@register_task("mqar")
class MQAR(TokenTask):
    """Inputs: k1 v1 k2 v2 ... kP vP, then the P keys again in random order at random positions
    among noise. Target at each query: its key's value; nothing elsewhere. The value never
    follows its query in the input, so a bidirectional model cannot read the answer off."""

    config_cls = MQARConfig
    summary = "answer each repeated key with its value (multi-query associative recall, Zoology)"

    @property
    def vocab_size(self) -> int:
        return self.config.vocab

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        L, P, half = self.config.seq_len, self.config.pairs, self.config.vocab // 2
        rows = np.arange(n)[:, None]
        keys = np.argsort(rng.random((n, half - 1)), axis=1)[:, :P] + 1  # (n, P) distinct; 0 noise
        values = rng.integers(half, self.config.vocab, size=(n, P))
        x = np.zeros((n, L), dtype=np.int64)
        x[:, 0:2 * P:2], x[:, 1:2 * P:2] = keys, values
        where = distinct_sorted(rng, n, L - 2 * P, P) + 2 * P  # (n, P) query positions
        asked = np.argsort(rng.random((n, P)), axis=1)  # (n, P) which pair each query asks for
        x[rows, where] = np.take_along_axis(keys, asked, axis=1)
        y = np.full((n, L), IGNORE, dtype=np.int64)
        y[rows, where] = np.take_along_axis(values, asked, axis=1)
        return as_batch(x, y)

    def baselines(self) -> dict[str, float]:
        # Without recall the best guess is one of the values in the context.
        return {"context_guess_accuracy": 1 / self.config.pairs,
                "chance_accuracy": 1 / (self.config.vocab - self.config.vocab // 2)}
