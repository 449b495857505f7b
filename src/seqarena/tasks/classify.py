"""Sequence classification on the user's own labelled texts: accuracy and macro-F1.

The data is one table, a text column and a label column (task arguments text_column and
label_column, by default `text` and `label`), in any of:

    reviews.csv      comma-separated, a header line first (Python's csv dialect: quotes allowed)
    reviews.tsv      tab-separated, a header line first
    reviews.jsonl    one JSON object per line, e.g. {"text": "great film", "label": "pos"}
    reviews.parquet  a Parquet table (needs pyarrow: pip install 'seqarena[parquet]')

or a directory holding train.EXT and test.EXT (and val.EXT; without it, validation is a
stratified tenth of train). A single file is split 80/10/10 (train/val/test), stratified: each
class is shuffled under the task seed and dealt out in those proportions, at least one example of
every class to each split. Labels are strings or integers; the classes are sorted (numerically
when every label is an integer) and saved in the run directory with the tokenizer
(seqarena.tasks.tokenizer). Texts longer than seq_len tokens are cut and counted.

The metric is accuracy; macro-F1 (the unweighted mean of each class's F1, as scikit-learn's
f1_score(average="macro")) rides beside it, and the baseline is always answering the training
split's most common class.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqarena.errors import UserError
from seqarena.fileio import atomic_write_json, read_utf8
from seqarena.tasks.base import (Batch, DatasetTask, PoolHead, TaskConfig, register_task,
                                 token_sums)
from seqarena.tasks import tokenizer as tok

# N examples, B batch, L length (seq_len), D model width, C classes, V vocabulary

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet"}
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, val, test of a single file
VAL_FRACTION = 0.1  # of train, when a directory has no val file
LABELS_FILE = "labels.json"  # the class names in a run directory


def dealing_rng(seed: int) -> np.random.Generator:
    """The generator that deals a file's examples to splits under the task seed (a stream apart
    from base.split_rng's, which draw the batches)."""
    return np.random.default_rng([seed, 7])


# --- reading -------------------------------------------------------------------------------

def read_table(path: Path, columns: tuple[str, ...]) -> tuple[dict[str, list], list[int]]:
    """({column: values}, the file line of each row) of a CSV, TSV, JSON Lines or Parquet file;
    UserError naming the columns present when one of `columns` is missing."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path}: unknown table format {path.suffix!r}; use one of "
                        f"{', '.join(FORMATS)}")
    if kind == "parquet":
        header, rows, lines = _read_parquet(path)
    elif kind == "jsonl":
        header, rows, lines = _read_jsonl(path)
    else:
        text = read_utf8(path, "data file")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if kind == "tsv" else ",")
        header = [name.strip() for name in next(reader)]
        rows, lines = [], []
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append(dict(zip(header, row)))
                lines.append(reader.line_num)
    missing = [c for c in columns if c not in header]
    if missing:
        raise UserError(f"{path} has no column {missing[0]!r}; its columns are: "
                        f"{', '.join(map(str, header))} (name yours with text_column=, "
                        "label_column=)")
    if not rows:
        raise UserError(f"{path} has a header but no rows")
    table = {c: [] for c in columns}
    for row, line in zip(rows, lines):
        for c in columns:
            if c not in row:
                raise UserError(f"{path}:{line}: no {c!r} in this row")
            table[c].append(row[c])
    return table, lines


def _read_jsonl(path: Path) -> tuple[list[str], list[dict], list[int]]:
    rows, lines, header = [], [], {}
    for number, line in enumerate(read_utf8(path, "data file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{number}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: a JSON Lines row must be an object, got "
                            f"{type(row).__name__}")
        header.update(dict.fromkeys(row))
        rows.append(row)
        lines.append(number)
    return list(header), rows, lines


def _read_parquet(path: Path) -> tuple[list[str], list[dict], list[int]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("reading Parquet needs pyarrow: pip install 'seqarena[parquet]'") from None
    if not path.exists():
        raise UserError(f"data file {path} does not exist")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow's ArrowInvalid and OSError alike: not a Parquet file
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
    if table.num_rows == 0 and not table.column_names:
        raise UserError(f"data file {path} is empty")
    return table.column_names, table.to_pylist(), list(range(1, table.num_rows + 1))


def class_names(labels: list[Any]) -> list[str]:
    """The distinct labels as strings, in numeric order when all are integers."""
    names = sorted({str(v) for v in labels})
    try:
        return sorted(names, key=int)
    except ValueError:
        return names


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...],
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of each part (sorted): every class shuffled, then dealt out in `fractions`; the
    parts after the first get round(fraction * n) of a class, at least one while the class lasts,
    and the first part the rest."""
    parts: list[list[int]] = [[] for _ in fractions]
    for c in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for k in range(len(fractions) - 1, 0, -1):
            take = min(max(1, round(fractions[k] * len(index))), len(index) - start - 1)
            parts[k].extend(index[start:start + max(take, 0)])
            start += max(take, 0)
        parts[0].extend(index[start:])
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


