"""The model zoo. Importing this package registers every built-in model."""

from seqarena.models.registry import (MODELS, Backbone, ModelConfig, ModelSpec, build_model,
                                      config_fields, count_params, make_config, register_model)

__all__ = ["MODELS", "Backbone", "ModelConfig", "ModelSpec", "build_model", "config_fields",
           "count_params", "make_config", "register_model"]
