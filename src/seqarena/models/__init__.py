"""The model zoo. Importing this package registers every built-in model."""

from seqarena.models.registry import (MODELS, Backbone, ModelConfig, ModelSpec, build_model,
                                      config_fields, count_params, make_config, register_model)

from seqarena.models import recurrent  # noqa: E402,F401
from seqarena.models import rnn_seq2seq  # noqa: E402,F401
from seqarena.models import transformer  # noqa: E402,F401
from seqarena.models import minimal  # noqa: E402,F401

__all__ = ["MODELS", "Backbone", "ModelConfig", "ModelSpec", "build_model", "config_fields",
           "count_params", "make_config", "register_model"]
