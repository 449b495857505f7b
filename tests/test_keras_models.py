"""The Keras models give, through seqarena's wrapper, what the same Keras layers give directly."""

import numpy as np
import pytest
import torch

from seqarena.models import build_model
from seqarena.models.keras_models import import_keras

keras = import_keras()


def test_simple_rnn_matches_its_equations_in_numpy():
    """h_t = tanh(x_t W + h_{t-1} U + b) with the layer's own kernel, recurrent kernel and bias."""
    ours = build_model("keras-simple-rnn", d_model=16)
    W, U, b = (np.asarray(w, dtype=np.float64) for w in ours.rnn.get_weights())
    x = torch.randn(3, 7, 16)
    h, ys = np.zeros((3, 16)), []
    for x_t in x.double().numpy().transpose(1, 0, 2):
        h = np.tanh(x_t @ W + h @ U + b)
        ys.append(h)
    np.testing.assert_allclose(ours(x).detach().numpy(), np.stack(ys, 1), rtol=0, atol=1e-5)


def test_simple_rnn_step_matches_forward():
    model = build_model("keras-simple-rnn", d_model=8)
    x = torch.randn(2, 6, 8)
    state, ys = model.init_state(2), []
    for t in range(6):
        y, state = model.step(state, x[:, t])
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), model(x), rtol=0, atol=1e-5)


def test_mha_matches_multi_head_attention_in_numpy():
    """softmax(q k^T / sqrt(K)) v per head, with the layer's own projections (kernels (D, H, K),
    output kernel (H, K, D))."""
    ours = build_model("keras-mha", d_model=16)
    Wq, bq, Wk, bk, Wv, bv, Wo, bo = (np.asarray(w, dtype=np.float64)
                                      for w in ours.mha.get_weights())
    x = torch.randn(3, 5, 16)
    xs = x.double().numpy()
    q, k, v = (np.einsum("bld,dhk->blhk", xs, W) + b for W, b in ((Wq, bq), (Wk, bk), (Wv, bv)))
    scores = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhqs,bshk->bqhk", weights, v)
    expected = np.einsum("bqhk,hkd->bqd", out, Wo) + bo
    np.testing.assert_allclose(ours(x).detach().numpy(), expected, rtol=0, atol=1e-5)


def test_keras_parameters_train_through_torch_optimizer():
    model = build_model("keras-simple-rnn", d_model=8)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == 3  # kernel, recurrent kernel, bias
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    before = [p.detach().clone() for p in trainable]
    model(torch.randn(2, 4, 8)).pow(2).mean().backward()
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, trainable))
