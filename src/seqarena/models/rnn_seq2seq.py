"""An RNN encoder-decoder with attention, the architecture Transformers replaced in translation.

A bidirectional recurrent encoder reads the source; a unidirectional decoder reads the target
(teacher forcing) and attends over the encoder's outputs with Luong's "general" score. The
decoder's recurrence sees only the target and its start state (a summary of the source), so in
training it runs over the whole target in one fused call and attention is one batched matmul;
step() decodes one token at a time and agrees with decode().

References:
- I. Sutskever, O. Vinyals, Q. Le, "Sequence to Sequence Learning with Neural Networks", 2014.
- D. Bahdanau, K. Cho, Y. Bengio, "Neural Machine Translation by Jointly Learning to Align and
  Translate", ICLR 2015 (bidirectional encoder; decoder start state tanh(W * source summary)).
- M.-T. Luong, H. Pham, C. Manning, "Effective Approaches to Attention-based Neural Machine
  Translation", EMNLP 2015 (global attention, score h_t^T W_a h_s, output tanh(W_c [c_t; h_t])).
  Luong's optional input feeding is left out: it would make the decoder's recurrence wait on
  attention at every step and rule out the fused kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from seqarena.errors import ConfigError
from seqarena.models.base import Seq2SeqBackbone
from seqarena.models.recurrent import GRU, LSTM, RecurrentConfig, State
from seqarena.models.registry import ModelConfig, register_model

# B batch, S source length, T target length, D model width, K layers


@dataclass(frozen=True)
class RNNSeq2SeqConfig(ModelConfig):
    cell: str = "lstm"  # "lstm" or "gru": the recurrence of both encoder and decoder
    impl: str = "fused"  # "fused": torch's RNN kernels; "scratch": the readable cells, step by step

    def validate(self) -> None:
        super().validate()
        if self.cell not in ("lstm", "gru"):
            raise ConfigError(f"RNNSeq2SeqConfig.cell must be 'lstm' or 'gru', got {self.cell!r}")
        if self.impl not in ("fused", "scratch"):
            raise ConfigError(f"RNNSeq2SeqConfig.impl must be 'fused' or 'scratch', "
                              f"got {self.impl!r}")
        if self.d_model % 2:
            raise ConfigError(f"RNNSeq2SeqConfig.d_model must be even (the bidirectional encoder "
                              f"gives each direction d_model/2 units), got {self.d_model}")


class DecodeState(NamedTuple):
    """What step() carries: the decoder's recurrent state and the source it attends over."""

    rnn: State  # h, or (h, c) for the LSTM, each (K, B, D)
    memory: torch.Tensor  # (B, S, D) encoder outputs h_s
    keys: torch.Tensor  # (B, S, D) W_a h_s, computed once per source
    src_mask: torch.Tensor | None  # (B, S) bool, True at real source tokens


@register_model("rnn-ed", RNNSeq2SeqConfig,
                "RNN encoder-decoder (bi-LSTM/GRU encoder) with Luong attention",
                train_cost="O(S + T) sequential", decode_cost="O(S)")
class RNNEncoderDecoder(Seq2SeqBackbone):
    """Encoder-decoder backbone: encode(src) -> memory, decode(tgt, memory) -> (B, T, D)."""

    family = "recurrent"
    references = {"fused": "scratch"}

    def __init__(self, config: RNNSeq2SeqConfig):
        super().__init__(config)
        family = {"lstm": LSTM, "gru": GRU}[config.cell]
        shape = dict(d_model=config.d_model, layers=config.layers, dropout=config.dropout,
                     impl=config.impl)
        self.encoder = family(RecurrentConfig(bidirectional=True, **shape))
        self.decoder = family(RecurrentConfig(bidirectional=False, **shape))
        D, K = config.d_model, config.layers
        self.init = nn.Linear(D, K * D)  # decoder start state from the mean of the source
        self.w_a = nn.Linear(D, D, bias=False)  # Luong's "general" score h_t^T W_a h_s
        self.w_c = nn.Linear(2 * D, D, bias=False)  # attentional output tanh(W_c [c_t; h_t])

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, D) -> memory (B, S, D); zeros at padding."""
        return self.encoder(src, src_mask)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor,
               src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: (B, T, D) -> (B, T, D); output t sees tgt[:, :t+1] and the source."""
        h, _ = self.decoder.run(tgt, self._start_state(memory, src_mask))  # (B, T, D)
        return self._attend(h, memory, self.w_a(memory), src_mask)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor,
                src_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(tgt, self.encode(src, src_mask), src_mask)

    def init_state(self, batch_size: int, memory: torch.Tensor,
                   src_mask: torch.Tensor | None = None) -> DecodeState:
        if memory.shape[0] != batch_size:
            raise ValueError(f"memory holds {memory.shape[0]} sequences, not {batch_size}")
        return DecodeState(self._start_state(memory, src_mask), memory, self.w_a(memory), src_mask)

    def step(self, state: DecodeState, y_t: torch.Tensor) -> tuple[torch.Tensor, DecodeState]:
        """One target token (B, D) -> output (B, D): O(1) recurrence plus O(S) attention."""
        h_t, rnn = self.decoder.step(state.rnn, y_t)  # (B, D)
        out = self._attend(h_t.unsqueeze(1), state.memory, state.keys, state.src_mask)  # (B, 1, D)
        return out.squeeze(1), state._replace(rnn=rnn)

    def _start_state(self, memory: torch.Tensor, src_mask: torch.Tensor | None) -> State:
        """s_0 = tanh(W mean_s h_s) for every decoder layer; the LSTM's cell starts at zero."""
        if src_mask is None:
            summary = memory.mean(dim=1)  # (B, D)
        else:
            m = src_mask.unsqueeze(-1).to(memory.dtype)  # (B, S, 1)
            summary = (memory * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)  # (B, D)
        B, K, D = memory.shape[0], self.config.layers, self.config.d_model
        h0 = torch.tanh(self.init(summary)).view(B, K, D).transpose(0, 1).contiguous()  # (K, B, D)
        return (h0, torch.zeros_like(h0)) if self.config.cell == "lstm" else h0

    def _attend(self, h, memory, keys, src_mask):
        """Global attention: h (B, T, D) queries the source; returns tanh(W_c [c_t; h_t])."""
        scores = h @ keys.transpose(1, 2)  # (B, T, S)
        if src_mask is not None:
            scores = scores.masked_fill(~src_mask.unsqueeze(1), float("-inf"))
        a = torch.softmax(scores, dim=-1)  # alignment weights over the source
        context = a @ memory  # (B, T, D)
        return torch.tanh(self.w_c(torch.cat([context, h], dim=-1)))

    def uncounted_flops(self, batch: int, seq_len: int, tgt_len: int | None = None) -> float:
        """Forward FLOPs FlopCounterMode misses (see Recurrent.uncounted_flops); the source has
        seq_len tokens, the target tgt_len (default seq_len). Attention's matmuls are visible."""
        tgt_len = seq_len if tgt_len is None else tgt_len
        return (self.encoder.uncounted_flops(batch, seq_len)
                + self.decoder.uncounted_flops(batch, tgt_len))
