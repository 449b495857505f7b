"""Character-level language modelling on real text, measured in bits per character.

The default text ships with Python: the documentation topics of `pydoc_data.topics` (about 465K
characters of English and code), so nothing is downloaded. Any UTF-8 file works (text=FILE).

The text is split in order, 90% / 5% / 5% (train, val, test), so held-out text is text the model
never saw. Training draws windows of seq_len + 1 characters at random offsets from the training
part; each held-out split is a fixed set of non-overlapping windows. The vocabulary is the set of
characters of the text (`vocab`), or with tokenizer=bpe byte-pair tokens learnt from the training
part (seqarena.tasks.tokenizer); either is saved in the run directory, so a trained run generates
without the text. With BPE the metric stays bits per character: nats per token over characters
per token, each character counted in the token that holds its first byte.

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
from seqarena.fileio import read_utf8
from seqarena.tasks import tokenizer as tok
from seqarena.tasks.base import (Batch, Task, TaskConfig, TokenHead, register_task, split_rng,
                                 token_sums, unwrapped)

# B batch, L length, D model width, V vocabulary

SPLIT_FRACTIONS = {"train": (0.0, 0.9), "val": (0.9, 0.95), "test": (0.95, 1.0)}


def read_text(path: str) -> str:
    """The text of a UTF-8 file, or Python's documentation topics for ""; UserError if unusable."""
    if not path:
        from pydoc_data.topics import topics

        return "".join(topics[key] for key in sorted(topics))
    return read_utf8(Path(path), "text file")


@dataclass(frozen=True)
class TextConfig(TaskConfig):
    seq_len: int = 128  # tokens of context per training window (characters, unless bpe)
    text: str = ""  # a UTF-8 text file; "": Python's documentation (pydoc_data.topics)
    vocab: str = ""  # char: the characters, in id order; "": those of the text (filled on first use)
    eval_size: int = 256  # windows per held-out split (fewer if the split is shorter)
    tokenizer: str = "char"  # "char", or "bpe" learnt from the training part (needs seqarena[bpe])
    vocab_size: int = 1000  # bpe: tokens learnt from the training part (specials and bytes incl.)

    def validate(self) -> None:
        super().validate()
        tok.check_kind(self.tokenizer, self.vocab_size, type(self).__name__)
        if len(set(self.vocab)) != len(self.vocab):
            raise ConfigError("TextConfig.vocab must not repeat a character")
        if self.vocab and self.tokenizer != "char":
            raise ConfigError("TextConfig.vocab lists characters; it goes with tokenizer=char")


@register_task("text-lm")
class TextLM(Task):
    """Predict each next token; the metric is bits per character on held-out text."""

    config_cls = TextConfig
    summary = "character-level language model on Python's docs or a UTF-8 file (bits/char)"
    metric_name = "bpc"
    higher_is_better = False
    head_kind = "tokens"
    needs_causal = True

    def __init__(self, config: TextConfig):
        super().__init__(config)
        # The text is read on first use: a run reloaded from its directory (restore) takes its
        # tokenizer from there and needs the text only to train on.
        self._text: str | None = None
        self._tokenizer: tok.Tokenizer | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = read_text(self.config.text)
        return self._text

    def parts(self) -> dict[str, str]:
        """The text of each split, in order: 90% / 5% / 5%."""
        n = len(self.text)
        return {name: self.text[int(a * n):int(b * n)] for name, (a, b) in SPLIT_FRACTIONS.items()}

    @property
    def tokenizer(self) -> tok.Tokenizer:
        if self._tokenizer is None:
            if self.config.tokenizer == "bpe":
                self._tokenizer = tok.train_tokenizer("bpe", [self.parts()["train"]],
                                                      self.config.vocab_size)
            else:  # no special tokens: windows of text need no padding, ids are as they were
                chars = self.config.vocab or "".join(sorted(set(self.text)))
                self._tokenizer = tok.CharTokenizer(chars, specials=())
                self.config = dataclasses.replace(self.config, vocab=chars)
        return self._tokenizer

    def save(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir)

    def restore(self, run_dir: Path) -> None:
        saved = tok.load_tokenizer(run_dir)
        if saved is not None:
            self._tokenizer = saved
            if isinstance(saved, tok.CharTokenizer):
                self.config = dataclasses.replace(self.config, vocab=saved.chars)
        self.__dict__.pop("_ids", None)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(text), dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def ids(self, split: str) -> torch.Tensor:
        """The tokens of one split as ids (L_split,), loaded once."""
        cache = self.__dict__.setdefault("_ids", {})
        if not cache:
            L = self.config.seq_len
            cache.update({name: self.encode(part) for name, part in self.parts().items()})
            if min(len(part) for part in cache.values()) < L + 1:
                cache.clear()
                raise ConfigError(f"text-lm at seq_len={L} needs a text of at least {20 * (L + 2)} "
                                  f"tokens (each held-out 5% must hold a window of seq_len + "
                                  f"1), this one has {len(self.text)} characters; lower seq_len or "
                                  "use a longer text")
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
        chars = self.tokenizer.chars_per_token()[batch.y.cpu()].sum().item()
        return {**token_sums(model(batch), batch.y), "chars": (chars, batch.y.numel())}

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        # nats per token over characters per token: bits per character, whatever the tokens
        chars_per_token = metrics.pop("chars")
        return {"bpc": metrics["cross_entropy"] / chars_per_token / math.log(2), **metrics}

    def baselines(self) -> dict[str, float]:
        # Without context: the training text's token frequencies (its unigram entropy).
        ids = self.ids("train")
        counts = torch.bincount(ids, minlength=self.vocab_size).double()
        p = counts[counts > 0] / counts.sum()
        chars_per_token = self.tokenizer.chars_per_token()[ids].double().mean().item()
        return {"unigram_bpc": -(p * p.log2()).sum().item() / chars_per_token,
                "uniform_bpc": math.log2(self.vocab_size) / chars_per_token}

    @torch.no_grad()
    def generate(self, model: nn.Module, prompt: str, max_new_tokens: int,
                 temperature: float = 1.0, seed: int = 0) -> str:
        """The prompt and max_new_tokens sampled characters (temperature 0: greedy). One step()
        per character: the prompt is read once into the state (hidden state or KV cache)."""
        if temperature < 0:
            raise UserError(f"temperature must be >= 0, got {temperature}")
        model = unwrapped(model)
        backbone, device = model.backbone, next(model.parameters()).device
        vocab = self.config.vocab
        ids = self.encode(prompt or ("\n" if not vocab or "\n" in vocab else vocab[0]))
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
