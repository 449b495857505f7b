"""Transformers: encoder and decoder blocks, a decoder-only/encoder stack, and an encoder-decoder.

References:
- Vaswani et al. 2017, "Attention Is All You Need" (post-norm blocks, sinusoidal positions,
  the encoder-decoder): https://arxiv.org/abs/1706.03762
- Radford et al. 2019, GPT-2, and nanoGPT `model.py` (pre-norm blocks, a final LayerNorm,
  the decoder-only stack trained on a causal mask).
- x-transformers: `Encoder` and `Decoder` are thin subclasses that only fix `causal`.
- torch.nn.TransformerEncoderLayer / TransformerDecoderLayer: the same block layouts, used by the
  tests as the reference with copied weights.
- RoPE (Su et al. 2021) and ALiBi (Press et al. 2022): relative positions that the self-attention
  layers apply inside their scores (attention.py), so no table bounds the length.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqarena.errors import ConfigError, UserError
from seqarena.models.attention import IMPLS, RELATIVE, KVCache, MultiHeadAttention
from seqarena.models.base import Backbone, Seq2SeqBackbone, StepNotSupported
from seqarena.models.registry import ModelConfig, register_model

# B batch, L length (T target, S source in the encoder-decoder), D model width, H heads,
# Dh head width (D / H), F feed-forward width

POSITIONS = ("sinusoidal", "learned", "none")  # added to the input: any block may use them
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


@dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    heads: int = 4  # attention heads H; d_model must be divisible by it (each head is D / H wide)
    d_ff: int = 0  # feed-forward width F; 0 means 4 * d_model, as in the 2017 paper and GPT-2
    causal: bool = True  # True: GPT-style decoder-only stack that decodes; False: bidirectional
    norm_first: bool = True  # True: pre-norm (GPT-2, needs no warm-up); False: post-norm (2017)
    positions: str = "sinusoidal"  # "sinusoidal" (fixed, any length), "learned" (max_len),
    #                                "none", "rope" (rotates q, k), "alibi" (a linear distance bias)
    max_len: int = 4096  # learned positions: the longest sequence; sinusoids: rows precomputed
    activation: str = "gelu"  # feed-forward nonlinearity: "gelu" (GPT-2) or "relu" (2017 paper)
    impl: str = "sdpa"  # "sdpa": fused attention kernel; "manual": the equations (attention maps)

    def validate(self) -> None:
        # written out rather than inherited: the shared check would reject d_ff=0 ("4 * d_model")
        name = type(self).__name__
        for field in ("d_model", "layers", "heads"):
            if getattr(self, field) <= 0:
                raise ConfigError(f"{name}.{field} must be positive, got {getattr(self, field)}")
        for field in ("d_ff", "max_len"):
            if getattr(self, field) < 0:
                raise ConfigError(f"{name}.{field} must be >= 0, got {getattr(self, field)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{name}.dropout must be in [0, 1), got {self.dropout}")
        check_block_fields(self, IMPLS, POSITIONS + RELATIVE)
        if self.positions == "rope" and (self.d_model // self.heads) % 2:
            raise ConfigError(f"{name}.positions='rope' rotates pairs of dims, and the head width "
                              f"d_model / heads = {self.d_model // self.heads} is odd; make it even")

    @property
    def ff_width(self) -> int:
        return self.d_ff or 4 * self.d_model


def check_block_fields(cfg, impls: tuple[str, ...],
                       positions: tuple[str, ...] = POSITIONS) -> None:
    """What every config of attention blocks checks: heads divide d_model, the named choices,
    and a max_len for learned positions; ConfigError naming the field."""
    name = type(cfg).__name__
    if cfg.d_model % cfg.heads != 0:
        raise ConfigError(f"{name}: d_model={cfg.d_model} is not divisible by "
                          f"heads={cfg.heads}; make d_model a multiple of heads")
    for field, choices in (("positions", positions), ("activation", tuple(ACTIVATIONS)),
                           ("impl", impls)):
        if getattr(cfg, field) not in choices:
            raise ConfigError(f"{name}.{field} must be one of {', '.join(choices)}, "
                              f"got {getattr(cfg, field)!r}")
    if cfg.positions == "learned" and cfg.max_len == 0:
        raise ConfigError(f"{name}.max_len must be positive with positions='learned'")


def sinusoids(pos: torch.Tensor, d_model: int) -> torch.Tensor:
    """PE(p, 2i) = sin(p / 10000^(2i/D)), PE(p, 2i+1) = cos(...): positions (L,) -> (L, D)."""
    # wavelengths grow geometrically, so each offset k moves every pair by a fixed rotation and
    # attention can pick out relative positions with a linear map
    inv_freq = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    angle = pos[:, None].double() * inv_freq.to(pos.device).double()  # (L, ceil(D/2))
    pe = torch.stack((angle.sin(), angle.cos()), dim=-1)  # (L, ceil(D/2), 2)
    return pe.flatten(1)[:, :d_model].float()  # (L, D): sin, cos, sin, cos, ...


class Positions(nn.Module):
    """Adds each token's position: sinusoids (Vaswani et al. 3.5), a learned table, or nothing
    (also for "rope" and "alibi", which self-attention applies)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.kind, self.max_len = config.positions, config.max_len
        if self.kind == "learned":
            self.table = nn.Embedding(config.max_len, config.d_model)
        elif self.kind == "sinusoidal":
            # fixed, so not saved; longer sequences compute theirs on the fly
            self.register_buffer("table", sinusoids(torch.arange(config.max_len), config.d_model),
                                 persistent=False)  # (max_len, D)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x (B, L, D) holding positions start, start + 1, ... -> x plus their encodings."""
        if self.kind not in ("learned", "sinusoidal"):
            return x
        end = start + x.shape[1]
        if self.kind == "learned":
            if end > self.max_len:
                raise UserError(f"a sequence of {end} tokens is longer than the max_len="
                                f"{self.max_len} learned positions; set max_len >= {end}, or "
                                "positions that need no table ('sinusoidal', 'rope', 'alibi')")
            return x + self.table.weight[start:end]
        if end <= self.table.shape[0]:
            return x + self.table[start:end]
        return x + sinusoids(torch.arange(start, end, device=x.device), x.shape[2]).to(x.dtype)


