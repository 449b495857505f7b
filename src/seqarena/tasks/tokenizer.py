"""Tokenisation shared by the text tasks: characters, or byte-pair encoding learnt from the data.

- `char` (the default): one token per character of the training split; a character the training
  split never showed becomes <unk>.
- `bpe`: byte-level byte-pair encoding trained on the training split with Hugging Face
  `tokenizers` (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword
  Units"; byte-level as GPT-2, so any text round-trips and nothing is unknown). It is an optional
  extra: `pip install seqarena[bpe]`.

Both kinds share four special tokens at ids 0-3 and are saved as one JSON file in the run
directory, so a trained run reloads exactly the tokenizer it was trained with, whatever became of
the data file since. Sequences longer than the model's length are cut and counted; shorter ones
are padded on the right, with a mask True at real tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch

from seqarena.errors import ConfigError, UserError
from seqarena.fileio import atomic_write_json

# N examples, L length (seq_len)

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
PAD, UNK, BOS, EOS = range(4)
KINDS = ("char", "bpe")
FILE = "tokenizer.json"  # its name in a run directory


class Tokenizer:
    """Text <-> ids. Subclasses: CharTokenizer, BPETokenizer."""

    kind: str
    _chars: torch.Tensor | None = None  # chars_per_token(), once computed

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ids; special tokens are dropped."""
        raise NotImplementedError

    def state(self) -> dict:
        """What save() writes; `load` rebuilds the same tokenizer from it."""
        raise NotImplementedError

    def chars_per_token(self) -> torch.Tensor:
        """(V,) how many characters of text each token holds (special tokens: 0), computed once."""
        if self._chars is None:
            self._chars = self.count_chars()
        return self._chars

    def count_chars(self) -> torch.Tensor:
        raise NotImplementedError

    def save(self, run_dir: str | Path) -> None:
        atomic_write_json(Path(run_dir) / FILE, {"kind": self.kind, **self.state()})


class CharTokenizer(Tokenizer):
    """One id per character. Without special tokens (text-lm's windows need no padding) a
    character outside the vocabulary is an error rather than <unk>."""

    kind = "char"

    def __init__(self, chars: str, specials: tuple[str, ...] | list[str] = tuple(SPECIALS)):
        self.chars, self.specials = chars, list(specials)
        self.stoi = {ch: i + len(self.specials) for i, ch in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.specials) + len(self.chars)

    def encode(self, text: str) -> list[int]:
        if not self.specials:
            unknown = sorted(set(text) - set(self.stoi))
            if unknown:
                raise UserError("characters not in the vocabulary of this run: "
                                f"{''.join(unknown)!r}")
        return [self.stoi.get(ch, UNK) for ch in text]

    def decode(self, ids: Iterable[int]) -> str:
        n = len(self.specials)
        return "".join(self.chars[i - n] for i in ids if n <= i < self.vocab_size)

    def state(self) -> dict:
        return {"chars": self.chars, "specials": self.specials}

    def count_chars(self) -> torch.Tensor:
        return (torch.arange(self.vocab_size) >= len(self.specials)).long()


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, hf):
        self.hf = hf  # a tokenizers.Tokenizer

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def state(self) -> dict:
        return {"tokenizers": json.loads(self.hf.to_str())}

    def count_chars(self) -> torch.Tensor:
        # A character counts in the token holding its first UTF-8 byte (not a 10xxxxxx byte).
        byte_of = _byte_level_bytes()
        counts = torch.zeros(self.vocab_size, dtype=torch.long)
        for token, i in self.hf.get_vocab().items():
            if token not in SPECIALS:
                counts[i] = sum(byte_of[ch] & 0xC0 != 0x80 for ch in token)
        return counts


def _byte_level_bytes() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte -> the byte (GPT-2's bytes_to_unicode:
    printable bytes stand for themselves, the others for chr(256 + k) in byte order)."""
    own = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
           *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in own}
    table.update({chr(256 + k): b for k, b in enumerate(b for b in range(256) if b not in own)})
    return table


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UserError("tokenizer=bpe needs the Hugging Face tokenizers package: "
                        "pip install 'seqarena[bpe]' (or tokenizer=char)") from None
    return tokenizers


def check_kind(kind: str, vocab_size: int, where: str) -> None:
    """ConfigError unless `kind` is a tokenizer this module builds with a usable vocabulary."""
    if kind not in KINDS:
        raise ConfigError(f"{where}.tokenizer must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "bpe" and vocab_size <= len(SPECIALS) + 256:
        raise ConfigError(f"{where}.vocab_size must exceed {len(SPECIALS) + 256} for bpe (the "
                          f"special tokens and the 256 bytes), got {vocab_size}")


def train_tokenizer(kind: str, texts: list[str], vocab_size: int) -> Tokenizer:
    """A tokenizer learnt from `texts` (the training split)."""
    if kind == "char":
        return CharTokenizer("".join(sorted(set().union(*map(set, texts)))))
    tk = _tokenizers()
    hf = tk.Tokenizer(tk.models.BPE(unk_token=SPECIALS[UNK]))
    hf.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
                                     show_progress=False)
    hf.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(hf)


def load_tokenizer(run_dir: str | Path) -> Tokenizer | None:
    """The tokenizer saved in a run directory, or None when it holds none."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc["kind"] == "char":
            return CharTokenizer(doc["chars"], doc.get("specials", SPECIALS))
        if doc["kind"] == "bpe":
            return BPETokenizer(_tokenizers().Tokenizer.from_str(json.dumps(doc["tokenizers"])))
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a seqarena tokenizer ({e})") from None
    except Exception as e:  # tokenizers raises its own exception type for a malformed model
        raise UserError(f"{path}: not a readable tokenizer ({e})") from None
    raise UserError(f"{path}: unknown tokenizer kind {doc['kind']!r}")


def pack(sequences: list[list[int]], L: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(ids (N, L) right-padded with PAD, mask (N, L) True at real tokens, how many were cut)."""
    ids = torch.full((len(sequences), L), PAD, dtype=torch.long)
    cut = 0
    for i, seq in enumerate(sequences):
        cut += len(seq) > L
        seq = seq[:L]
        ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    lengths = torch.tensor([min(len(s), L) for s in sequences], dtype=torch.long)
    return ids, torch.arange(L)[None, :] < lengths[:, None], cut
