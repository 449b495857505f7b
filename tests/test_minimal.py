"""minGRU and minLSTM: every impl against the token-by-token cell, decoding, numpy equations.

Tolerances: float64 paths must agree to 1e-10. float32 paths are compared with the float64
sequential path on the same weights: max |error| <= 1e-5 * (1 + max |reference|), outputs and
gradients alike (gradients of parameters sum over B * L positions, so they can be large); at
L=4096, where float32 itself drifts further, within twice the float32 loop's own error.
Decoding against the parallel forward, both float32: torch.testing's rtol = atol = 1e-5.
"""

import numpy as np
import pytest
import torch

from seqarena.errors import ConfigError
from seqarena.flops import count_flops
from seqarena.models import MODELS, build_model
from seqarena.models.minimal import MinGRUCell, MinLSTMCell, _FusedMinScan
from seqarena.models.scan import scan_sequential

NAMES = ["mingru", "minlstm"]
IMPLS = ["scan", "chunked", "logscan", "sequential"]


def build(name, impl="scan", dtype=torch.float32, seed=0, **fields):
    torch.manual_seed(seed)
    fields = {"d_model": 6, "layers": 2, "expansion": 1.5, **fields}
    return build_model(name, impl=impl, **fields).to(dtype)


def outputs_and_grads(model, x, weight, run=lambda model, x: model(x)):
    """run(model, x) (the forward by default), then the gradients of sum(output * weight) for x
    and every parameter."""
    model.zero_grad()
    x = x.clone().requires_grad_()
    y = run(model, x)
    (y * weight.to(y.dtype)).sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in model.parameters()]


def errors(actual, reference):
    return [(got.double() - want).abs().max().item() / (1 + want.abs().max().item())
            for got, want in zip(actual, reference)]


def assert_close(actual, reference, tol):
    for error in errors(actual, reference):
        assert error <= tol, f"relative error {error:.3g} > {tol:g}"


