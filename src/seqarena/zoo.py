"""What `seqarena models` shows: each model's size, causality and cost in L."""

from __future__ import annotations

from typing import Any

from seqarena.models import MODELS, build_model, count_params


def describe_models(d_model: int = 64, layers: int = 1) -> list[dict[str, Any]]:
    rows = []
    for name in MODELS:
        spec = MODELS.get(name)
        model = build_model(name, strict=False, d_model=d_model, layers=layers)
        rows.append({"name": name, "params": count_params(model),
                     "causal": bool(getattr(model, "causal", False)),
                     "train_cost": spec.train_cost, "decode_cost": spec.decode_cost,
                     "summary": spec.summary})
    return rows
