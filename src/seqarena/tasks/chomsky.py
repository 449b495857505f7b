"""Train short, test long: the Chomsky-hierarchy tasks of Delétang et al.

References:
- G. Delétang, A. Ruoss, J. Grau-Moya, T. Genewein, L. K. Wenliang, E. Catt, C. Cundy, M. Hutter,
  S. Legg, J. Veness, P. A. Ortega, "Neural Networks and the Chomsky Hierarchy", ICLR 2023,
  arXiv:2207.02098: train on input lengths 1-40, test on 41-500.
- google-deepmind/neural_networks_chomsky_hierarchy, tasks/regular, tasks/dcf, tasks/cs: the
  definitions below follow its generators (inputs, outputs, output lengths, termination tokens),
  and training/utils.py `make_model_with_empty_targets`: the model reads the input, then one
  query token per output position, and is read out at the query positions only.

    task                level              input (length n)               output
    parity              regular            n bits                         count of 1s mod 2
    even-pairs          regular            n bits                         first bit != last bit
    cycle-navigation    regular            n moves in {-1, 0, +1}         final position mod 5
    modular-arithmetic  regular            d op d op ... d (n odd)        its value mod 5
    reverse-string      context-free       n bits                         the n bits reversed
    stack-manipulation  context-free       stack bits, then actions       final stack, END, pad
    duplicate-string    context-sensitive  n bits w                       w w
    binary-addition     context-sensitive  a + b, LSB first               a + b LSB first, END, pad

Every example is laid out as its n input tokens, then output_length(n) query tokens (one token id
that no input uses; the first one is the separator that says "answer now"). A class is read out
at the single query token; a string at its query tokens, one output symbol each. Training batches
draw one length per batch, as the paper does, so they need no padding; the held-out splits hold
`test_per_length` examples at every k-th test length and are served one length per batch, in
order of length, so they need no padding either (heldout() pads them into one Batch with a mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqarena.errors import ConfigError
from seqarena.tasks.base import (IGNORE, Batch, GeneratedTask, PoolHead, TaskConfig, TokenHead,
                                 chunks, register_task, split_rng, token_sums)

# B batch (n when generating), n input length, T output length, L = n + T what the model reads,
# D model width, V vocabulary of the embedding, C output classes

END = 2  # termination token of stack-manipulation and binary-addition outputs (the repo's 2)


def parse_lengths(text: str, field: str) -> tuple[int, int]:
    """"lo-hi" (or one number "n") -> (lo, hi); ConfigError naming the field otherwise."""
    lo, _, hi = str(text).strip().partition("-")
    try:
        lo, hi = int(lo), int(hi or lo)
    except ValueError:
        raise ConfigError(f"ChomskyConfig.{field} must be 'lo-hi' (e.g. '1-40'), "
                          f"got {text!r}") from None
    if not 1 <= lo <= hi:
        raise ConfigError(f"ChomskyConfig.{field} must have 1 <= lo <= hi, got {text!r}")
    return lo, hi


@dataclass(frozen=True)
class ChomskyConfig(TaskConfig):
    seq_len: int = 0  # longest sequence a model reads: input + query tokens; 0 derives it
    train_lens: str = "1-40"  # input lengths n of training, "lo-hi"; each batch draws one n
    test_lens: str = "41-500"  # input lengths of the val and test splits (the paper's 41-500)
    test_per_length: int = 8  # held-out examples at each test length (the paper: 512)
    test_lengths_step: int = 10  # test every k-th length from lo, and hi: 41, 51, ..., 491, 500

    zero_ok = ("seq_len",)
    output_scale: ClassVar[int] = 0  # output tokens per input token (0: a class, one query)
    output_extra: ClassVar[int] = 1  # output tokens besides those: the class, or END

    def validate(self) -> None:
        super().validate()
        (_, train_hi), (_, test_hi) = self.train_range, self.test_range
        need = max(train_hi, test_hi)
        need += self.output_length(need)
        if self.seq_len == 0:  # frozen: the derived value is written once, here
            object.__setattr__(self, "seq_len", need)
        elif self.seq_len < need:
            raise ConfigError(f"ChomskyConfig.seq_len={self.seq_len} is shorter than the longest "
                              f"example ({need} tokens: input and its queries); set seq_len={need} "
                              f"or 0 to derive it")

    @property
    def train_range(self) -> tuple[int, int]:
        return parse_lengths(self.train_lens, "train_lens")

    @property
    def test_range(self) -> tuple[int, int]:
        return parse_lengths(self.test_lens, "test_lens")

    def test_lengths(self) -> list[int]:
        """Every test_lengths_step-th length from lo, and hi, so the range's end is tested."""
        lo, hi = self.test_range
        return sorted(set(range(lo, hi + 1, self.test_lengths_step)) | {hi})

    def output_length(self, n: int) -> int:
        """Query tokens after an input of n tokens (the repo's output_length)."""
        return self.output_scale * n + self.output_extra


