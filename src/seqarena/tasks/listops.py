"""ListOps: evaluate a nested expression of list operators on digits; 10 classes.

References:
- Nangia & Bowman 2018, "ListOps: A Diagnostic Dataset for Latent Tree Learning".
- Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient Transformers", section 3.1, and its
  generator and input pipeline (google-research/long-range-arena, lra_benchmarks/data/listops.py,
  lra_benchmarks/listops/input_pipeline.py).

The operators are MAX, MIN, MED (the integer part of the median) and SM (sum modulo 10). LRA writes
each (operator or partial application, argument) pair in parentheses:

    [MAX 2 9 ]   is written   ( ( ( [MAX 2 ) 9 ) ] )

and its pipeline drops the parentheses before tokenising, so the model reads `[MAX 2 9 ]`. We do the
same; the length of an expression is its number of tokens without parentheses.

Data comes from LRA's files (data_dir holding basic_train.tsv, basic_val.tsv, basic_test.tsv, each
with a `Source<TAB>Target` header) or from our generator, which draws trees as LRA's does and
writes the same format. Expressions longer than seq_len are REJECTED, not truncated: a cut
expression has lost its closing brackets and often the arguments that decide its value, so its
label would be noise. At LRA's seq_len=2000 nothing is rejected; describe() reports what was.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqarena.errors import ConfigError, UserError
from seqarena.tasks.base import (Batch, DatasetTask, GeneratedConfig, PoolHead, register_task,
                                 split_rng, token_sums)

# B batch (n when generating), L length, D model width

OPERATORS = {
    "[MAX": max,
    "[MIN": min,
    "[MED": lambda args: int(np.median(args)),  # int() floors the .5 of an even count's median
    "[SM": lambda args: sum(args) % 10,
}
END = "]"
# LRA's generator also defines FIRST and LAST (unused in its data); reading them costs nothing.
TOKENS = ["<pad>"] + [str(d) for d in range(10)] + list(OPERATORS) + ["[FIRST", "[LAST", END]
PAD = 0
VALUE_P = 0.25  # LRA: below max_depth a node is an operator with this probability, else a digit
SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}

Tree = Union[int, tuple[str, list["Tree"]]]  # a digit, or (operator, arguments)


# --- the generator -------------------------------------------------------------------------

class _TooLong(Exception):
    pass


def _grow(rnd: random.Random, depth: int, max_depth: int, max_args: int, budget: list[int]) -> Tree:
    """LRA's tree distribution; raises _TooLong as soon as the tree exceeds the token budget,
    which rejects exactly the trees LRA would generate in full and then reject."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLong
    if depth >= max_depth or rnd.random() > VALUE_P:
        return rnd.randrange(10)
    op = rnd.choice(list(OPERATORS))
    budget[0] -= 1  # the closing bracket
    n_args = rnd.randint(2, max_args)
    return op, [_grow(rnd, depth + 1, max_depth, max_args, budget) for _ in range(n_args)]


def value(tree: Tree) -> int:
    if isinstance(tree, int):
        return tree
    op, args = tree
    return int(OPERATORS[op]([value(a) for a in args]))


def to_lra_string(tree: Tree) -> str:
    """LRA's text: every (operator or partial application, argument) pair in parentheses."""
    if isinstance(tree, int):
        return str(tree)
    op, args = tree
    text = op
    for arg in args:
        text = f"( {text} {to_lra_string(arg)} )"
    return f"( {text} {END} )"


def generate(n: int, rng: np.random.Generator, min_length: int, max_length: int,
             max_depth: int = 10, max_args: int = 10) -> list[tuple[str, int]]:
    """n (LRA source text, value) pairs with min_length < tokens < max_length, LRA's bounds."""
    rnd = random.Random(int(rng.integers(2 ** 63)))  # Python's generator: fast scalar draws
    out = []
    while len(out) < n:
        budget = [max_length - 1]
        try:
            tree = _grow(rnd, 1, max_depth, max_args, budget)
        except _TooLong:
            continue
        if max_length - 1 - budget[0] > min_length:
            out.append((to_lra_string(tree), value(tree)))
    return out


