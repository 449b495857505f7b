"""Character-level language modelling on real text, measured in bits per character.

The default text ships with Python: the documentation topics of `pydoc_data.topics` (about 465K
characters of English and code), so nothing is downloaded. Any UTF-8 file works (text=FILE).

The text is split in order, 90% / 5% / 5% (train, val, test), so held-out text is text the model
never saw. Training draws windows of seq_len + 1 characters at random offsets from the training
part; each held-out split is a fixed set of non-overlapping windows. The vocabulary is the set of
characters of the text, stored in the config (`vocab`), so a saved run can generate without it.

References: Karpathy's char-rnn and nanoGPT's shakespeare_char (the task, the vocabulary-from-text
convention); Graves 2013, "Generating Sequences With Recurrent Neural Networks" (bits/char).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqarena.errors import ConfigError, UserError
from seqarena.tasks.base import (Batch, Task, TaskConfig, TokenHead, register_task, split_rng,
                                 token_sums, unwrapped)

# B batch, L length, D model width, V vocabulary

SPLIT_FRACTIONS = {"train": (0.0, 0.9), "val": (0.9, 0.95), "test": (0.95, 1.0)}


def read_text(path: str) -> str:
    """The text of a UTF-8 file, or Python's documentation topics for ""; UserError if unusable."""
    if not path:
        from pydoc_data.topics import topics

        return "".join(topics[key] for key in sorted(topics))
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise UserError(f"text file {file} does not exist") from None
    except OSError as e:
        raise UserError(f"cannot read text file {file}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"text file {file} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset "
                        f"{e.start}); convert it, e.g. iconv -t UTF-8") from None
    if not text.strip():
        raise UserError(f"text file {file} is empty")
    return text


@dataclass(frozen=True)
class TextConfig(TaskConfig):
    seq_len: int = 128  # characters of context per training window
    text: str = ""  # a UTF-8 text file; "": Python's documentation (pydoc_data.topics)
    vocab: str = ""  # the characters, in id order; "": those of the text (filled in on creation)
    eval_size: int = 256  # windows per held-out split (fewer if the split is shorter)


@register_task("text-lm")
class TextLM(Task):
    """Predict each next character; the metric is bits per character on held-out text."""

    config_cls = TextConfig
    summary = "character-level language model on Python's docs or a UTF-8 file (bits/char)"
    metric_name = "bpc"
    higher_is_better = False
    head_kind = "tokens"
    needs_causal = True

    def __init__(self, config: TextConfig):
        self._text = None
        if not config.vocab:
            self._text = read_text(config.text)
            config = dataclasses.replace(config, vocab="".join(sorted(set(self._text))))
        if len(set(config.vocab)) != len(config.vocab):
            raise ConfigError("TextConfig.vocab must not repeat a character")
        super().__init__(config)
        self.stoi = {ch: i for i, ch in enumerate(config.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.config.vocab)

    def encode(self, text: str) -> torch.Tensor:
        unknown = sorted(set(text) - set(self.stoi))
        if unknown:
            raise UserError(f"characters not in the vocabulary of this run: {''.join(unknown)!r}")
        return torch.tensor([self.stoi[ch] for ch in text], dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.config.vocab[i] for i in ids)

    def ids(self, split: str) -> torch.Tensor:
        """The characters of one split as ids (L_split,), loaded once."""
        cache = self.__dict__.setdefault("_ids", {})
        if not cache:
            text = self._text if self._text is not None else read_text(self.config.text)
            everything, L = self.encode(text), self.config.seq_len
            for name, (start, end) in SPLIT_FRACTIONS.items():
                cache[name] = everything[int(start * len(everything)):int(end * len(everything))]
            if min(len(part) for part in cache.values()) < L + 1:
                cache.clear()
                raise ConfigError(f"text-lm at seq_len={L} needs a text of at least {20 * (L + 2)} "
                                  f"characters (each held-out 5% must hold a window of seq_len + "
                                  f"1), this one has {len(everything)}; lower seq_len or use a "
                                  "longer text")
        return cache[split]

    def make_embedding(self, d_model: int) -> nn.Module:
        return nn.Embedding(self.vocab_size, d_model)

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        return TokenHead(d_model, self.vocab_size)

    def batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        self.check_split(split)
        ids, L = self.ids(split), self.config.seq_len
        if split != "train":
            starts = torch.arange(0, len(ids) - L, L + 1)[:self.config.eval_size]
            return (self._windows(ids, starts[i:i + batch_size])
                    for i in range(0, len(starts), batch_size))
        return self._random_windows(ids, batch_size, split_rng(self.config.seed, "train", seed))

    def _random_windows(self, ids: torch.Tensor, batch_size: int,
                        rng: np.random.Generator) -> Iterator[Batch]:
        while True:
            starts = rng.integers(0, len(ids) - self.config.seq_len, size=batch_size)
            yield self._windows(ids, torch.from_numpy(starts))

    def _windows(self, ids: torch.Tensor, starts: torch.Tensor) -> Batch:
        span = starts[:, None] + torch.arange(self.config.seq_len + 1)  # (B, L + 1)
        chars = ids[span]
        return Batch(chars[:, :-1], chars[:, 1:])  # the target is the input shifted by one

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(pred.flatten(0, 1), batch.y.flatten())

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[float, float]]:
        return token_sums(model(batch), batch.y)

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        return {"bpc": metrics["cross_entropy"] / math.log(2), **metrics}

    def baselines(self) -> dict[str, float]:
        # Without context: the training text's character frequencies (its unigram entropy).
        counts = torch.bincount(self.ids("train"), minlength=self.vocab_size).double()
        p = counts[counts > 0] / counts.sum()
        return {"unigram_bpc": -(p * p.log2()).sum().item(),
                "uniform_bpc": math.log2(self.vocab_size)}

    @torch.no_grad()
    def generate(self, model: nn.Module, prompt: str, max_new_tokens: int,
                 temperature: float = 1.0, seed: int = 0) -> str:
        """The prompt and max_new_tokens sampled characters (temperature 0: greedy). One step()
        per character: the prompt is read once into the state (hidden state or KV cache)."""
        if temperature < 0:
            raise UserError(f"temperature must be >= 0, got {temperature}")
        model = unwrapped(model)
        backbone, device = model.backbone, next(model.parameters()).device
        ids = self.encode(prompt or ("\n" if "\n" in self.stoi else self.config.vocab[0]))
        was_training = model.training
        model.eval()
        generator = torch.Generator(device=device).manual_seed(seed)
        out = []
        try:
            state = backbone.init_state(1)
            ids = ids.to(device)
            for t in range(len(ids) - 1):  # the last prompt character is fed in the loop below
                _, state = backbone.step(state, model.embedding(ids[t:t + 1]))
            token = ids[-1:]  # (1,)
            for _ in range(max_new_tokens):
                y, state = backbone.step(state, model.embedding(token))  # (1, D)
                logits = model.head(y).float()  # (1, V)
                if temperature == 0:
                    token = logits.argmax(-1)
                else:
                    probs = F.softmax(logits / temperature, dim=-1)
                    token = torch.multinomial(probs, 1, generator=generator)[:, 0]
                out.append(token.item())
        except NotImplementedError as e:
            raise UserError(f"text-lm generates with the model's step(): {e}") from None
        finally:
            model.train(was_training)
        return prompt + self.decode(out)
