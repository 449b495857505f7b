"""What `seqarena models` shows: each model's size, causality, cost in L and decoding state."""

from __future__ import annotations

from typing import Any

from seqarena.errors import ConfigError, UserError
from seqarena.models import MODELS, build_model, count_params


STATE_AT = 1024  # tokens read when the state size is quoted: a KV cache grows with them


def describe_models(d_model: int = 64, layers: int = 1) -> list[dict[str, Any]]:
    """One row per registered model (plug-ins included), built at the given size; `state` is the
    floats step() carries per layer and sequence after STATE_AT tokens."""
    rows = []
    for name in MODELS:
        spec = MODELS.get(name)
        row = {"name": name, "family": None, "params": None, "causal": None, "train_cost": spec.train_cost,
               "decode_cost": spec.decode_cost, "state": None, "summary": spec.summary}
        try:
            model = build_model(name, strict=False, d_model=d_model, layers=layers)
        except ConfigError:
            raise
        except UserError as e:  # an optional dependency is missing, or a plug-in is broken
            row["summary"] = f"unavailable: {e}"
        else:
            row["params"] = count_params(model)
            row["causal"], row["family"] = model.causal, model.family
            row["state"] = model.state_size(STATE_AT) if model.causal else None
        rows.append(row)
    return rows
