"""The Task contract and registry.

A task owns its data, the embedding that turns its inputs into (B, L, D), the head that turns the
backbone's (B, L, D) into predictions, its loss and its metric. It never imports a model: it meets
a backbone only through the Backbone contract (forward, init_state, step).

How the trainer uses a task:

    model = task.wrap(backbone)                    # SequenceModel: embedding -> backbone -> head
    for batch in task.batches("train", 32, seed=rank):
        loss = task.loss(model(batch), batch)
    task.evaluate(model, "val")                    # {metric_name: value, ...} on fixed data
    task.evaluate_examples(model, "test")          # each example's sums: intervals over examples

Padding is always on the right: real tokens first, then padding, with mask True at real tokens.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqarena.errors import ConfigError
from seqarena.registry import Registry

# B batch, L length, D model width, F input features, C classes, V vocabulary, K regression outputs


@dataclass
class Batch:
    x: torch.Tensor  # (B, L) int64 tokens, or (B, L, F) float features
    y: torch.Tensor  # targets: (B,) classes, (B, L) tokens (-100 = ignore), (B,) or (B, K) floats
    mask: torch.Tensor | None = None  # (B, L) bool, True at real (non-padding) positions
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. seq2seq source/target

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return Batch(move(self.x), move(self.y), move(self.mask),
                     {k: move(v) for k, v in self.extra.items()})

    def __len__(self) -> int:
        return self.x.shape[0]

    def select(self, index: slice | torch.Tensor) -> "Batch":
        """The examples at `index` (a slice or a 1-D index tensor) along the batch dimension."""
        pick = lambda t: t[index] if isinstance(t, torch.Tensor) else t  # noqa: E731
        return Batch(pick(self.x), pick(self.y), pick(self.mask),
                     {k: pick(v) for k, v in self.extra.items()})


IGNORE = -100  # target value of positions that carry no loss (F.cross_entropy's ignore_index)


@dataclass(frozen=True)
class TaskConfig:
    """Fields every task has; tasks subclass it with their own, each commented."""

    seq_len: int = 64  # input length L the backbone sees
    seed: int = 0  # seed of the data generator (train and held-out splits derive from it)

    zero_ok: ClassVar[tuple[str, ...]] = ()  # int fields for which 0 means "derive a default"

    def __post_init__(self):
        self._coerce()
        self.validate()

    def _coerce(self) -> None:
        """Accept values typed loosely on a command line: "8" for 8, and 2020 for "2020" (a CSV
        column so named)."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            kind, value = hints[f.name], getattr(self, f.name)
            try:
                if kind is bool and isinstance(value, str):
                    value = {"true": True, "1": True, "false": False, "0": False}[value.lower()]
                elif kind is int and isinstance(value, str):
                    value = int(value)
                elif kind is float and type(value) in (str, int):
                    value = float(value)
                elif kind is str and type(value) in (int, float):
                    value = str(value)
            except (KeyError, ValueError):
                raise ConfigError(f"{type(self).__name__}.{f.name} must be {kind.__name__}, "
                                  f"got {value!r}") from None
            if kind in (int, float, str, bool) and not (
                    isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
                raise ConfigError(f"{type(self).__name__}.{f.name} must be {kind.__name__}, "
                                  f"got {value!r}")
            object.__setattr__(self, f.name, value)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and f.name != "seed" \
                    and value <= 0 and not (value == 0 and f.name in self.zero_ok):
                raise ConfigError(f"{type(self).__name__}.{f.name} must be positive, got {value}")
        if self.seed < 0:
            raise ConfigError(f"{type(self).__name__}.seed must be >= 0, got {self.seed}")

    def need_data(self, task: str, data: str, form: str, what: str) -> None:
        """ConfigError unless `data` (the config's --data) names something; `form` is FILE or DIR,
        `what` says what it must hold."""
        if not data:
            raise ConfigError(f"task {task!r} needs data={form} (--data): {what}")

    def need_seq_len(self, task: str, minimum: int, why: str) -> None:
        """ConfigError unless seq_len >= minimum; `why` says where the minimum comes from."""
        if self.seq_len < minimum:
            raise ConfigError(f"task {task!r} needs seq_len >= {minimum} ({why}); "
                              f"got seq_len={self.seq_len}")


# --- the composed model: embedding -> backbone -> head --------------------------------------

class SequenceModel(nn.Module):
    """What the trainer trains: `model(batch) -> pred`, then `task.loss(pred, batch)`."""

    def __init__(self, embedding: nn.Module, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.embedding, self.backbone, self.head = embedding, backbone, head

    def forward(self, batch: Batch) -> torch.Tensor:
        h = self.backbone(self.embedding(batch.x), mask=batch.mask)  # (B, L, D)
        return self.head(h, batch.mask)


def pool(h: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """(B, L, D) -> (B, D): the last real position of a causal model (the only one that has seen
    the whole sequence), the mean over real positions of a bidirectional one."""
    if causal:
        if mask is None:
            return h[:, -1]
        last = mask.shape[1] - 1 - mask.flip(1).int().argmax(1)  # (B,) index of the last True
        return h[torch.arange(h.shape[0], device=h.device), last]
    if mask is None:
        return h.mean(1)
    m = mask.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class PoolHead(nn.Module):
    """One prediction per sequence: pool, then a linear map to C classes or K real outputs."""

    def __init__(self, d_model: int, n_out: int, causal: bool, squeeze: bool = False):
        super().__init__()
        self.causal, self.squeeze = causal, squeeze  # squeeze: (B, 1) -> (B,) for one real target
        self.proj = nn.Linear(d_model, n_out)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.proj(pool(h, mask, self.causal))  # (B, C) or (B, K)
        return out.squeeze(-1) if self.squeeze else out


class TokenHead(nn.Module):
    """One prediction per position: (B, L, D) -> (B, L, V); also (B, D) -> (B, V) when decoding."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(h)


def unwrapped(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper, or the model itself."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --- metric sums: (total, count) pairs that add up over batches ------------------------------

def token_sums(logits: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Cross-entropy (nats) and accuracy over the positions whose target is not IGNORE, summed
    per example: (B,) totals and (B,) counts."""
    B, V = y.shape[0], logits.shape[-1]
    logits, y = logits.reshape(B, -1, V).float(), y.reshape(B, -1)  # (B, T, V), (B, T)
    keep = y != IGNORE
    ce = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=IGNORE,
                         reduction="none").reshape(B, -1)  # (B, T), 0 where ignored
    right = (logits.argmax(-1) == y) & keep
    n = keep.sum(1).double()
    return {"cross_entropy": (ce.double().sum(1), n), "accuracy": (right.sum(1).double(), n)}


def squared_error_sums(pred: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Squared error summed per example: (B,) totals and (B,) counts."""
    err = (pred.float() - y.float()).reshape(y.shape[0], -1)  # (B, K)
    return {"mse": ((err.double() ** 2).sum(1), torch.full((y.shape[0],), float(err.shape[1]),
                                                           dtype=torch.float64))}


@dataclass
class ExampleScores:
    """Each held-out example's (total, count) sums of every metric. The metrics of any subset of
    the examples (a bootstrap resample) are finish(sum of totals / sum of counts)."""

    totals: dict[str, np.ndarray]  # key -> (N,)
    counts: dict[str, np.ndarray]  # key -> (N,)
    finish: Any  # the task's finish(): averages -> reported metrics

    def __len__(self) -> int:
        return len(next(iter(self.counts.values()))) if self.counts else 0

    def metrics(self, index: np.ndarray | None = None) -> dict[str, float]:
        """The metrics of the examples at `index` (all of them when None)."""
        pick = (lambda a: a) if index is None else (lambda a: a[index])  # noqa: E731
        means = {}
        for key in self.totals:
            count = float(pick(self.counts[key]).sum())
            means[key] = float(pick(self.totals[key]).sum()) / count if count else math.nan
        return self.finish(means)


# --- the task ------------------------------------------------------------------------------

class Task:
    """Base class. Subclasses set the class attributes and implement the methods below."""

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when the data or metric changes, so old results differ
    metric_name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    head_kind: ClassVar[str]  # "classify", "tokens" (per-token prediction), "regress", "seq2seq"
    needs_causal: ClassVar[bool] = False  # per-token prediction must not see the future
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    config_cls: ClassVar[type[TaskConfig]] = TaskConfig
    summary: ClassVar[str] = ""  # one line for `seqarena tasks`

    def __init__(self, config: TaskConfig):
        self.config = config

    def make_embedding(self, d_model: int) -> nn.Module:
        """Inputs -> (B, L, D)."""
        raise NotImplementedError

    def make_head(self, d_model: int, causal: bool = True) -> nn.Module:
        """Backbone output (B, L, D) (and mask) -> predictions. `causal` picks the pooling."""
        raise NotImplementedError

    def wrap(self, backbone: nn.Module, d_model: int | None = None) -> nn.Module:
        """The trainable model: this task's embedding and head around `backbone`."""
        self.check_backbone(backbone)
        d = d_model or backbone.d_model
        return SequenceModel(self.make_embedding(d), backbone, self.make_head(d, backbone.causal))

    def check_backbone(self, backbone: nn.Module) -> None:
        """ConfigError if this task cannot use the backbone (a bidirectional model for an LM)."""
        kind = type(backbone).__name__
        if backbone.seq2seq:
            raise ConfigError(f"{kind} is an encoder-decoder; task {self.name!r} needs a model "
                              "mapping (B, L, D) -> (B, L, D) (only 'dates' takes one)")
        if self.needs_causal and not backbone.causal:
            raise ConfigError(f"task {self.name!r} predicts each next token and needs a causal "
                              f"model; {kind} is bidirectional (use a causal variant)")

    def batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        """Training batches are endless; held-out splits are finite and fixed under the seed."""
        raise NotImplementedError

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def score(self, model: nn.Module, batch: Batch) -> dict[str, tuple[Any, Any]]:
        """{metric: (total, count)} on one batch; evaluate() adds them up and divides. Totals and
        counts are floats for the whole batch, or (B,) tensors of per-example sums (as
        token_sums and squared_error_sums give): those let evaluate_examples() score each example
        without running the model once per example."""
        raise NotImplementedError

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics derived from the averages (e.g. bits from nats, RMSE from MSE)."""
        return metrics

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "val", batch_size: int = 64) -> dict[str, float]:
        """{metric_name: value, ...} of a composed model (see SequenceModel) on a held-out split."""
        if split == "train":
            raise ValueError("evaluate() scores a held-out split; training data is endless")
        return {**self.companion_metrics(model, batch_size),
                **self.evaluate_batches(model, self.batches(split, batch_size))}

    def evaluate_outputs(self, model: nn.Module, split: str = "val", batch_size: int = 64
                         ) -> tuple[dict[str, float], tuple[list, list] | None]:
        """evaluate(), and for a task scored on the whole split's outputs (a corpus metric such
        as chrF) its (outputs, references), for sacrebleu's paired test; None here."""
        return self.evaluate(model, split, batch_size), None

    def example_lengths(self, split: str) -> list[int] | None:
        """The input length of each held-out example, in the order evaluate_examples scores
        them, for a task tested at other lengths than it trains on; None here."""
        return None

    def trained_lengths(self) -> tuple[int, int] | None:
        """(shortest, longest) input length training draws, when example_lengths() says the
        held-out examples lie elsewhere; None here."""
        return None

    def companion_metrics(self, model: nn.Module, batch_size: int = 64) -> dict[str, float]:
        """Metrics reported beside every held-out evaluation (the demo tasks' training-set
        metrics, under train_ names); none by default."""
        return {}

    @torch.no_grad()
    def evaluate_batches(self, model: nn.Module, batches: Iterator[Batch]) -> dict[str, float]:
        totals, counts = defaultdict(float), defaultdict(float)
        for sums in self._scored(model, batches, per_example=False):
            for key, (total, count) in sums.items():
                totals[key] += float(total.sum()) if torch.is_tensor(total) else total
                counts[key] += float(count.sum()) if torch.is_tensor(count) else count
        return self.finish({k: totals[k] / counts[k] if counts[k] else math.nan for k in totals})

    @torch.no_grad()
    def evaluate_examples(self, model: nn.Module, split: str = "val",
                          batch_size: int = 64) -> ExampleScores:
        """Each example's metric sums on a held-out split, for intervals over the examples;
        `.metrics()` equals evaluate(). A task whose score() returns whole-batch floats is scored
        one example at a time here (slower, same numbers)."""
        if split == "train":
            raise ValueError("evaluate_examples() scores a held-out split; training data is endless")
        totals, counts = defaultdict(list), defaultdict(list)
        for sums in self._scored(model, self.batches(split, batch_size), per_example=True):
            for key, (total, count) in sums.items():
                totals[key].append(np.asarray(total, dtype=np.float64).reshape(-1))
                counts[key].append(np.asarray(count, dtype=np.float64).reshape(-1))
        return ExampleScores({k: np.concatenate(v) for k, v in totals.items()},
                             {k: np.concatenate(v) for k, v in counts.items()}, self.finish)

    def _scored(self, model: nn.Module, batches: Iterator[Batch], per_example: bool):
        """score() of every batch, in eval mode; per_example: (B,) numpy sums for every key."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        try:
            for batch in batches:
                batch = batch.to(device)
                sums = self.score(model, batch)
                if not per_example:
                    yield sums
                elif all(torch.is_tensor(v) and v.shape == (len(batch),) for pair in sums.values()
                         for v in pair):
                    yield {k: (t.cpu().numpy(), c.cpu().numpy()) for k, (t, c) in sums.items()}
                else:
                    one = [self.score(model, batch.select(slice(i, i + 1))) for i in range(len(batch))]
                    yield {k: ([float(torch.as_tensor(s[k][0]).sum()) for s in one],
                               [float(torch.as_tensor(s[k][1]).sum()) for s in one]) for k in sums}
        finally:
            model.train(was_training)

    def baselines(self) -> dict[str, float]:
        """Reference scores a model must beat to have learned anything (e.g. memoryless).
        Each key ends with the metric it is a value of, e.g. `memoryless_accuracy`."""
        return {}

    def truncated(self) -> int | None:
        """Examples cut to seq_len in this task's data (every split); None: it never cuts."""
        return None

    def save(self, run_dir: Path) -> None:
        """Write into a new run directory what rebuilding this task needs besides its config
        (e.g. the tokenizer learnt from the data), so the run never depends on the data again."""

    def restore(self, run_dir: Path) -> None:
        """Read back what save() wrote into run_dir (nothing written: nothing to do)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "metric": self.metric_name,
                "higher_is_better": self.higher_is_better, "head": self.head_kind,
                "params": dataclasses.asdict(self.config)}

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has splits {self.splits}, not {split!r}")


SPLIT_KEYS = {"train": 0, "val": 1, "test": 2}


def split_rng(task_seed: int, split: str, stream: int = 0) -> np.random.Generator:
    """The random generator of one split; `stream` tells training streams apart (e.g. DDP ranks)."""
    return np.random.default_rng([task_seed, SPLIT_KEYS[split], stream])


def chunks(data: Batch, batch_size: int) -> Iterator[Batch]:
    for start in range(0, len(data), batch_size):
        yield data.select(slice(start, start + batch_size))


@dataclass(frozen=True)
class GeneratedConfig(TaskConfig):
    eval_size: int = 512  # examples in each held-out split (val, test): enough, and quick on a CPU


class GeneratedTask(Task):
    """Data drawn by a seeded generator: endless training batches, fixed held-out sets."""

    config_cls: ClassVar[type[TaskConfig]] = GeneratedConfig

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        """n fresh examples."""
        raise NotImplementedError

    def batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        self.check_split(split)
        if split != "train":
            return chunks(self.heldout(split), batch_size)
        return self._stream(batch_size, split_rng(self.config.seed, "train", seed))

    def _stream(self, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
        while True:
            yield self.sample(batch_size, rng)

    def heldout(self, split: str) -> Batch:
        """The fixed held-out set of a split: config.eval_size examples, generated once."""
        cache = self.__dict__.setdefault("_heldout", {})
        if split not in cache:
            cache[split] = self.sample(self.config.eval_size, split_rng(self.config.seed, split))
        return cache[split]


class DatasetTask(Task):
    """A fixed dataset per split; training walks through shuffled epochs of it, endlessly."""

    def split_data(self, split: str) -> Batch:
        """All examples of a split (cached by the subclass if it is costly to build)."""
        raise NotImplementedError

    def collate(self, batch: Batch) -> Batch:
        """Turn stored examples into what the model reads (e.g. compact dtypes into int64)."""
        return batch

    def batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        self.check_split(split)
        if split != "train":
            return map(self.collate, chunks(self.split_data(split), batch_size))
        return self._epochs(batch_size, split_rng(self.config.seed, "train", seed))

    def _epochs(self, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
        data = self.split_data("train")
        order = np.empty(0, dtype=np.int64)
        while True:
            while len(order) < batch_size:  # batches straddle epochs, so none is short
                order = np.concatenate([order, rng.permutation(len(data))])
            index, order = order[:batch_size], order[batch_size:]
            yield self.collate(data.select(torch.from_numpy(index)))


TASKS: Registry[type[Task]] = Registry("task")


def register_task(name: str):
    """Class decorator: `@register_task("copy")` on a Task subclass."""

    def register(cls: type[Task]) -> type[Task]:
        cls.name = name
        TASKS.add(name, cls)
        return cls

    return register


def make_task(name: str, strict: bool = True, **fields: Any) -> Task:
    """Build a registered task from its config fields; strict=False drops unknown fields."""
    cls = TASKS.get(name)
    known = {f.name for f in dataclasses.fields(cls.config_cls)}
    unknown = sorted(set(fields) - known)
    if unknown and strict:
        raise ConfigError(f"task {name!r} has no parameter {unknown[0]!r}; "
                          f"its parameters are: {', '.join(sorted(known))}")
    return cls(cls.config_cls(**{k: v for k, v in fields.items() if k in known}))


def describe_tasks(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """What `seqarena tasks` shows: each task's metric, head and parameters with defaults,
    read from the classes, so listing loads no data. Unknown names raise UserError."""
    rows = []
    for name in names or TASKS:
        cls = TASKS.get(name)
        params = {f.name: f.default for f in dataclasses.fields(cls.config_cls)}
        rows.append({"name": name, "metric": cls.metric_name,
                     "higher_is_better": cls.higher_is_better, "head": cls.head_kind,
                     "version": cls.version, "summary": cls.summary, "params": params})
    return rows
