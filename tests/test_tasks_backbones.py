"""Tiny backbones honouring the Backbone contract, for testing tasks without the model zoo.

The task tests import them from here; the tests below prove they keep the contract, so a task
test that fails points at the task, not at its stand-in model.
"""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from seqarena.models import Backbone, Seq2SeqBackbone

# B batch, L length, S source length, T target length, D model width


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class TinyGRU(Backbone):
    """Causal: a one-layer GRU. Padding sits at the end, so a causal model may ignore the mask."""

    family = "recurrent"
    causal = True

    def __init__(self, d_model: int = 16):
        super().__init__(SimpleNamespace(d_model=d_model))
        self.rnn = nn.GRU(d_model, d_model, batch_first=True)

    def forward(self, x, mask=None):
        return self.rnn(x)[0]

    def init_state(self, batch_size):
        return torch.zeros(1, batch_size, self.d_model, device=self.rnn.weight_hh_l0.device)

    def step(self, state, x_t):
        y, state = self.rnn(x_t[:, None], state)  # (B, 1, D)
        return y[:, 0], state


class TinyBiGRU(Backbone):
    """Bidirectional, hence not causal: no step()."""

    family = "recurrent"
    causal = False

    def __init__(self, d_model: int = 16):
        super().__init__(SimpleNamespace(d_model=d_model))
        self.rnn = nn.GRU(d_model, d_model // 2, batch_first=True, bidirectional=True)

    def forward(self, x, mask=None):
        return self.rnn(x)[0]


class TinySeq2Seq(Seq2SeqBackbone):
    """Encoder-decoder: a GRU encoder; a GRU decoder reading each target token plus the masked
    mean of the encoder's outputs."""

    family = "recurrent"

    def __init__(self, d_model: int = 16):
        super().__init__(SimpleNamespace(d_model=d_model))
        self.encoder = TinyGRU(d_model)
        self.decoder = nn.GRU(d_model, d_model, batch_first=True)

    @staticmethod
    def _context(memory, src_mask):
        if src_mask is None:
            return memory.mean(1)
        m = src_mask.unsqueeze(-1).float()  # (B, S, 1)
        return (memory * m).sum(1) / m.sum(1)

    def encode(self, src, src_mask=None):
        return self.encoder(src)

    def decode(self, tgt, memory, src_mask=None):
        return self.decoder(tgt + self._context(memory, src_mask)[:, None])[0]

    def forward(self, src, tgt, src_mask=None):
        return self.decode(tgt, self.encode(src, src_mask), src_mask)

    def init_state(self, batch_size, memory, src_mask=None):
        return torch.zeros(1, batch_size, memory.shape[-1]), self._context(memory, src_mask)

    def step(self, state, y_t):
        h, context = state
        y, h = self.decoder((y_t + context)[:, None], h)  # (B, 1, D)
        return y[:, 0], (h, context)


def test_tiny_gru_step_matches_forward():
    torch.manual_seed(0)
    model, x = TinyGRU(8), torch.randn(3, 5, 8)
    state, steps = model.init_state(3), []
    for t in range(5):
        y, state = model.step(state, x[:, t])
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), model(x))


def test_tiny_seq2seq_step_matches_decode():
    torch.manual_seed(0)
    model = TinySeq2Seq(8)
    src, tgt = torch.randn(2, 6, 8), torch.randn(2, 4, 8)
    src_mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    memory = model.encode(src, src_mask)
    state, steps = model.init_state(2, memory, src_mask), []
    for t in range(4):
        y, state = model.step(state, tgt[:, t])
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), model(src, tgt, src_mask))
