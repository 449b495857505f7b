"""The Elman RNN's spectral_radius init and its identity activation: the initial W_hh has the
requested largest |eigenvalue|, and a linear RNN's gradients grow or decay at exactly that rate."""

import numpy as np
import pytest
import torch

from seqarena.errors import ConfigError
from seqarena.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

D, L = 32, 60


def gradient_growth_rate(model, seed=0):
    """Per-step factor of ||d y_T / d x_t|| over the distance T - t: exp of the slope of a
    least-squares line through log-norm against distance (distances 10 and up, where the
    largest eigenvalue dominates W_hh^distance)."""
    x = torch.randn(1, L, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    J = torch.autograd.functional.jacobian(lambda x: model(x)[0, -1], x)  # (D, 1, L, D)
    norms = J[:, 0].transpose(0, 1).reshape(L, -1).norm(dim=1).numpy()  # (L,) one per t
    distance = L - 1 - np.arange(L)
    far = distance >= 10
    return float(np.exp(np.polyfit(distance[far], np.log(norms[far]), 1)[0]))


def rnn(seed=0, **fields):
    torch.manual_seed(seed)
    return build_model("rnn", d_model=D, impl="scratch", **fields).double()


@pytest.mark.parametrize("rho", [1.2, 0.8, 0.3])
def test_initial_recurrent_matrices_have_the_requested_spectral_radius(rho):
    torch.manual_seed(0)
    model = build_model("rnn", d_model=D, layers=2, bidirectional=True, spectral_radius=rho)
    matrices = [w for name, w in model.rnn.named_parameters() if name.startswith("weight_hh")]
    assert len(matrices) == 4  # 2 layers x 2 directions, each rescaled
    for w in matrices:
        radius = np.abs(np.linalg.eigvals(w.detach().double().numpy())).max()
        assert radius == pytest.approx(rho, rel=1e-5)


def test_zero_keeps_torchs_init():
    torch.manual_seed(0)
    plain = build_model("rnn", d_model=D)
    torch.manual_seed(0)
    zero = build_model("rnn", d_model=D, spectral_radius=0.0)
    assert torch.equal(plain.rnn.weight_hh_l0, zero.rnn.weight_hh_l0)


@pytest.mark.parametrize("rho", [1.2, 0.8])
@pytest.mark.parametrize("seed", [0, 1])
def test_linear_rnn_gradients_grow_at_the_spectral_radius_and_tanh_ones_slower(rho, seed):
    linear = gradient_growth_rate(rnn(seed, nonlinearity="identity", spectral_radius=rho), seed)
    assert linear == pytest.approx(rho, rel=0.10)
    # tanh' <= 1, and < 1 wherever the unit is active, shrinks every step's factor
    squashed = gradient_growth_rate(rnn(seed, nonlinearity="tanh", spectral_radius=rho), seed)
    assert squashed < linear


def test_identity_cell_is_a_linear_rnn_and_steps_like_it_runs():
    model = rnn(nonlinearity="identity", spectral_radius=0.9).eval()
    x = torch.randn(2, 9, D, dtype=torch.float64)
    w_ih, w_hh = model.rnn.weight_ih_l0, model.rnn.weight_hh_l0
    b = model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0
    h, want = torch.zeros(2, D, dtype=torch.float64), []
    for t in range(9):
        h = x[:, t] @ w_ih.T + h @ w_hh.T + b
        want.append(h)
    with torch.no_grad():
        torch.testing.assert_close(model(x), torch.stack(want, dim=1))
        state, steps = model.init_state(2), []
        for t in range(9):
            y_t, state = model.step(state, x[:, t])
            steps.append(y_t)
        torch.testing.assert_close(torch.stack(steps, dim=1), torch.stack(want, dim=1))


@pytest.mark.parametrize("name, fields, field", [
    ("rnn", {"nonlinearity": "identity"}, "impl='scratch'"),  # impl defaults to fused
    ("rnn", {"spectral_radius": -1.0}, "spectral_radius"),
    ("lstm", {"spectral_radius": 1.0}, "spectral_radius"),
    ("gru", {"spectral_radius": 1.0}, "spectral_radius"),
])
def test_config_errors_are_one_line_and_name_the_field(name, fields, field):
    with pytest.raises(ConfigError, match=field) as e:
        build_model(name, **fields)
    assert "\n" not in str(e.value)
