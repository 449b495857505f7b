"""Multi-head attention: the equations, and the fused SDPA kernel beside them on the same weights.

References:
- Vaswani et al. 2017, "Attention Is All You Need", section 3.2 (scaled dot-product and
  multi-head attention): https://arxiv.org/abs/1706.03762
- nanoGPT `model.py`, `CausalSelfAttention`: `scaled_dot_product_attention` as the fast path with
  the manual `softmax(q @ k^T / sqrt(d)) @ v` right under `else`.
- torch.nn.MultiheadAttention: the same packed `in_proj` layout, so its weights copy over as is.
- Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding" (RoPE),
  https://arxiv.org/abs/2104.09864, in GPT-NeoX's half-split layout (see rope()).
- Press, Smith & Lewis 2022, "Train Short, Test Long: Attention with Linear Biases Enables Input
  Length Extrapolation" (ALiBi), https://arxiv.org/abs/2108.12409, and its reference code
  ofirpress/attention_with_linear_biases for the slopes of a head count that is not a power of 2.

Masks follow the Backbone contract: True marks a position that takes part (a real token, a key a
query may see); padding and the future are False.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# B batch, L query length, S key length, D model width, H heads, Dh head width (D / H)

IMPLS = ("sdpa", "manual")
RELATIVE = ("rope", "alibi")  # positions that self-attention applies inside its scores


def rope(t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """RoPE: t (B, H, L, Dh) at positions pos (L,), each pair of dims rotated by pos * theta_i.

    Pairs are (i, i + Dh/2), GPT-NeoX's half-split layout, not the paper's interleaved (2i, 2i+1):
    the same rotations on permuted dims, so q.k is unchanged, and no strided gather.
    theta_i = 10000^(-2i/Dh), the sinusoids' frequencies: rotating q by m and k by n leaves q.k
    a function of m - n only, so attention sees relative positions and no table bounds L.
    """
    half = t.shape[-1] // 2
    theta = 10000.0 ** (-torch.arange(half, device=t.device, dtype=torch.float64) * 2 / t.shape[-1])
    angle = pos.to(t.device, torch.float64)[:, None] * theta  # (L, Dh/2)
    cos, sin = angle.cos().to(t.dtype), angle.sin().to(t.dtype)
    t1, t2 = t[..., :half], t[..., half:]  # (B, H, L, Dh/2) each
    return torch.cat((t1 * cos - t2 * sin, t1 * sin + t2 * cos), dim=-1)


def alibi_slopes(heads: int) -> torch.Tensor:
    """m_h = 2^(-8h/H), h = 1..H, for H a power of 2; otherwise the paper's rule: the slopes of
    the power of 2 below H, then every other slope of twice that power, for the heads left."""
    def power_of_2(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    below = 2 ** math.floor(math.log2(heads))
    slopes = power_of_2(below) + power_of_2(2 * below)[0::2][:heads - below]
    return torch.tensor(slopes)  # (H,)


class KVCache:
    """Keys and values of the tokens seen so far, for step-by-step decoding.

    A self-attention cache grows: its buffers double when full, so an append is amortised O(1)
    where a torch.cat per token would copy the whole cache every step. A memory cache holds the
    keys and values of an encoder's output, computed once for the whole decode. Buffers are
    written in place: decode under torch.no_grad() and train with forward().
    """

    def __init__(self, k: torch.Tensor | None = None, v: torch.Tensor | None = None):
        self.memory = k is not None  # True: fixed cross-attention keys, never appended to
        self.k, self.v = k, v  # (B, H, capacity, Dh)
        self.length = 0 if k is None else k.size(2)

    def append(self, k_t: torch.Tensor, v_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add keys and values (B, H, n, Dh); return all of them so far, (B, H, length, Dh)."""
        n = k_t.size(2)
        if self.k is None or self.length + n > self.k.size(2):
            self._grow(k_t, max(16, 2 * (self.length + n)))
        self.k[:, :, self.length:self.length + n] = k_t
        self.v[:, :, self.length:self.length + n] = v_t
        self.length += n
        return self.keys_values()

    def keys_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[:, :, :self.length], self.v[:, :, :self.length]  # (B, H, length, Dh)

    def _grow(self, like: torch.Tensor, capacity: int) -> None:
        B, H, _, Dh = like.shape
        k = like.new_empty(B, H, capacity, Dh)
        v = like.new_empty(B, H, capacity, Dh)
        if self.k is not None:
            k[:, :, :self.length] = self.k[:, :, :self.length]
            v[:, :, :self.length] = self.v[:, :, :self.length]
        self.k, self.v = k, v