@dataclass(frozen=True)
class StringConfig(ChomskyConfig):
    output_scale = 1  # reverse-string: T = n
    output_extra = 0


@dataclass(frozen=True)
class TerminatedConfig(ChomskyConfig):
    output_scale = 1  # stack-manipulation, binary-addition: T = n + 1, room for END
    output_extra = 1


@dataclass(frozen=True)
class DuplicateConfig(ChomskyConfig):
    output_scale = 2  # duplicate-string: T = 2n
    output_extra = 0


class ChomskyTask(GeneratedTask):
    """Input tokens, then query tokens; a seeded generator per length; held-out splits by length."""

    config_cls = ChomskyConfig
    metric_name = "accuracy"
    higher_is_better = True
    chomsky: ClassVar[str]  # level in the hierarchy: "regular", "context-free", "context-sensitive"
    chance_accuracy: ClassVar[float]  # a uniform guess: per sequence (a class) or per output symbol
    input_vocab: ClassVar[int]  # input token ids 0..input_vocab-1; the query token is input_vocab
    n_classes: ClassVar[int]  # C, output symbols (classes, or the output string's alphabet)

    def generate(self, n: int, length: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n examples of input length `length`: inputs (n, length) and outputs (n,) or (n, T)."""
        raise NotImplementedError

    def make_embedding(self, d_model: int) -> nn.Module:
        return nn.Embedding(self.input_vocab + 1, d_model)  # + the query token

    def sample(self, n: int, rng: np.random.Generator, length: int | None = None) -> Batch:
        """n examples of one input length: `length`, or one drawn uniformly from train_lens."""
        if length is None:
            lo, hi = self.config.train_range
            length = int(rng.integers(lo, hi + 1))
        inputs, outputs = self.generate(n, length, rng)
        T = self.config.output_length(length)
        x = np.concatenate([inputs, np.full((n, T), self.input_vocab)], axis=1)  # (n, length + T)
        # the inputs may be shorter than asked (modular-arithmetic keeps its length odd), so the
        # batch records the length asked for: the x axis of a length-generalisation curve
        return Batch(torch.from_numpy(x).long(), self.targets(outputs, inputs.shape[1]),
                     extra={"length": torch.full((n,), length, dtype=torch.long)})

    def targets(self, outputs: np.ndarray, n_in: int) -> torch.Tensor:
        raise NotImplementedError

    def batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        self.check_split(split)
        if split == "train":
            return self._stream(batch_size, split_rng(self.config.seed, "train", seed))
        return (b for group in self._groups(split) for b in chunks(group, batch_size))

    def _groups(self, split: str) -> list[Batch]:
        """The held-out split as one Batch per test length, in order of length."""
        cache = self.__dict__.setdefault("_by_length", {})
        if split not in cache:
            rng = split_rng(self.config.seed, split)
            cache[split] = [self.sample(self.config.test_per_length, rng, length)
                            for length in self.config.test_lengths()]
        return cache[split]

    def heldout(self, split: str) -> Batch:
        """The whole held-out split in one Batch, padded on the right, mask True at real tokens;
        its examples in the order batches(split) serves them."""
        groups = self._groups(split)
        width = max(g.x.shape[1] for g in groups)
        pad = lambda t, value: F.pad(t, (0, width - t.shape[1]), value=value)  # noqa: E731
        x = torch.cat([pad(g.x, 0) for g in groups])  # (N, width)
        mask = torch.cat([pad(torch.ones_like(g.x, dtype=torch.bool), False) for g in groups])
        y = torch.cat([pad(g.y, IGNORE) if g.y.ndim == 2 else g.y for g in groups])
        return Batch(x, y, mask, {"length": torch.cat([g.extra["length"] for g in groups])})

    def example_lengths(self, split: str) -> np.ndarray:
        """(N,) the input length of every held-out example, in the order evaluate_examples()
        scores them, so per-example results can be grouped into accuracy per length."""
        return torch.cat([g.extra["length"] for g in self._groups(split)]).numpy()

    def trained_lengths(self) -> tuple[int, int]:
        return self.config.train_range

    def baselines(self) -> dict[str, float]:
        return {"chance_accuracy": self.chance_accuracy}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "chomsky": self.chomsky,
                "test_lengths": self.config.test_lengths()}


class ClassifyTask(ChomskyTask):
    """One class per sequence, read out at the query token after the input."""

    head_kind = "classify"

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        # the query token is the last real position: read there for causal and bidirectional
        # models alike, as the repo reads its output token (a mean would blur it with the input)
        return PoolHead(d_model, self.n_classes, causal=True)

    def targets(self, outputs: np.ndarray, n_in: int) -> torch.Tensor:
        return torch.from_numpy(outputs).long()  # (n,)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(pred, batch.y)

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[Any, Any]]:
        return token_sums(model(batch), batch.y)  # (B,) sums: each example counts once


class TransduceTask(ChomskyTask):
    """An output string, one symbol per query token; loss and score only at the query tokens."""

    head_kind = "tokens"
    config_cls = StringConfig
    terminated: ClassVar[bool] = False  # True: the output ends in END, then padding zeros

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        return TokenHead(d_model, self.n_classes)

    def targets(self, outputs: np.ndarray, n_in: int) -> torch.Tensor:
        n, T = outputs.shape
        y = np.full((n, n_in + T), IGNORE, dtype=np.int64)  # no target at the input tokens
        y[:, n_in:] = outputs
        return torch.from_numpy(y)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        # every query position, the padding after END included, as the repo's loss
        return F.cross_entropy(pred.flatten(0, 1), batch.y.flatten(), ignore_index=IGNORE)

    def scored(self, y: torch.Tensor) -> torch.Tensor:
        """(B, L) True at the positions accuracy counts: the repo's accuracy_mask, which stops
        at the first END, so that the trivial padding after it does not inflate the score."""
        keep = y != IGNORE
        if self.terminated:
            end = (y == END).long()
            keep &= (end.cumsum(1) - end) == 0  # no END strictly before this position
        return keep

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[Any, Any]]:
        logits = model(batch)  # (B, L, C)
        keep = self.scored(batch.y)
        right = (logits.argmax(-1) == batch.y) | ~keep  # (B, L)
        ones = torch.ones(len(batch), dtype=torch.float64, device=logits.device)
        return {"cross_entropy": token_sums(logits, batch.y)["cross_entropy"],
                "accuracy": token_sums(logits, batch.y.masked_fill(~keep, IGNORE))["accuracy"],
                "sequence_accuracy": (right.all(1).double(), ones)}


def bits(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    return rng.integers(0, 2, size=(n, length))


# --- regular ---------------------------------------------------------------------------------

@register_task("parity")
class Parity(ClassifyTask):
    """Inputs: n bits. Class: the number of 1s mod 2 (repo: tasks/regular/parity_check.py)."""

    summary = "count of 1s mod 2 of a bit string; train short, test long (Deletang et al. 2023)"
    chomsky, input_vocab, n_classes, chance_accuracy = "regular", 2, 2, 1 / 2

    def generate(self, n, length, rng):
        x = bits(rng, n, length)
        return x, x.sum(1) % 2


@register_task("even-pairs")
class EvenPairs(ClassifyTask):
    """Inputs: n bits. Class: 1 if the count of '01' and '10' pairs is odd, which is exactly
    when the first bit differs from the last (repo: tasks/regular/even_pairs.py)."""

    summary = "is the number of 01 and 10 pairs odd (first bit != last bit) (Deletang et al.)"
    chomsky, input_vocab, n_classes, chance_accuracy = "regular", 2, 2, 1 / 2

    def generate(self, n, length, rng):
        x = bits(rng, n, length)
        return x, (x[:, 1:] != x[:, :-1]).sum(1) % 2


@register_task("cycle-navigation")
class CycleNavigation(ClassifyTask):
    """Inputs: n moves, tokens 0, 1, 2 for -1, stay, +1, on a cycle of 5 from position 0. Class:
    the final position (repo: tasks/regular/cycle_navigation.py)."""

    summary = "final position after n moves of -1, 0, +1 on a cycle of 5 (Deletang et al.)"
    chomsky, input_vocab, n_classes, chance_accuracy = "regular", 3, 5, 1 / 5

    def generate(self, n, length, rng):
        x = rng.integers(0, 3, size=(n, length))
        return x, (x - 1).sum(1) % 5


PLUS, MINUS, TIMES = 5, 6, 7  # modular-arithmetic operator tokens, after the digits 0..4


@register_task("modular-arithmetic")
class ModularArithmetic(ClassifyTask):
    """Inputs: d op d op ... d, digits 0..4 and ops + - *, no brackets; an even length n loses
    its last token, as in the repo, so inputs are odd. Class: the value mod 5, * binding tighter
    than + and - (repo: tasks/regular/modular_arithmetic.py, the simple version)."""

    summary = "value mod 5 of a bracket-free expression over digits 0-4 and + - * (Deletang et al.)"
    chomsky, input_vocab, n_classes, chance_accuracy = "regular", 8, 5, 1 / 5

    def generate(self, n, length, rng):
        if length % 2 == 0:  # the repo's rule: an expression d (op d)* has an odd length
            length -= 1
        x = np.empty((n, length), dtype=np.int64)
        x[:, 0::2] = rng.integers(0, 5, size=(n, length // 2 + 1))
        x[:, 1::2] = rng.integers(PLUS, TIMES + 1, size=(n, length // 2))
        return x, np.array([evaluate_mod5(row) for row in x])


def evaluate_mod5(tokens: np.ndarray) -> int:
    """Left to right with a running product: a term ends at each + or -, whose sign it takes."""
    total, sign, term = 0, 1, int(tokens[0])
    for op, digit in zip(tokens[1::2], tokens[2::2]):
        if op == TIMES:
            term = term * int(digit) % 5
        else:
            total += sign * term
            sign, term = (1 if op == PLUS else -1), int(digit)
    return (total + sign * term) % 5


# --- context-free (deterministic) ------------------------------------------------------------

@register_task("reverse-string")
class ReverseString(TransduceTask):
    """Inputs: n bits. Outputs: the n bits reversed (repo: tasks/dcf/reverse_string.py)."""

    summary = "output a bit string reversed; train short, test long (Deletang et al. 2023)"
    chomsky, input_vocab, n_classes, chance_accuracy = "context-free", 2, 2, 1 / 2

    def generate(self, n, length, rng):
        x = bits(rng, n, length)
        return x, x[:, ::-1].copy()


POP, PUSH0, PUSH1 = 2, 3, 4  # stack-manipulation action tokens, after the stack bits 0, 1


@register_task("stack-manipulation")
class StackManipulation(TransduceTask):
    """Inputs: a stack of bits given bottom to top, then actions POP / PUSH 0 / PUSH 1 (a POP on
    an empty stack does nothing); n tokens in all. Outputs (n + 1): the final stack top to
    bottom, END, zeros (repo: tasks/dcf/stack_manipulation.py)."""

    config_cls = TerminatedConfig
    terminated = True
    summary = "final stack, top first, after PUSH/POP actions on a given stack (Deletang et al.)"
    chomsky, input_vocab, n_classes, chance_accuracy = "context-free", 5, 3, 1 / 3

    def generate(self, n, length, rng):
        x = np.empty((n, length), dtype=np.int64)
        y = np.zeros((n, length + 1), dtype=np.int64)
        for i in range(n):
            # the repo: n = 1 is a one-bit stack and no action; else 1..n-1 bits, the rest actions
            size = 1 if length == 1 else int(rng.integers(1, length))
            x[i, :size] = rng.integers(0, 2, size)
            x[i, size:] = rng.integers(POP, PUSH1 + 1, length - size)
            stack = list(x[i, :size])
            for action in x[i, size:]:
                if action != POP:
                    stack.append(action - PUSH0)
                elif stack:
                    stack.pop()
            y[i, :len(stack) + 1] = stack[::-1] + [END]
        return x, y


# --- context-sensitive -----------------------------------------------------------------------

@register_task("duplicate-string")
class DuplicateString(TransduceTask):
    """Inputs: n bits w. Outputs (2n): w w (repo: tasks/cs/duplicate_string.py)."""

    config_cls = DuplicateConfig
    summary = "output a bit string twice; train short, test long (Deletang et al. 2023)"
    chomsky, input_vocab, n_classes, chance_accuracy = "context-sensitive", 2, 2, 1 / 2

    def generate(self, n, length, rng):
        x = bits(rng, n, length)
        return x, np.concatenate([x, x], axis=1)


SUM_SIGN = 2  # binary-addition's '+' token, after the bits


@register_task("binary-addition")
class BinaryAddition(TransduceTask):
    """Inputs: a + b in binary, least significant bit first, n tokens with the '+': a and b each
    1..n-2 digits, not both-zero-valued (values 1..2^digits - 1, high zeros allowed). Outputs
    (n + 1): a + b LSB first without high zeros, END, zeros. For n <= 2 the repo feeds one number
    of n digits, no '+', and asks it back (repo: tasks/cs/binary_addition.py)."""

    config_cls = TerminatedConfig
    terminated = True
    summary = "sum of two binary numbers, least significant bit first (Deletang et al. 2023)"
    chomsky, input_vocab, n_classes, chance_accuracy = "context-sensitive", 3, 3, 1 / 3

    def generate(self, n, length, rng):
        x = np.empty((n, length), dtype=np.int64)
        y = np.zeros((n, length + 1), dtype=np.int64)
        for i in range(n):
            if length <= 2:
                value = int(rng.integers(0, 2 ** length - 1))  # as the repo, 2^n - 1 excluded
                x[i] = [value >> k & 1 for k in range(length)]
            else:
                len_a = int(rng.integers(1, length - 1))
                a, b = self._digits(rng, len_a), self._digits(rng, length - 1 - len_a)
                x[i] = a + [SUM_SIGN] + b
                # Python's integers hold any length: int(string, 2) reads MSB first
                value = int("".join(map(str, a[::-1])), 2) + int("".join(map(str, b[::-1])), 2)
            total = [int(c) for c in reversed(f"{value:b}")]  # LSB first, no high zeros
            y[i, :len(total) + 1] = total + [END]
        return x, y

    @staticmethod
    def _digits(rng: np.random.Generator, k: int) -> list[int]:
        """k bits LSB first of a value uniform in 1..2^k - 1 (all zeros redrawn)."""
        while True:
            d = rng.integers(0, 2, k)
            if d.any():
                return d.tolist()
