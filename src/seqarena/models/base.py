"""The backbone contract: everything the trainer, the tasks, the bench and the report may ask of a
model, declared in one place and checked when a model is built.

A backbone maps (B, L, D) -> (B, L, D). Tasks own the embedding before it and the head after it,
so a backbone knows nothing of tokens, labels or losses. Like lm-evaluation-harness's `LM`, this
class is the whole seam: code outside `models/` reads only the names declared here.

    family          the architecture, "recurrent", "scan", "attention", "linear-attention" (a
                    plug-in may name its own; "plugin" by default): the report colours by it
    causal          True: output t reads inputs <= t only, so step() can decode
    seq2seq         False here; True for Seq2SeqBackbone (two inputs, one signature below)
    d_model         the width D in and out
    forward         the parallel path, (B, L, D) -> (B, L, D), mask (B, L) True at real tokens
    init_state/step the step-by-step path (hidden state or KV cache); StepNotSupported if none
    reference()     the same parameters on the readable path (fused -> cells, SDPA -> equations,
                    scan -> loop), for the checks a benchmark runs before it times a fast path
    uncounted_flops forward FLOPs that torch's FlopCounterMode cannot see (fused kernels, scans)
    state_size      floats step() carries per layer and sequence after n tokens (Zoology's axis:
                    a recurrence's is flat in n, a KV cache's grows with it)
    longest_input   the longest sequence the model accepts (a learned position table), or None
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from seqarena.errors import UserError

# B batch, L length (S source, T target), D model width


class StepNotSupported(NotImplementedError):
    """The model has no step-by-step path (a plug-in without step(), a non-causal model)."""


class Backbone(nn.Module):
    """Base class of every model. Subclasses set `family`, `causal` and implement forward()."""

    family: ClassVar[str] = ""  # which family the report draws it with; set by each subclass
    seq2seq: ClassVar[bool] = False  # True only for Seq2SeqBackbone
    # config.impl of a fast path -> the impl that is its readable reference (see reference())
    references: ClassVar[dict[str, str]] = {}
    causal: bool  # True: position t sees only positions <= t, so step() can decode

    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        self.d_model = int(config.d_model)  # D: tasks size their embedding and head from it

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); mask (B, L) bool, True at real (non-padding) positions."""
        raise NotImplementedError

    def init_state(self, batch_size: int) -> Any:
        """The state before the first token: a hidden state, or an empty KV cache."""
        raise StepNotSupported(f"{type(self).__name__} has no step(): it cannot decode")

    def step(self, state: Any, x_t: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """One token (B, D) -> output (B, D) and the next state."""
        raise StepNotSupported(f"{type(self).__name__} has no step(): it cannot decode")

    def rebuild(self, config: Any) -> Backbone:
        """A fresh model of this class with another config (reference() uses it)."""
        return type(self)(config)

    def reference(self) -> Backbone | None:
        """This model on its readable reference path with the same parameters, or None when
        this already is the reference (or the family has none)."""
        impl = getattr(self.config, "impl", None)
        if impl not in self.references:
            return None
        twin = self.rebuild(dataclasses.replace(self.config, impl=self.references[impl]))
        some = next(self.parameters(), None)
        if some is not None:  # before loading, so float64 weights are not rounded on the way
            twin.to(some.device, some.dtype)
        twin.load_state_dict(self.state_dict())
        return twin.train(self.training)

    def uncounted_flops(self, batch: int, seq_len: int) -> float | None:
        """Forward FLOPs FlopCounterMode misses for this input size; None: it sees them all.

        Call it outside any FlopCounterMode of your own: a model may probe the counter."""
        return None

    def longest_input(self) -> int | None:
        """The most tokens one sequence may hold (a learned position table's rows); None: any."""
        return None

    def state_size(self, n_tokens: int) -> int | None:
        """Floats step() carries per layer and sequence once n_tokens have been read; None when
        the model does not say (a plug-in)."""
        return None


class Seq2SeqBackbone(Backbone):
    """Encoder-decoder: encode(src) -> memory; the decoder reads the target causally."""

    seq2seq: ClassVar[bool] = True
    causal = True  # over the target: step() decodes it token by token
    encoder: Backbone  # the part that runs once over the source

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src (B, S, D), src_mask (B, S) -> memory (B, S, D)."""
        raise NotImplementedError

    def forward(self, src: torch.Tensor, tgt: torch.Tensor,  # type: ignore[override]
                src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: src (B, S, D), tgt (B, T, D) -> (B, T, D)."""
        raise NotImplementedError

    def init_state(self, batch_size: int, memory: torch.Tensor,  # type: ignore[override]
                   src_mask: torch.Tensor | None = None) -> Any:
        """The decoding state after the source was encoded into memory (B, S, D)."""
        raise StepNotSupported(f"{type(self).__name__} has no step(): it cannot decode")

    def uncounted_flops(self, batch: int, seq_len: int,  # type: ignore[override]
                        tgt_len: int | None = None) -> float | None:
        """As Backbone's, for a source of seq_len and a target of tgt_len (default seq_len)."""
        return None


def check_contract(model: Any, name: str, d_model: int) -> None:
    """UserError naming the first part of the contract `model` (built as `name`) does not meet."""
    where = f"model {name!r} ({type(model).__name__})"
    if not isinstance(model, Backbone):
        raise UserError(f"{where} is not a seqarena.models.Backbone; derive it from Backbone "
                        "(see docs/architecture.md)")
    if not isinstance(model.family, str) or not model.family:
        raise UserError(f"{where} declares no family; set the class attribute family, e.g. "
                        "family = 'recurrent'")
    if not isinstance(getattr(model, "causal", None), bool):
        raise UserError(f"{where} must set causal to True or False, "
                        f"got {getattr(model, 'causal', None)!r}")
    if model.d_model != d_model:
        raise UserError(f"{where} has d_model={model.d_model}, its config says {d_model}")
    if model.seq2seq:
        if not isinstance(model, Seq2SeqBackbone):
            raise UserError(f"{where} says seq2seq=True but is not a Seq2SeqBackbone")
        if not isinstance(getattr(model, "encoder", None), Backbone):
            raise UserError(f"{where} is an encoder-decoder without an encoder Backbone")
    base = Seq2SeqBackbone if model.seq2seq else Backbone
    overridden = {m: getattr(type(model), m) is not getattr(base, m) for m in ("init_state", "step")}
    if overridden["init_state"] != overridden["step"]:
        has, lacks = sorted(overridden, key=lambda m: not overridden[m])
        raise UserError(f"{where} defines {has}() but not {lacks}(); decoding needs both")