class MultiHeadAttention(nn.Module):
    """Self-attention (x attends to x) or cross-attention (x attends to memory), H heads."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, impl: str = "sdpa",
                 positions: str = "none"):
        super().__init__()
        if d_model % heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        if positions == "rope" and (d_model // heads) % 2:
            raise ValueError(f"RoPE rotates pairs of dims: head width {d_model // heads} is odd")
        self.d_model, self.heads, self.dropout, self.impl = d_model, heads, dropout, impl
        # "rope" or "alibi": positions applied here, to self-attention; anything else: none here
        self.positions = positions
        if positions == "alibi":
            self.register_buffer("slopes", alibi_slopes(heads), persistent=False)  # (H,)
        # W_q, W_k, W_v stacked as rows, (3D, D): self-attention projects in one matmul
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)  # W_o, mixes the concatenated heads
        self.recorded: list[torch.Tensor] | None = None  # a list: keep weights (record_attention)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """x (B, L, D) attends to itself, or to memory (B, S, D); key_mask (B, S) -> (B, L, D)."""
        D = self.d_model
        # Q = X W_q, K = M W_k, V = M W_v, with M = X for self-attention
        if memory is None:
            q, k, v = self.in_proj(x).split(D, dim=2)  # 3 x (B, L, D)
        else:
            w, b = self.in_proj.weight, self.in_proj.bias
            q = F.linear(x, w[:D], b[:D])  # (B, L, D)
            k, v = F.linear(memory, w[D:], b[D:]).split(D, dim=2)  # 2 x (B, S, D)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, H, L|S, Dh)
        if memory is None:  # positions relate tokens of one sequence: self-attention only
            q, k = self._rotate(q, 0), self._rotate(k, 0)
            return self._attend(q, k, v, key_mask, causal, self._bias(q.size(2), k.size(2)))
        return self._attend(q, k, v, key_mask, causal)

    def memory_cache(self, memory: torch.Tensor) -> KVCache:
        """Keys and values of memory (B, S, D), computed once for cross-attention while decoding."""
        D = self.d_model
        k, v = F.linear(memory, self.in_proj.weight[D:], self.in_proj.bias[D:]).split(D, dim=2)
        return KVCache(self._heads(k), self._heads(v))

    def step(self, x_t: torch.Tensor, cache: KVCache,
             key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One new token x_t (B, 1, D) -> (B, 1, D); self-attention caches its key and value."""
        D = self.d_model
        if cache.memory:
            q = F.linear(x_t, self.in_proj.weight[:D], self.in_proj.bias[:D])  # (B, 1, D)
            k, v = cache.keys_values()
            return self._attend(self._heads(q), k, v, key_mask, causal=False)
        q, k_t, v_t = self.in_proj(x_t).split(D, dim=2)  # 3 x (B, 1, D)
        t = cache.length  # the new token's position; the cache keeps keys already rotated
        q, k_t = self._rotate(self._heads(q), t), self._rotate(self._heads(k_t), t)
        k, v = cache.append(k_t, self._heads(v_t))
        # the cache holds only the past and the present, so the causal mask has nothing to hide
        return self._attend(q, k, v, key_mask, causal=False, bias=self._bias(1, k.size(2)))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, L, _ = t.shape
        return t.view(B, L, self.heads, -1).transpose(1, 2)  # (B, H, L, Dh), a view, no copy

    def _rotate(self, t: torch.Tensor, start: int) -> torch.Tensor:
        """RoPE on q or k (B, H, L, Dh) at positions start, start + 1, ...; others: t as is."""
        if self.positions != "rope":
            return t
        return rope(t, torch.arange(start, start + t.size(2)))

    def _bias(self, L: int, S: int) -> torch.Tensor | None:
        """ALiBi's -m_h |i - j| (H, L, S) for the last L of S positions; None without ALiBi.
        Causal attention sees j <= i only, where this is the paper's -m_h (i - j); a
        bidirectional encoder penalises distance both ways."""
        if self.positions != "alibi":
            return None
        i = torch.arange(S - L, S, device=self.slopes.device)  # (L,) query positions
        j = torch.arange(S, device=self.slopes.device)  # (S,) key positions
        return -self.slopes[:, None, None] * (i[:, None] - j[None, :]).abs()  # (H, L, S)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_mask: torch.Tensor | None, causal: bool,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """head_i = softmax(Q_i K_i^T / sqrt(d_k) + bias_i) V_i; MultiHead = Concat(heads) W_o."""
        B, H, L, Dh = q.shape
        S = k.size(2)
        fused = self.impl == "sdpa" and self.recorded is None
        # is_causal (no mask tensor) lets the kernel skip the key blocks above the diagonal
        is_causal = causal and fused and key_mask is None and L == S and bias is None
        mask = None  # (B|1, 1, L|1, S) bool, True where query l may see key s
        if key_mask is not None:
            mask = key_mask[:, None, None, :]  # (B, 1, 1, S)
        if causal and not is_causal:
            # query l is the (S - L + l)-th key: it sees keys up to and including itself
            past = torch.ones(L, S, dtype=torch.bool, device=q.device).tril(S - L)  # (L, S)
            mask = past if mask is None else mask & past
        dropout = self.dropout if self.training else 0.0
        if fused:
            if bias is not None:  # a float attn_mask is added to the scores: bias, -inf hidden
                bias = bias.to(q.dtype)
                mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                               is_causal=is_causal)  # (B, H, L, Dh)
        else:
            # Dividing by sqrt(d_k), d_k = Dh: with unit-variance q and k a dot product of Dh
            # terms has variance Dh, which would push softmax into saturation where its
            # gradients vanish; the scaling keeps the scores' variance at 1 for any head width.
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(Dh))  # (B, H, L, S)
            if bias is not None:
                att = att + bias  # (B, H, L, S)
            if mask is not None:
                att = att.masked_fill(~mask, float("-inf"))
            att = att.softmax(dim=-1)
            if mask is not None:
                # a query that may see no key (a padding row) gets zeros, as SDPA returns
                att = att.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
            if self.recorded is not None:
                self.recorded.append(att.detach())
            y = F.dropout(att, dropout, self.training) @ v  # (B, H, L, Dh): each head's context
        # SDPA lays its output out as (B, L, H, Dh) already, so for it this reshape copies nothing
        y = y.transpose(1, 2).reshape(B, L, H * Dh)  # (B, L, D): Concat(heads)
        return self.out_proj(y)


class record_attention:
    """`with record_attention(model) as maps: model(x)`: maps[name] lists weights (B, H, L, S).

    Recording switches the attention layers to the manual path, the only one that forms the
    weights; each call (a forward, or one decoding step) appends one tensor.
    """

    def __init__(self, model: nn.Module):
        self.layers = {name: m for name, m in model.named_modules()
                       if isinstance(m, MultiHeadAttention)}

    def __enter__(self) -> dict[str, list[torch.Tensor]]:
        maps = {}
        for name, layer in self.layers.items():
            layer.recorded = maps[name] = []
        return maps

    def __exit__(self, *exc) -> None:
        for layer in self.layers.values():
            layer.recorded = None