def write_tsv(path: str | Path, rows: list[tuple[str, int]]) -> None:
    """Write (source, target) rows in LRA's format, readable by read_tsv."""
    lines = ["Source\tTarget"] + [f"{source}\t{target}" for source, target in rows]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- reading LRA's text ----------------------------------------------------------------------

# Each multi-character token becomes one character, so a whole line is encoded by one table lookup.
_SHORT = {"[FIRST": "f", "[LAST": "l", "[MAX": "M", "[MIN": "m", "[MED": "d", "[SM": "s"}
_LOOKUP = np.full(256, 255, dtype=np.uint8)
for _i, _tok in enumerate(TOKENS[1:], start=1):
    _LOOKUP[ord(_SHORT.get(_tok, _tok))] = _i
_DROP = str.maketrans("", "", "() \t")


def encode(source: str) -> np.ndarray | None:
    """Token ids (uint8) of an LRA source text, parentheses dropped; None if it is not ListOps."""
    if re.search(r"\d\d", source):  # digits are single tokens, always separated by spaces
        return None
    for long, short in _SHORT.items():
        source = source.replace(long, short)
    compact = source.translate(_DROP).encode("ascii", "replace")
    ids = _LOOKUP[np.frombuffer(compact, dtype=np.uint8)]
    return None if (ids == 255).any() or len(ids) == 0 else ids


