"""minGRU and minLSTM with negative_eigen (Grazzi et al. 2024): a_t in (-1, 1), every impl but
the log-space scan, all equal to the sequential mode, gradients included."""

import numpy as np
import pytest
import torch

from seqarena.errors import ConfigError
from seqarena.models import build_model
from seqarena.models.minimal import MinGRUCell, MinGRUNegCell, MinLSTMCell, MinLSTMNegCell
from seqarena.models.scan import scan_sequential

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

NAMES = ["mingru", "minlstm"]


def build(name, impl, dtype=torch.float64, **fields):
    torch.manual_seed(0)
    fields = {"d_model": 6, "layers": 2, "expansion": 1.5, "negative_eigen": True, **fields}
    return build_model(name, impl=impl, **fields).to(dtype)


def outputs_and_grads(model, x, weight):
    x = x.clone().requires_grad_()
    y = model(x)
    (y * weight.to(y.dtype)).sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in model.parameters()]


def max_relative_error(actual, reference):
    return max((got.double() - want).abs().max().item() / (1 + want.abs().max().item())
               for got, want in zip(actual, reference))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("L", [1, 2, 17, 64])
def test_scan_and_chunked_match_the_sequential_mode_outputs_and_gradients(name, L):
    g = torch.Generator().manual_seed(L)
    x = torch.randn(3, L, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(3, L, 6, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build(name, "sequential"), x, weight)
    for impl in ("scan", "chunked"):
        assert max_relative_error(outputs_and_grads(build(name, impl), x, weight),
                                  reference) <= 1e-10
        assert max_relative_error(outputs_and_grads(build(name, impl, torch.float32), x.float(),
                                                    weight), reference) <= 1e-5


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("impl", ["scan", "chunked", "sequential"])
def test_step_by_step_decoding_matches_the_parallel_forward(name, impl):
    model = build(name, impl, torch.float32).eval()
    x = torch.randn(2, 33, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        parallel = model(x)
        state, steps = model.init_state(2), []
        for x_t in x.unbind(1):
            y_t, state = model.step(state, x_t)
            steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, dim=1), parallel, rtol=1e-5, atol=1e-5)


def test_mingru_coefficient_is_one_minus_twice_the_gate_and_b_is_unchanged():
    k, x = np.linspace(-6, 6, 25), np.linspace(-2, 2, 25)
    u = torch.tensor(np.concatenate([k, x]))[None]  # (1, 2N): [k, x~]
    a, b = MinGRUNegCell.coefficients(u)
    z = 1 / (1 + np.exp(-k))
    np.testing.assert_allclose(a[0].numpy(), 1 - 2 * z, atol=1e-12)  # 2 (1 - z) - 1
    np.testing.assert_allclose(b[0].numpy(), MinGRUCell.coefficients(u)[1][0].numpy())
    assert (a.abs() < 1).all() and (a < 0).any() and (a > 0).any()


def test_minlstm_coefficient_is_twice_the_normalised_forget_gate_minus_one():
    u = torch.randn(4, 9, dtype=torch.float64)
    a, b = MinLSTMNegCell.coefficients(u)
    a0, b0 = MinLSTMCell.coefficients(u)
    torch.testing.assert_close(a, 2 * a0 - 1)
    torch.testing.assert_close(b, b0)


def test_only_a_negative_coefficient_lets_the_state_change_sign():
    """a_t, b_t > 0 keep h_t > 0 for ever; a_t < 0 flips it: what parity needs (Grazzi et al.)."""
    # write h~ = 3.5 once (z = 1/2), then gates near 1 with h~ ~ 0: "flip" tokens
    k = torch.tensor([0.0, 4.0, 4.0, -4.0, 4.0])[None, :, None]  # (1, L, 1)
    x = torch.tensor([3.0, -10.0, -10.0, -10.0, -10.0])[None, :, None]
    u = torch.cat([k, x], dim=-1)
    plain = scan_sequential(*MinGRUCell.coefficients(u))
    negative = scan_sequential(*MinGRUNegCell.coefficients(u))
    assert (plain > 0).all()
    assert (negative < 0).any() and (negative > 0).any()


def test_logscan_with_negative_eigen_is_a_config_error_naming_the_field():
    for name in NAMES:
        with pytest.raises(ConfigError, match="negative_eigen") as e:
            build_model(name, impl="logscan", negative_eigen=True)
        assert "\n" not in str(e.value)
