"""One configuration path for every command: defaults < TOML file < flags, then validation.

Each command's settings are one frozen dataclass whose defaults are commented where they are
declared (TrainConfig here; CompareConfig in compare.py, SweepConfig in bench/sweep.py,
GradientConfig in analyze.py). The same three steps build every one of them:

    layered(cls, read_toml(path), flags)   dicts applied in order, later wins, unknown keys named
    cls.__post_init__ -> check_fields       types and signs, one ConfigError naming the field
    help text                               the CLI reads defaults from the dataclass (default())

so a parameter given as `--d-model 128`, as `d_model = 128` in a TOML file, or left at its
default reaches the model by the same road (docs/architecture.md follows one).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from seqarena.errors import ConfigError, UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

C = TypeVar("C")
_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict,
          "tuple": tuple}
MERGED = ("model_args", "task_args")  # dict fields that layers merge key by key


# --- the three steps ----------------------------------------------------------------------------

def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a one-line UserError."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read config file ({e})") from None


def layered(cls: type[C], *layers: dict[str, Any], where: str = "config") -> C:
    """A `cls` from dicts applied in order (later wins; model_args/task_args merge by key;
    lists become tuples); an unknown key is a ConfigError listing the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    merged: dict[str, Any] = {}
    for layer in layers:
        unknown = sorted(set(layer) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: "
                              f"{', '.join(sorted(known))}")
        for key, value in layer.items():
            if key in MERGED and isinstance(value, dict):
                value = {**merged.get(key, {}), **value}
            merged[key] = tuple(value) if isinstance(value, list) else value
    return cls(**merged)


