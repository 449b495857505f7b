"""seqarena: recurrent networks against Transformers, measured on your hardware."""

__version__ = "0.1.0"