def read_tsv(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """Token ids and targets of an LRA ListOps file; UserError naming the line of any bad row."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read ListOps file {path}: {e}") from None
    if not lines or lines[0].strip().split("\t") != ["Source", "Target"]:
        raise UserError(f"{path} is not an LRA ListOps file: its first line must be "
                        "'Source<TAB>Target'")
    sources, targets = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        ids = encode(fields[0]) if len(fields) == 2 else None
        target = fields[1].strip() if len(fields) == 2 else ""
        if ids is None or target not in {str(d) for d in range(10)}:
            raise UserError(f"{path}:{number}: not a ListOps row (want an expression of [MAX, "
                            "[MIN, [MED, [SM, digits and ], a tab, and a digit 0-9)")
        sources.append(ids)
        targets.append(int(target))
    if not sources:
        raise UserError(f"{path} has no examples")
    return sources, targets


# --- the task ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ListOpsConfig(GeneratedConfig):
    seq_len: int = 2000  # LRA's length; longer expressions are rejected (see the module docstring)
    data_dir: str = ""  # LRA's listops directory (basic_{train,val,test}.tsv); "": generate
    max_depth: int = 10  # generator: nesting limit, as LRA (root at depth 1, digits at the limit)
    max_args: int = 10  # generator: most arguments of one operator, as LRA
    min_length: int = 0  # generator: tokens exceed this; 0: min(500, seq_len // 4) (LRA: 500)
    # eval_size (from GeneratedConfig): examples per held-out split, generated or the file's first

    zero_ok = ("min_length",)

    def validate(self) -> None:
        super().validate()
        self.need_seq_len("listops", 4, "the shortest expression, [MAX 2 9 ], has 4 tokens")
        if self.max_args < 2:
            raise ConfigError(f"ListOpsConfig.max_args must be at least 2, got {self.max_args}")
        if self.min_length >= self.seq_len - 1:
            raise ConfigError(f"ListOpsConfig.min_length={self.min_length} leaves no length "
                              f"below seq_len={self.seq_len}; lower it or raise seq_len")

    @property
    def length_bounds(self) -> tuple[int, int]:
        """Exclusive (min, max) token counts of generated expressions."""
        return self.min_length or min(500, self.seq_len // 4), min(2000, self.seq_len + 1)


@register_task("listops")
class ListOps(DatasetTask):
    """Classify an expression by its value, reading all of it: long-range, hierarchical."""

    config_cls = ListOpsConfig
    summary = "value (0-9) of a nested MAX/MIN/MED/SM expression (Long Range Arena)"
    metric_name = "accuracy"
    higher_is_better = True
    head_kind = "classify"

    def __init__(self, config: ListOpsConfig):
        super().__init__(config)
        self.rejected: dict[str, int] = {}  # split -> expressions longer than seq_len (files)
        self._data: dict[str, Batch] = {}
        if config.data_dir:
            folder = Path(config.data_dir)
            if not folder.is_dir():
                raise UserError(f"ListOps data_dir {folder} is not a directory")
            missing = [name for name in SPLIT_FILES.values() if not (folder / name).is_file()]
            if missing:
                raise UserError(f"ListOps data_dir {folder} lacks {', '.join(missing)} (LRA's "
                                "lra_release/listops-1000 holds basic_train/val/test.tsv)")

    def make_embedding(self, d_model: int) -> nn.Module:
        return nn.Embedding(len(TOKENS), d_model)

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        return PoolHead(d_model, 10, causal)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(pred, batch.y)

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[float, float]]:
        return token_sums(model(batch), batch.y)

    def batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        if split == "train" and not self.config.data_dir:
            return self._generated_stream(batch_size, split_rng(self.config.seed, "train", seed))
        return super().batches(split, batch_size, seed)

    def _generated_stream(self, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
        while True:
            yield self.collate(self._pack(self._generate(batch_size, rng), "train"))

    def _generate(self, n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[int]]:
        low, high = self.config.length_bounds
        rows = generate(n, rng, low, high, self.config.max_depth, self.config.max_args)
        return [encode(source) for source, _ in rows], [target for _, target in rows]

    def split_data(self, split: str) -> Batch:
        if split not in self._data:
            if self.config.data_dir:
                examples = read_tsv(Path(self.config.data_dir) / SPLIT_FILES[split])
                limit = None if split == "train" else self.config.eval_size
                self._data[split] = self._pack(examples, split, limit)
            else:
                examples = self._generate(self.config.eval_size, split_rng(self.config.seed, split))
                self._data[split] = self._pack(examples, split)
        return self._data[split]

    def _pack(self, examples: tuple[list[np.ndarray], list[int]], split: str,
              limit: int | None = None) -> Batch:
        """Right-padded uint8 tokens (N, L) and lengths of the first `limit` expressions that fit
        in L; the longer ones are rejected and counted."""
        L = self.config.seq_len
        sources, targets = examples
        fits = [i for i, s in enumerate(sources) if len(s) <= L]
        if len(fits) < len(sources):
            self.rejected[split] = self.rejected.get(split, 0) + len(sources) - len(fits)
        keep = fits[:limit]
        if not keep:
            shortest = min(len(s) for s in sources)
            raise ConfigError(f"no ListOps {split} expression fits in seq_len={L} (the shortest "
                              f"has {shortest} tokens); raise seq_len, LRA uses 2000")
        x = np.zeros((len(keep), L), dtype=np.uint8)  # compact: 96K x 2000 LRA tokens in 192 MB
        for row, i in enumerate(keep):
            x[row, :len(sources[i])] = sources[i]
        lengths = torch.tensor([len(sources[i]) for i in keep])
        y = torch.tensor([targets[i] for i in keep])
        return Batch(torch.from_numpy(x), y, extra={"length": lengths})

    def collate(self, batch: Batch) -> Batch:
        positions = torch.arange(batch.x.shape[1])
        mask = positions[None, :] < batch.extra["length"][:, None]  # (B, L)
        return Batch(batch.x.long(), batch.y, mask, batch.extra)

    def baselines(self) -> dict[str, float]:
        y = self.split_data("val").y
        return {"chance_accuracy": 0.1,
                "majority_accuracy": torch.bincount(y, minlength=10).max().item() / len(y)}

    def describe(self) -> dict:
        info = super().describe()
        if self.rejected:
            info["rejected_longer_than_seq_len"] = dict(self.rejected)
        return info