def stepwise(model, x):
    state, ys = model.init_state(x.shape[0]), []
    for x_t in x.unbind(1):
        y_t, state = model.step(state, x_t)
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("L", [1, 2, 3, 17, 64])
def test_every_impl_matches_the_sequential_mode_outputs_and_gradients(name, L):
    g = torch.Generator().manual_seed(L)
    x = torch.randn(3, L, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(3, L, 6, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build(name, "sequential", torch.float64), x, weight)
    for impl in IMPLS:
        assert_close(outputs_and_grads(build(name, impl, torch.float64), x, weight), reference,
                     1e-10)
        if impl != "logscan":  # float32 log-space loses precision by design, see test_scan.py
            assert_close(outputs_and_grads(build(name, impl), x.float(), weight), reference, 1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_fused_scan_at_length_4096_in_float32_is_as_exact_as_the_float32_loop(name):
    """Against float64: within 1e-5, or within twice the float32 loop's own error where float32
    itself loses more (minLSTM's gradients summed over 4096 steps: ~2.5e-5)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4096, 3, generator=g, dtype=torch.float64)
    weight = torch.randn(1, 4096, 3, generator=g, dtype=torch.float64)
    fields = {"d_model": 3, "layers": 1, "expansion": 1.0}
    reference = outputs_and_grads(build(name, "sequential", torch.float64, **fields), x, weight)
    loop32 = errors(outputs_and_grads(build(name, "sequential", **fields), x.float(), weight),
                    reference)
    fused32 = errors(outputs_and_grads(build(name, "scan", **fields), x.float(), weight),
                     reference)
    assert fused32[0] <= 1e-5  # the output
    for fused, loop in zip(fused32, loop32):
        assert fused <= max(1e-5, 2 * loop), (fused, loop)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("L", [1, 2, 3, 17, 64, 4096])
def test_step_by_step_decoding_matches_the_parallel_forward(name, L):
    fields = {"d_model": 3, "layers": 1} if L == 4096 else {}
    model = build(name, **fields).eval()
    x = torch.randn(2 if L < 4096 else 1, L, model.config.d_model,
                    generator=torch.Generator().manual_seed(L))
    with torch.no_grad():
        parallel = model(x)
        stepped, _ = stepwise(model, x)
    torch.testing.assert_close(stepped, parallel, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", [MinGRUCell, MinLSTMCell])
@pytest.mark.parametrize("regime", ["small", "mixed"])
def test_fused_cell_is_exact_where_the_product_of_forget_gates_underflows(cell, regime):
    """a_t ~ 1e-3 for 4096 steps, or a_t either ~1e-6 or ~1: the product of a_t is 0 in float32."""
    g = torch.Generator().manual_seed(6)
    n, lstm = 2, cell is MinLSTMCell
    if regime == "small":  # k ~ 7: z ~ 0.999, a = 1 - z ~ 1e-3
        r = 7 + 0.5 * torch.rand(1, 4096, n, generator=g, dtype=torch.float64)
    else:  # k ~ +14 (a ~ 1e-6) or ~ -7 (a ~ 0.999)
        r = torch.where(torch.rand(1, 4096, n, generator=g) < 0.5, 14.0, -7.0).double()
    x = torch.randn(1, 4096, n, generator=g, dtype=torch.float64)
    # minLSTM's r is log(i / f), and log(sigmoid(r) / sigmoid(-r)) = r: kf = -r, ki = r
    u64 = torch.cat([-r, r, x] if lstm else [r, x], dim=-1).requires_grad_()
    a, b = cell.coefficients(u64)
    assert (a.float().cumprod(dim=1)[:, -1] == 0).all()
    reference = scan_sequential(a, b)
    weight = torch.randn(reference.shape, generator=g, dtype=torch.float64)
    (reference * weight).sum().backward()

    u32 = u64.detach().float().requires_grad_()
    h32 = _FusedMinScan.apply(u32, lstm)
    (h32 * weight.float()).sum().backward()
    assert_close([h32.detach(), u32.grad], [reference.detach(), u64.grad], 1e-5)


def numpy_layer_norm(x, weight, bias):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * weight + bias


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("name", NAMES)
def test_cell_equations_match_a_hand_written_numpy_computation(name):
    """minGRU: h_t = (1 - z_t) h_{t-1} + z_t g(x~_t); minLSTM: h_t = f'_t h_{t-1} + i'_t g(x~_t)."""
    model = build(name, d_model=3, layers=1, expansion=1.0)
    with torch.no_grad():  # random norm parameters, so they are tested too
        for p in model.parameters():
            p.normal_(generator=torch.Generator().manual_seed(p.numel()))
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(7))
    P = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    xs = x.double().numpy()
    u = numpy_layer_norm(xs, P["layers.0.norm.weight"], P["layers.0.norm.bias"]) \
        @ P["layers.0.proj.weight"].T  # (B, L, n_proj * N)
    h, hs = np.zeros((2, 3)), []
    for t in range(4):
        if name == "mingru":
            k, xt = u[:, t, :3], u[:, t, 3:]
            z = sigmoid(k)
            h_tilde = np.where(xt >= 0, xt + 0.5, sigmoid(xt))
            h = (1 - z) * h + z * h_tilde
        else:
            kf, ki, xt = u[:, t, :3], u[:, t, 3:6], u[:, t, 6:]
            f, i = sigmoid(kf), sigmoid(ki)
            h_tilde = np.where(xt >= 0, xt + 0.5, sigmoid(xt))
            h = f / (f + i) * h + i / (f + i) * h_tilde
        hs.append(h)
    y = xs + np.stack(hs, 1) @ P["layers.0.out.weight"].T
    expected = numpy_layer_norm(y, P["norm.weight"], P["norm.bias"])
    with torch.no_grad():
        for impl in IMPLS:
            model.layers[0].impl = impl
            np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stepwise(model, x)[0].numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_mlp_and_expansion_variant_steps_like_it_runs_in_parallel(name):
    model = build(name, d_model=4, expansion=2.0, ff_mult=2.0).eval()
    x = torch.randn(2, 9, 4, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        torch.testing.assert_close(stepwise(model, x)[0], model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_state_is_one_vector_per_layer_whatever_the_length(name):
    model = build(name, d_model=4, layers=3, expansion=1.5)
    sizes = []
    for L in (1, 50):
        _, state = stepwise(model, torch.randn(2, L, 4))
        sizes.append([tuple(h.shape) for h in state])
    assert sizes[0] == sizes[1] == [(2, 6)] * 3
    assert [tuple(h.shape) for h in model.init_state(2)] == [(2, 6)] * 3


def test_registry_describes_the_costs():
    for name in NAMES:
        spec = MODELS.get(name)
        assert "log L" in spec.train_cost and spec.decode_cost == "O(1)"
        assert build_model(name).causal


@pytest.mark.parametrize("name,n_proj", [("mingru", 2), ("minlstm", 3)])
def test_flops_are_the_matmuls_and_the_elementwise_scan_counts_zero(name, n_proj):
    model = build(name, d_model=8, layers=2, expansion=1.5)  # N = 12
    x = torch.randn(4, 10, 8)
    # per layer and token: the gates' Linear D -> n_proj N and the output Linear N -> D
    assert count_flops(lambda: model(x)) == 2 * 4 * 10 * (8 * n_proj * 12 + 12 * 8) * 2


@pytest.mark.parametrize("fields,field", [
    ({"impl": "fast"}, "impl"),
    ({"expansion": 0.01}, "expansion"),
    ({"ff_mult": -1.0}, "ff_mult"),
    ({"layers": 0}, "layers"),
    ({"dropout": 1.0}, "dropout"),
    ({"no_such_field": 1}, "no_such_field"),
])
def test_bad_config_is_a_config_error_naming_the_field(fields, field):
    for name in NAMES:
        with pytest.raises(ConfigError, match=field):
            build_model(name, **fields)
