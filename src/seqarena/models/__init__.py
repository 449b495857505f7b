"""The model zoo. Importing this package registers every built-in model, then the plug-ins."""

from seqarena.models.base import Backbone, Seq2SeqBackbone, StepNotSupported
from seqarena.models.registry import (MODELS, ModelConfig, ModelSpec, build_model, config_fields,
                                      count_params, make_config, register_model)

# Built-in families register themselves on import (one line each, below).
from seqarena.models import recurrent  # noqa: E402,F401
from seqarena.models import rnn_seq2seq  # noqa: E402,F401
from seqarena.models import transformer  # noqa: E402,F401
from seqarena.models import minimal  # noqa: E402,F401
from seqarena.models import linear_attention  # noqa: E402,F401
from seqarena.models import mlstm  # noqa: E402,F401
from seqarena.models import hawk  # noqa: E402,F401
from seqarena.models import retnet  # noqa: E402,F401
from seqarena.models import mamba2  # noqa: E402,F401
from seqarena.models import deltanet  # noqa: E402,F401
from seqarena.models import keras_models  # noqa: E402,F401  (keras itself loads on first build)

from seqarena.models import plugins  # noqa: E402  (after the built-ins: plug-ins cannot shadow them)

MODELS.fallback = plugins.resolve
plugins.register_entry_points()

__all__ = ["MODELS", "Backbone", "ModelConfig", "ModelSpec", "Seq2SeqBackbone", "StepNotSupported",
           "build_model", "config_fields", "count_params", "make_config", "register_model"]
