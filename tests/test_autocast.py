"""bf16 autocast: matmuls may drop to bf16, but recurrences and scans run in float32 (a product of
L bf16 gates, 8 bits of mantissa, loses the signal), and a bf16 training step of every model
stays finite and close to the float32 step. Checked on CPU with torch.autocast."""

import pytest
import torch

from seqarena.errors import ConfigError, UserError
from seqarena.models import MODELS, build_model

B, L, D = 2, 12, 16
# |bf16 - float32| / (1 + |float32|): the loss, and the largest gradient difference
LOSS_TOLERANCE, GRAD_TOLERANCE = 2e-2, 5e-2


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("impl", ["fused", "scratch"])
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_recurrent_cells_run_in_float32_under_bf16_autocast(name, impl):
    model = build_model(name, d_model=D, impl=impl)
    with bf16():
        y, state = model.run(torch.randn(B, L, D))
    assert y.dtype == torch.float32
    assert all(s.dtype == torch.float32 for s in (state if isinstance(state, tuple) else (state,)))


@pytest.mark.parametrize("impl", ["scan", "chunked", "logscan", "sequential"])
@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_scans_run_in_float32_under_bf16_autocast(name, impl):
    model = build_model(name, d_model=D, impl=impl)
    seen = []
    model.layers[0].out.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    with bf16():
        model(torch.randn(B, L, D))
        model.step(model.init_state(B), torch.randn(B, D))
    assert seen == [torch.float32, torch.float32]  # the scan's h, then the step's


def step_of(model, autocast: bool):
    """Loss and gradients of one mean-square training step, under bf16 autocast or not."""
    torch.manual_seed(1)
    x = torch.randn(B, L, D)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = model(x, x) if model.seq2seq else model(x)
        loss = y.float().square().mean()
    loss.backward()
    return loss.item(), {n: p.grad.float() for n, p in model.named_parameters()
                         if p.grad is not None}


@pytest.mark.parametrize("name", MODELS.names())
def test_a_bf16_training_step_of_every_model_is_finite_and_close_to_float32(name):
    try:
        model = build_model(name, d_model=D)
    except ConfigError:
        raise  # a built-in that cannot be built at this width is a bug, not a missing package
    except UserError as e:  # an optional package (e.g. keras) is not installed
        pytest.skip(str(e))
    model.eval()  # no dropout: both steps see the same function
    loss32, grads32 = step_of(model, autocast=False)
    loss16, grads16 = step_of(model, autocast=True)
    assert abs(loss16 - loss32) / (1 + abs(loss32)) < LOSS_TOLERANCE
    assert grads16.keys() == grads32.keys() and grads16
    for n, g in grads16.items():
        assert torch.isfinite(g).all(), n
        error = (g - grads32[n]).abs().max().item() / (1 + grads32[n].abs().max().item())
        assert error < GRAD_TOLERANCE, f"{n}: {error:.3g}"