# --- the shared classification head, loss and metrics -----------------------------------------

class ClassifyTask(DatasetTask):
    """Whatever the inputs, one class per sequence: accuracy, macro-F1, majority baseline.
    Subclasses implement read_classes and split_data (with y (N,) class indices)."""

    metric_name = "accuracy"
    higher_is_better = True
    head_kind = "classify"
    _classes: list[str] | None = None  # the class names, in index order
    restored = False  # True once restore() read a run directory: its data is read when used

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            self._classes = self.read_classes()
        return self._classes

    def read_classes(self) -> list[str]:
        """The class names of the data, read from its files."""
        raise NotImplementedError

    def save(self, run_dir: Path) -> None:
        atomic_write_json(run_dir / LABELS_FILE, self.classes)

    def wrap(self, backbone: nn.Module, d_model: int | None = None) -> nn.Module:
        if not self.restored:  # a bad file fails here, before a run writes anything
            for split in self.splits:
                self.split_data(split)
        return super().wrap(backbone, d_model)

    def restore(self, run_dir: Path) -> None:
        self.restored = True
        path = run_dir / LABELS_FILE
        if path.exists():
            try:
                self._classes = [str(c) for c in json.loads(path.read_text(encoding="utf-8"))]
            except (OSError, ValueError, TypeError) as e:
                raise UserError(f"{path}: not a list of class names ({e})") from None

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        return PoolHead(d_model, len(self.classes), causal)

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(pred, batch.y)

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[float, float]]:
        logits = model(batch)  # (B, C)
        return {**token_sums(logits, batch.y), **self.f1_sums(logits.argmax(-1), batch.y)}

    def f1_sums(self, guess: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[float, float]]:
        """Each class's true positives, false positives and false negatives as shares of the
        batch. F1 = 2tp / (2tp + fp + fn) is a ratio of them, so their averages give it exactly."""
        out, n = {}, len(y)
        for c in range(len(self.classes)):
            hit, truth = guess == c, y == c
            out[f"tp_{c}"] = ((hit & truth).sum().item(), n)
            out[f"fp_{c}"] = ((hit & ~truth).sum().item(), n)
            out[f"fn_{c}"] = ((~hit & truth).sum().item(), n)
        return out

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        f1 = []
        for c in range(len(self.classes)):
            tp, fp, fn = (metrics.pop(f"{k}_{c}") for k in ("tp", "fp", "fn"))
            f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        return {"accuracy": metrics.pop("accuracy"), "macro_f1": float(np.mean(f1)), **metrics}

    def baselines(self) -> dict[str, float]:
        """Always the training split's most common class, scored on the test split."""
        majority = torch.bincount(self.split_data("train").y, minlength=len(self.classes)).argmax()
        y = self.split_data("test").y
        sums = self.f1_sums(torch.full_like(y, int(majority)), y)
        scores = self.finish({"accuracy": (y == majority).float().mean().item(),
                              **{k: total / n for k, (total, n) in sums.items()}})
        return {"majority_accuracy": scores["accuracy"], "majority_macro_f1": scores["macro_f1"]}

    def label_index(self, labels: list[Any], where: str) -> torch.Tensor:
        """(N,) class indices of labels; UserError for a label the training split never had."""
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = sorted({str(v) for v in labels} - set(index))
        if unknown:
            raise UserError(f"{where}: label {unknown[0]!r} is not a class of the training split "
                            f"({', '.join(self.classes)})")
        return torch.tensor([index[str(v)] for v in labels], dtype=torch.long)


def check_classes(names: list[str], column: str, where: str) -> None:
    if len(names) < 2:
        raise UserError(f"{where}: label column {column!r} holds one class only ({names[0]!r}); "
                        "classification needs two or more")


# --- text classification ------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifyConfig(TaskConfig):
    seq_len: int = 128  # tokens per text the model reads; longer texts are cut (and counted)
    data: str = ""  # a .csv/.tsv/.jsonl/.parquet file, or a directory of train/val/test files
    text_column: str = "text"  # the column holding the text
    label_column: str = "label"  # the column holding the class (a string or an integer)
    tokenizer: str = "char"  # "char" (one token per character) or "bpe" (needs seqarena[bpe])
    vocab_size: int = 1000  # bpe: tokens learnt from the training split (specials and bytes incl.)

    def validate(self) -> None:
        super().validate()
        self.need_data("classify", self.data, "FILE", "a .csv, .tsv, .jsonl or .parquet table, "
                       "or a directory of train/val/test files")
        tok.check_kind(self.tokenizer, self.vocab_size, type(self).__name__)


