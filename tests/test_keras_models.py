"""The Keras models give, through seqarena's wrapper, what the same Keras layers give directly."""

import pytest
import torch

from seqarena.models import build_model
from seqarena.models.keras_models import import_keras

keras = import_keras()


def test_simple_rnn_matches_keras_layer_called_directly():
    ours = build_model("keras-simple-rnn", d_model=16)
    direct = keras.layers.SimpleRNN(16, return_sequences=True)
    direct.build((None, None, 16))
    direct.set_weights(ours.rnn.get_weights())
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(ours(x), direct(x), rtol=0, atol=1e-6)


def test_simple_rnn_step_matches_forward():
    model = build_model("keras-simple-rnn", d_model=8)
    x = torch.randn(2, 6, 8)
    state, ys = model.init_state(2), []
    for t in range(6):
        y, state = model.step(state, x[:, t])
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), model(x), rtol=0, atol=1e-5)


def test_mha_matches_keras_layer_called_directly():
    ours = build_model("keras-mha", d_model=16)
    direct = keras.layers.MultiHeadAttention(num_heads=2, key_dim=32)
    direct.build((None, None, 16), (None, None, 16))
    direct.set_weights(ours.mha.get_weights())
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(ours(x), direct(x, x), rtol=0, atol=1e-6)


def test_keras_parameters_train_through_torch_optimizer():
    model = build_model("keras-simple-rnn", d_model=8)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == 3  # kernel, recurrent kernel, bias
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    before = [p.detach().clone() for p in trainable]
    model(torch.randn(2, 4, 8)).pow(2).mean().backward()
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, trainable))
