"""Checkpoints: weights as safetensors plus a training state that loads with weights_only=True.

A checkpoint at step N is two files in runs/<name>/checkpoints/:
    step-0000000N.safetensors   the wrapped model's weights (safetensors: tensors only, no code)
    step-0000000N.state.pt      optimizer, step, RNG states, data position, trainer counters
Each file is written atomically (temp file, then rename) and the state file is written last, so
a checkpoint exists exactly when its state file does: a crash while saving leaves the previous
checkpoint whole. The state is loaded with torch.load(weights_only=True), which refuses any
pickled object other than tensors and plain containers, and then checked for our format tag.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from seqarena.errors import UserError
from seqarena.fileio import atomic_write

FORMAT = "seqarena-checkpoint"
VERSION = 1
_STATE = re.compile(r"step-(\d+)\.state\.pt")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    weights: Path
    state: Path


def save(ckpt_dir: str | Path, step: int, model: nn.Module, state: dict[str, Any],
         keep: int) -> Checkpoint:
    """Write the checkpoint of `step`, then delete all but the newest `keep` checkpoints."""
    ckpt_dir = Path(ckpt_dir)
    ckpt = Checkpoint(step, ckpt_dir / f"step-{step:08d}.safetensors",
                      ckpt_dir / f"step-{step:08d}.state.pt")
    # Every tensor its own contiguous copy: safetensors refuses tensors that share memory (tied
    # weights) and strided views (some wrapped models keep their weights as views).
    weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(ckpt.weights,
                 lambda tmp: save_file(weights, tmp, metadata={"format": FORMAT, "step": str(step)}))
    doc = {"format": FORMAT, "version": VERSION, "step": step, **state}
    atomic_write(ckpt.state, lambda tmp: torch.save(doc, tmp))
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        old.state.unlink()  # the state first: a checkpoint without it no longer exists
        old.weights.unlink(missing_ok=True)
    return ckpt


def list_checkpoints(ckpt_dir: str | Path) -> list[Checkpoint]:
    """The complete checkpoints in a directory, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    found = []
    for path in ckpt_dir.glob("step-*.state.pt"):
        m = _STATE.fullmatch(path.name)
        weights = ckpt_dir / f"step-{m.group(1)}.safetensors" if m else None
        if m and weights.exists():
            found.append(Checkpoint(int(m.group(1)), weights, path))
    return sorted(found, key=lambda c: c.step)


def latest(ckpt_dir: str | Path) -> Checkpoint | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def load_state(path: str | Path) -> dict[str, Any]:
    """The training state of a checkpoint; anything that is not one of ours is a UserError."""
    path = Path(path)
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint file") from None
    except Exception as e:  # a truncated zip, a foreign pickle, a refused global: none is ours
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:
            raise UserError(f"{path}: refused: it carries a pickled Python object "
                            f"({refused.group(1)}), and loading it could run code; a seqarena "
                            f"checkpoint holds only tensors and plain values") from None
        raise UserError(f"{path}: not a readable seqarena checkpoint (truncated, or another "
                        f"kind of file: {type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{path}: not a seqarena checkpoint (no {FORMAT!r} format tag)")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise UserError(f"{path}: checkpoint format version {doc.get('version')!r} is newer than "
                        f"this seqarena reads ({VERSION}); upgrade seqarena")
    return doc


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load safetensors weights into a model built from the same config."""
    path = Path(path)
    try:
        model.load_state_dict(load_file(str(path), device=str(next(model.parameters()).device)))
    except FileNotFoundError:
        raise UserError(f"{path}: no such weights file") from None
    except Exception as e:  # safetensors' header/size checks, or names and shapes that do not fit
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise UserError(f"{path}: cannot load these weights into the model ({reason})") from None


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, as tensors and plain values (weights_only-safe)."""
    key, pos, has_gauss, gauss = np.random.get_state()[1:]
    version, mt, gauss_next = random.getstate()
    state = {
        "python": {"version": version, "mt": list(mt), "gauss_next": gauss_next},
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["mt"]), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["key"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