def check_fields(cfg: Any, positive: set[str] = frozenset(), fractions: set[str] = frozenset()) -> None:
    """ConfigError naming the first field of a config dataclass whose type or sign is wrong.

    Numbers must not be negative; those in `positive` must be above 0, `fractions` in [0, 1]."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kind = str(f.type).split("[")[0]
        want = _TYPES.get(kind)
        if want is None:
            continue
        if not isinstance(value, want) or (kind in ("int", "float") and isinstance(value, bool)):
            raise ConfigError(f"{f.name} must be of type {kind}, got {value!r}")
        if kind in ("int", "float"):
            if f.name in positive and not value > 0:
                raise ConfigError(f"{f.name} must be positive, got {value}")
            if not value >= 0:
                raise ConfigError(f"{f.name} must not be negative, got {value}")
            if f.name in fractions and value > 1:
                raise ConfigError(f"{f.name} is a fraction in [0, 1], got {value}")


def default(cls: type, name: str) -> Any:
    """The declared default of field `name`: what CLI help shows, so it is written once."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def parse_assignments(items: tuple[str, ...] | list[str], flag: str) -> dict[str, Any]:
    """KEY=VALUE strings (repeatable flags) as a dict; VALUE reads as a TOML literal when it is
    one (8, 0.5, true, "text"), else as a plain string."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip().replace("-", "_")] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def model_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """"transformer@positions=rope;heads=2" -> ("transformer", {"positions": "rope", "heads": 2}):
    one registered model under settings of its own, beside others in one comparison."""
    if "@" not in spec:
        return spec, {}
    name, _, fields = spec.partition("@")
    return name, parse_assignments([f for f in fields.split(";") if f], "model variant " + spec)


# --- training -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; CLI flags and TOML files set the same fields."""

    model: str = "lstm"  # registered model name (`seqarena models`)
    task: str = "adding"  # registered task name (`seqarena tasks`)
    seq_len: int = 64  # input length L the model sees
    steps: int = 1000  # optimizer steps; the lr schedule spans them
    batch_size: int = 32  # sequences per step (per process under data parallelism)
    d_model: int = 64  # model width D
    layers: int = 1  # stacked recurrent layers or Transformer blocks
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.01  # AdamW's decoupled decay, on matrices only (not biases, norms)
    warmup: float = 0.02  # fraction of the run over which the lr rises linearly from ~0
    min_lr: float = 0.1  # the cosine decays the lr to this fraction of lr at the end
    clip: float = 1.0  # largest global gradient norm; 0 turns clipping off
    dropout: float = 0.0  # dropout inside the model; 0 keeps the run bitwise reproducible
    seed: int = 0  # seeds python, numpy, torch: the data, the initial weights and dropout
    eval_every: int = 100  # evaluate on the validation split every N steps; 0: only at the end
    log_every: int = 10  # write a line to metrics.jsonl every N steps
    checkpoint_every: int = 500  # save a checkpoint every N steps; 0: only at the end
    keep_checkpoints: int = 2  # how many of the newest checkpoints to keep
    patience: int = 0  # early stopping after N evaluations without improvement; 0: off
    out: str = "runs"  # parent directory of run directories
    name: str = ""  # run directory name; "" -> "<model>-<task>-L<seq_len>-s<seed>"
    device: str = "auto"  # "cpu", "cuda", "cuda:N" or "auto" (CUDA when available)
    threads: int = 0  # CPU threads torch may use; 0: one per core available to this process
    budget_seconds: float = 0.0  # stop after this much training time, the lr decaying over it
    model_args: dict = field(default_factory=dict)  # other fields of the model's config
    task_args: dict = field(default_factory=dict)  # other fields of the task's config
    tensorboard: bool = False  # also write TensorBoard event files into the run directory
    final_split: str = "test"  # split the finished run is scored on; "val": test stays unread
    lr_tuned: bool = False  # lr was chosen by compare's validation search (recorded, not used)
    label: str = ""  # the name results carry; "": model. compare's variants, e.g.
    #                  "transformer@positions=rope", train the model with their model_args

    def __post_init__(self):
        check_fields(self, positive=_POSITIVE, fractions={"warmup", "min_lr"})
        if not self.model or not self.task:
            raise ConfigError("model and task must be named")
        if self.warmup == 1:
            raise ConfigError("warmup must be below 1 (a fraction of the run), got 1")
        if self.dropout >= 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.name and not re.fullmatch(r"[\w][\w.+=-]*", self.name):
            raise ConfigError(f"name must be a plain directory name (letters, digits, - _ . + =), "
                              f"got {self.name!r}")
        if self.final_split not in ("test", "val"):
            raise ConfigError(f"final_split must be test or val, got {self.final_split!r}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        for args, owned in (("model_args", _MODEL_FIELDS), ("task_args", _TASK_FIELDS)):
            clash = sorted(set(getattr(self, args)) & owned)
            if clash:
                raise ConfigError(f"{args} may not set {clash[0]!r}: it is a training field "
                                  f"(--{clash[0].replace('_', '-')})")

    @property
    def run_name(self) -> str:
        return self.name or f"{self.model}-{self.task}-L{self.seq_len}-s{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.run_name


_POSITIVE = {"seq_len", "steps", "batch_size", "d_model", "layers", "lr", "log_every",
             "keep_checkpoints"}
_MODEL_FIELDS = {"d_model", "layers", "dropout"}  # set through TrainConfig, not model_args
_TASK_FIELDS = {"seq_len", "seed"}  # set through TrainConfig, not task_args
# Fields that change nothing about the trajectory: a resumed run may differ in these.
RESUMABLE_CHANGES = {"out", "name", "device", "threads", "tensorboard", "eval_every", "log_every",
                     "checkpoint_every", "keep_checkpoints"}


def config_from(*layers: dict[str, Any], where: str = "config") -> TrainConfig:
    """A TrainConfig from dicts applied in order (see layered)."""
    return layered(TrainConfig, *layers, where=where)


def read_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The TrainConfig a run directory was trained with (its config.json)."""
    path = Path(run_dir) / "config.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run_dir}: not a run directory (no config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a seqarena run config")
    return config_from(doc, where=str(path))


def resolve_config(toml: str | None, flags: dict[str, Any], resume: bool = False) -> TrainConfig:
    """The config of `seqarena train`: defaults < the run's config.json (on resume) < TOML < flags."""
    file_layer = read_toml(toml) if toml else {}
    cfg = config_from(file_layer, flags, where=str(toml or "flags"))
    if resume and (cfg.run_dir / "config.json").exists():
        saved = dataclasses.asdict(read_run_config(cfg.run_dir))
        cfg = config_from(saved, file_layer, flags, where=str(toml or "flags"))
    return cfg


def normalized(cfg: TrainConfig, model_config: Any, task_config: Any) -> TrainConfig:
    """model_args and task_args as the built configs hold them ("8" from a flag becomes 8), so
    that the same settings given by a flag or by a TOML file compare equal on --resume."""
    return dataclasses.replace(
        cfg, model_args={k: getattr(model_config, k) for k in cfg.model_args},
        task_args={k: getattr(task_config, k) for k in cfg.task_args})