class FeedForward(nn.Module):
    """Position-wise MLP: D -> F -> D."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.ff_width)
        self.down = nn.Linear(config.ff_width, config.d_model)
        self.act = ACTIVATIONS[config.activation]
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.drop(self.act(self.up(x))))


class EncoderBlock(nn.Module):
    """Self-attention then feed-forward, each a residual branch with a LayerNorm before or after."""

    def __init__(self, config: TransformerConfig, causal: bool):
        super().__init__()
        self.causal, self.norm_first = causal, config.norm_first
        self.attn = MultiHeadAttention(config.d_model, config.heads, config.dropout, config.impl,
                                       config.positions)
        self.ff = FeedForward(config)
        self.norm1 = nn.LayerNorm(config.d_model)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D), mask (B, L) -> (B, L, D)."""
        return self._residuals(x, lambda h: self.attn(h, key_mask=mask, causal=self.causal))

    def step(self, x_t: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One new token x_t (B, 1, D) -> (B, 1, D), attending to the cached past."""
        return self._residuals(x_t, lambda h: self.attn.step(h, cache))

    def _residuals(self, x: torch.Tensor, attend) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop(attend(self.norm1(x)))
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop(attend(x)))
        return self.norm2(x + self.drop(self.ff(x)))


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention over the encoder's memory, then feed-forward."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.norm_first = config.norm_first
        shape = (config.d_model, config.heads, config.dropout, config.impl)
        self.self_attn = MultiHeadAttention(*shape, positions=config.positions)
        self.cross_attn = MultiHeadAttention(*shape)  # source and target positions do not compare
        self.ff = FeedForward(config)
        self.norm1 = nn.LayerNorm(config.d_model)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.norm3 = nn.LayerNorm(config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor,
                memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) over memory (B, S, D), memory_mask (B, S) -> (B, T, D)."""
        return self._residuals(x, lambda h: self.self_attn(h, causal=True),
                               lambda h: self.cross_attn(h, memory, key_mask=memory_mask))

    def step(self, x_t: torch.Tensor, caches: tuple[KVCache, KVCache],
             memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One new token x_t (B, 1, D) -> (B, 1, D); caches: (self-attention, memory)."""
        return self._residuals(x_t, lambda h: self.self_attn.step(h, caches[0]),
                               lambda h: self.cross_attn.step(h, caches[1], key_mask=memory_mask))

    def _residuals(self, x: torch.Tensor, attend, cross) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop(attend(self.norm1(x)))
            x = x + self.drop(cross(self.norm2(x)))
            return x + self.drop(self.ff(self.norm3(x)))
        x = self.norm1(x + self.drop(attend(x)))
        x = self.norm2(x + self.drop(cross(x)))
        return self.norm3(x + self.drop(self.ff(x)))


@dataclass
class DecodeState:
    """What step() carries from token to token."""

    caches: list  # per layer: a KVCache (self-attention), or (self, memory) caches per DecoderBlock
    t: int = 0  # position of the next token
    memory_mask: torch.Tensor | None = None  # (B, S) source padding, encoder-decoder only


@register_model("transformer", TransformerConfig,
                "Transformer: GPT-style causal decoder, or a bidirectional encoder (causal=False)",
                train_cost="O(L^2) attention (parallel over L)",
                decode_cost="O(L) per token (KV cache)")
class Transformer(Backbone):
    """Positions, a stack of self-attention blocks (causal per config), a final norm if pre-norm."""

    family = "attention"
    references = {"sdpa": "manual"}  # the fused kernel is checked against the equations

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        self.causal = config.causal
        self.pos = Positions(config)
        self.blocks = nn.ModuleList(EncoderBlock(config, self.causal) for _ in range(config.layers))
        # pre-norm leaves the residual stream unnormalised; post-norm blocks already end in a norm
        self.norm = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pos(x)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def longest_input(self) -> int | None:
        return self.config.max_len if self.config.positions == "learned" else None

    def state_size(self, n_tokens: int) -> int:
        """The KV cache: a key and a value of D floats for each token read, 2 n D."""
        return 2 * n_tokens * self.d_model

    def init_state(self, batch_size: int) -> DecodeState:
        return DecodeState([KVCache() for _ in self.blocks])

    def step(self, state: DecodeState, x_t: torch.Tensor) -> tuple[torch.Tensor, DecodeState]:
        """x_t (B, D) -> (B, D). Updates the caches in place; returns the same state."""
        if not self.causal:
            raise StepNotSupported("a transformer with causal=False is a bidirectional encoder: "
                                   "its outputs depend on future tokens, so it cannot decode step "
                                   "by step; set causal=True")
        x = self.pos(x_t[:, None, :], start=state.t)  # (B, 1, D)
        for block, cache in zip(self.blocks, state.caches):
            x = block.step(x, cache)
        state.t += 1
        return self.norm(x)[:, 0], state


class Encoder(Transformer):
    """Bidirectional: every position sees every other (BERT, the 2017 encoder)."""

    def __init__(self, config: TransformerConfig):
        super().__init__(dataclasses.replace(config, causal=False))


class Decoder(Transformer):
    """Causal: position t sees positions <= t (GPT), so it decodes token by token."""

    def __init__(self, config: TransformerConfig):
        super().__init__(dataclasses.replace(config, causal=True))


@register_model("transformer-ed", TransformerConfig,
                "Transformer encoder-decoder (Vaswani et al. 2017) for seq2seq tasks",
                train_cost="O(L^2) attention (parallel over L)",
                decode_cost="O(L) per token (KV cache)")
class EncoderDecoder(Seq2SeqBackbone):
    """An Encoder over the source; DecoderBlocks over the target that cross-attend to it."""

    family = "attention"
    references = {"sdpa": "manual"}

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        self.encoder = Encoder(config)
        self.pos = Positions(config)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src (B, S, D), src_mask (B, S) -> memory (B, S, D)."""
        return self.encoder(src, src_mask)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor,
               src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tgt (B, T, D), causal over T, cross-attending to memory (B, S, D) -> (B, T, D)."""
        x = self.pos(tgt)
        for block in self.blocks:
            x = block(x, memory, src_mask)
        return self.norm(x)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor,
                src_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(tgt, self.encode(src, src_mask), src_mask)

    def init_state(self, batch_size: int, memory: torch.Tensor,
                   src_mask: torch.Tensor | None = None) -> DecodeState:
        if memory.shape[0] != batch_size:
            raise ValueError(f"memory holds {memory.shape[0]} sequences, not {batch_size}")
        caches = [(KVCache(), b.cross_attn.memory_cache(memory)) for b in self.blocks]
        return DecodeState(caches, memory_mask=src_mask)

    def step(self, state: DecodeState, y_t: torch.Tensor) -> tuple[torch.Tensor, DecodeState]:
        """y_t (B, D), the newest target token -> (B, D). Updates the caches in place."""
        x = self.pos(y_t[:, None, :], start=state.t)  # (B, 1, D)
        for block, caches in zip(self.blocks, state.caches):
            x = block.step(x, caches, state.memory_mask)
        state.t += 1
        return self.norm(x)[:, 0], state