@register_task("classify")
class Classify(ClassifyTask):
    """Classify each text of a table by its label column."""

    config_cls = ClassifyConfig
    summary = "your labelled texts (CSV, TSV, JSON Lines, Parquet): accuracy, macro-F1"

    def __init__(self, config: ClassifyConfig):
        super().__init__(config)
        # Read on first use: a run reloaded from its directory (restore) needs no data to
        # generate, its tokenizer and classes come from there.
        self._texts: dict[str, list[str]] | None = None  # split -> texts
        self._labels: dict[str, list[Any]] = {}  # split -> labels as the file holds them
        self._tokenizer: tok.Tokenizer | None = None
        self._data: dict[str, Batch] = {}
        self._cut: dict[str, int] = {}  # split -> texts cut to seq_len

    @property
    def texts(self) -> dict[str, list[str]]:
        if self._texts is None:
            self._texts, self._labels = self._read()
        return self._texts

    def read_classes(self) -> list[str]:
        return class_names(self._labels["train"] if self.texts else [])

    def _read(self) -> tuple[dict[str, list[str]], dict[str, list[Any]]]:
        cfg, root = self.config, Path(self.config.data)
        columns = (cfg.text_column, cfg.label_column)
        if root.is_dir():
            files = {split: self._split_file(root, split) for split in self.splits}
            if files["train"] is None or files["test"] is None:
                raise UserError(f"data directory {root} needs train.EXT and test.EXT files "
                                f"(EXT one of {', '.join(FORMATS)}; val.EXT optional)")
            tables = {s: self._table(f) for s, f in files.items() if f is not None}
            names = class_names(tables["train"][cfg.label_column])
            check_classes(names, cfg.label_column, str(files["train"]))
            if "val" not in tables:
                train = tables.pop("train")
                y = np.array([names.index(str(v)) for v in train[cfg.label_column]])
                keep, val = stratified_split(y, (1 - VAL_FRACTION, VAL_FRACTION),
                                             dealing_rng(cfg.seed))
                tables["train"] = {c: [train[c][i] for i in keep] for c in columns}
                tables["val"] = {c: [train[c][i] for i in val] for c in columns}
        else:
            table = self._table(root)
            names = class_names(table[cfg.label_column])
            check_classes(names, cfg.label_column, str(root))
            y = np.array([names.index(str(v)) for v in table[cfg.label_column]])
            counts = np.bincount(y)
            if counts.min() < len(SPLIT_FRACTIONS):
                raise UserError(f"{root}: class {names[counts.argmin()]!r} has {counts.min()} "
                                f"example(s); the stratified train/val/test split needs at least "
                                f"{len(SPLIT_FRACTIONS)} of each class (add examples or drop it)")
            parts = stratified_split(y, SPLIT_FRACTIONS, dealing_rng(cfg.seed))
            tables = {s: {c: [table[c][i] for i in p] for c in columns}
                      for s, p in zip(self.splits, parts)}
        texts = {s: [("" if v is None else str(v)) for v in t[cfg.text_column]]
                 for s, t in tables.items()}
        return texts, {s: t[cfg.label_column] for s, t in tables.items()}

    def _table(self, path: Path) -> dict[str, list]:
        """The text and label columns of one file; UserError naming a row without a label."""
        table, lines = read_table(path, (self.config.text_column, self.config.label_column))
        for label, line in zip(table[self.config.label_column], lines):
            if label is None or not str(label).strip():
                raise UserError(f"{path}:{line}: no label in column {self.config.label_column!r}")
        return table

    @staticmethod
    def _split_file(root: Path, split: str) -> Path | None:
        found = [root / f"{split}{ext}" for ext in FORMATS if (root / f"{split}{ext}").is_file()]
        return found[0] if found else None

    @property
    def tokenizer(self) -> tok.Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = tok.train_tokenizer(self.config.tokenizer, self.texts["train"],
                                                  self.config.vocab_size)
        return self._tokenizer

    def save(self, run_dir: Path) -> None:
        super().save(run_dir)
        self.tokenizer.save(run_dir)

    def restore(self, run_dir: Path) -> None:
        super().restore(run_dir)
        self._tokenizer = tok.load_tokenizer(run_dir) or self._tokenizer
        self._data.clear()

    def split_data(self, split: str) -> Batch:
        if split not in self._data:
            L = self.config.seq_len
            x, mask, self._cut[split] = tok.pack([self.tokenizer.encode(t)
                                                  for t in self.texts[split]], L)
            where = f"{self.config.data} ({split})"
            self._data[split] = Batch(x, self.label_index(self._labels[split], where), mask)
        return self._data[split]

    def truncated(self) -> int:
        for split in self.splits:
            self.split_data(split)
        return sum(self._cut.values())

    def make_embedding(self, d_model: int) -> nn.Module:
        return nn.Embedding(self.tokenizer.vocab_size, d_model)

    @torch.no_grad()
    def generate(self, model: nn.Module, prompt: str, max_new_tokens: int = 0,
                 temperature: float = 1.0, seed: int = 0) -> str:
        """The class the model gives `prompt` (`seqarena generate RUN --prompt TEXT`)."""
        x, mask, _ = tok.pack([self.tokenizer.encode(prompt)], self.config.seq_len)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            logits = model(Batch(x, torch.zeros(1, dtype=torch.long), mask).to(device))
        finally:
            model.train(was_training)
        return self.classes[int(logits.argmax(-1))]
