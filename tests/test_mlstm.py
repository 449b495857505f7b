"""mLSTM: chunked == recurrent == step-by-step == the paper's stabilised equations in numpy.

Tolerances: float64 paths agree to 1e-10 and match numpy to 1e-10; float32 paths are held to the
float64 ones with max |error| <= 1e-5 * (1 + max |reference|), outputs and gradients alike (as in
test_minimal.py). At L = 4096 the float64 reference is the chunked path, equal to the recurrent
one to 1e-10 at the shorter lengths. The tests count FLOPs; none of them times anything.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_minimal import errors, outputs_and_grads, stepwise

from seqarena.errors import ConfigError
from seqarena.flops import count_flops
from seqarena.models import MODELS, build_model
from seqarena.models.mlstm import MLSTMLayer, mlstm_chunked, mlstm_recurrent, mlstm_step

# B batch, L length, D model width, E inner width, H heads, Dh head width, C chunk, K conv

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# float32 tolerance once the stabiliser m is ~200: float32 holds m to 200 * 2^-24 = 1.2e-5, an
# error every weight exp(x - m) inherits, the loop adds up step by step, and a normaliser
# n^T q that nearly cancels magnifies. Measured: chunked 1e-5, recurrent and step 1e-4.
HUGE_TOLERANCE = 1e-3


def jitter(module, seed=0, scale=0.1):
    """Add noise to every parameter: at init the gates' weights are 0, which would leave i~ and
    f~ one constant per head and the tests blind to a wrong gate input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return module


def build(impl="chunked", dtype=torch.float64, seed=0, **fields):
    torch.manual_seed(seed)
    fields = {"d_model": 8, "heads": 2, "layers": 2, "chunk": 16, **fields}
    return jitter(build_model("mlstm", impl=impl, **fields).to(dtype), seed)


def assert_close(actual, reference, tol=1e-5):
    for i, error in enumerate(errors(actual, reference)):
        assert error <= tol, f"tensor {i}: relative error {error:.3g} > {tol:g}"


def numpy_mlstm(q, k, v, i_pre, f_pre, eps=1e-6):
    """Section 2.3 token by token with the reference's stabiliser m_t (m_0 = 0), float64.
    q, k, v (B, H, L, Dh), i~ and f~ (B, H, L) -> h~ (B, H, L, Dh)."""
    B, H, L, Dh = q.shape
    C, n, m, hs = np.zeros((B, H, Dh, Dh)), np.zeros((B, H, Dh)), np.zeros((B, H)), []
    for t in range(L):
        log_f = -np.logaddexp(0.0, -f_pre[..., t])  # log sigmoid(f~)
        m_new = np.maximum(log_f + m, i_pre[..., t])
        f, i = np.exp(log_f + m - m_new), np.exp(i_pre[..., t] - m_new)
        k_t, q_t = k[:, :, t] / np.sqrt(Dh), q[:, :, t]
        C = f[..., None, None] * C + i[..., None, None] * v[:, :, t, :, None] * k_t[..., None, :]
        n = f[..., None] * n + i[..., None] * k_t
        m = m_new
        num = np.einsum("bhij,bhj->bhi", C, q_t)
        den = np.maximum(np.abs(np.einsum("bhj,bhj->bh", n, q_t)), np.exp(-m))
        hs.append(num / (den + eps)[..., None])
    return np.stack(hs, axis=2)


def memory_inputs(L, B=2, H=2, Dh=4, gate_scale=3.0, dtype=torch.float64, seed=None):
    g = torch.Generator().manual_seed(L if seed is None else seed)
    q, k, v = (torch.randn(B, H, L, Dh, generator=g, dtype=dtype) for _ in range(3))
    i_pre, f_pre = (gate_scale * torch.randn(B, H, L, generator=g, dtype=dtype) for _ in range(2))
    return q, k, v, i_pre, f_pre


@pytest.mark.parametrize("L", [1, 2, 15, 16, 17, 100, 4096])
def test_recurrent_and_chunked_memory_match_the_papers_equations_in_numpy(L):
    q, k, v, i_pre, f_pre = memory_inputs(L, B=2 if L < 4096 else 1)
    expected = numpy_mlstm(*(t.numpy() for t in (q, k, v, i_pre, f_pre)))
    log_f = F.logsigmoid(f_pre)
    paths = [mlstm_chunked(q, k, v, i_pre, log_f, C, 1e-6) for C in (16, 64)]
    if L < 4096:
        paths.append(mlstm_recurrent(q, k, v, i_pre, log_f, 1e-6))
    for got in paths:
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    y32 = mlstm_chunked(*(t.float() for t in (q, k, v, i_pre, log_f)), 64, 1e-6)
    assert_close([y32], [torch.from_numpy(expected)])


def test_huge_gate_preactivations_stay_finite_equal_across_paths_and_to_numpy():
    """i~ in [-200, 200]: exp(i~) overflows float32 above 88, yet the stabilised paths give the
    float64 numpy answer; the same equations without the stabiliser give inf / nan. A stretch of
    i~ = -200 under a strong forget gate drives m to -200, where exp(-m) overflows instead."""
    L = 50
    q, k, v, _, _ = memory_inputs(L, seed=3)
    g = torch.Generator().manual_seed(4)
    i_pre = 400 * torch.rand(2, 2, L, generator=g, dtype=torch.float64) - 200
    f_pre = 60 * torch.rand(2, 2, L, generator=g, dtype=torch.float64) - 30
    i_pre[0, 0, 20:], f_pre[0, 0, 20:] = -200.0, -30.0  # m falls to -200 in head 0
    # float32 rounds i~ = 200 by 1e-5, an error exp passes on to the weights: start from
    # float32 numbers, so the paths are held to their own error only
    q, k, v, i_pre, f_pre = (t.float().double() for t in (q, k, v, i_pre, f_pre))
    expected = torch.from_numpy(numpy_mlstm(*(t.numpy() for t in (q, k, v, i_pre, f_pre))))
    assert expected.isfinite().all() and expected.abs().max() > 0.1

    def paths(q, k, v, i_pre, f_pre):
        log_f = F.logsigmoid(f_pre)
        state = [torch.zeros(2, 2, 4, 4, dtype=q.dtype), torch.zeros(2, 2, 4, dtype=q.dtype),
                 torch.zeros(2, 2, dtype=q.dtype)]
        stepped = []
        for t in range(L):
            h, *state = mlstm_step(*(x[:, :, t] for x in (q, k, v, i_pre, log_f)), *state, 1e-6)
            stepped.append(h)
        return [mlstm_recurrent(q, k, v, i_pre, log_f, 1e-6),
                mlstm_chunked(q, k, v, i_pre, log_f, 16, 1e-6), torch.stack(stepped, dim=2)]

    for y in paths(q, k, v, i_pre, f_pre):
        np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)
    inputs = [t.float().requires_grad_() for t in (q, k, v, i_pre, f_pre)]
    outputs = paths(*inputs)
    for y in outputs:
        assert y.isfinite().all()
        assert_close([y], [expected], HUGE_TOLERANCE)
    weight = torch.randn(expected.shape, generator=g)
    for y in outputs[:2]:  # the gradients of both forward paths are finite too
        grads = torch.autograd.grad((y * weight).sum(), inputs, retain_graph=True)
        assert all(gr.isfinite().all() for gr in grads)

    # the paper's equations as written, in float32: exp(200) = inf, and inf / inf = nan
    q, k, v, i_pre, f_pre = (t.float() for t in (q, k, v, i_pre, f_pre))
    C, n, naive = torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4), []
    for t in range(L):
        i, f = torch.exp(i_pre[..., t]), torch.sigmoid(f_pre[..., t])
        k_t = k[:, :, t] / 2.0
        C = f[..., None, None] * C + i[..., None, None] * v[:, :, t, :, None] * k_t[..., None, :]
        n = f[..., None] * n + i[..., None] * k_t
        den = torch.clamp((n * q[:, :, t]).sum(-1).abs(), min=1.0)
        naive.append((C @ q[:, :, t, :, None])[..., 0] / den[..., None])
    assert not torch.stack(naive, dim=2).isfinite().all()


def test_huge_gate_biases_in_the_model_keep_all_three_paths_finite_and_equal():
    """i~ ~ +-190 through the model's own gate layer: chunked, recurrent and step in float32
    against the float64 chunked path, outputs and gradients."""
    fields = {"layers": 1}
    x = torch.randn(2, 40, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    weight = torch.randn(2, 40, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def huge(model):
        with torch.no_grad():
            model.blocks[0].mlstm.igate.bias.copy_(torch.tensor([190.0, -190.0]))
        return model

    reference = outputs_and_grads(huge(build(**fields)), x, weight)
    assert all(t.isfinite().all() for t in reference)
    for impl in ("chunked", "recurrent"):
        assert_close(outputs_and_grads(huge(build(impl, torch.float32, **fields)), x.float(),
                                       weight), reference, HUGE_TOLERANCE)
    stepped = outputs_and_grads(huge(build(dtype=torch.float32, **fields)), x.float(), weight,
                                lambda m, x: stepwise(m, x)[0])
    assert_close(stepped, reference, HUGE_TOLERANCE)


@pytest.mark.parametrize("L", [1, 2, 15, 16, 17, 100])
def test_chunked_recurrent_and_step_agree_in_outputs_and_gradients(L):
    g = torch.Generator().manual_seed(L)
    x = torch.randn(3, L, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(3, L, 8, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build("recurrent"), x, weight)
    assert_close(outputs_and_grads(build("chunked"), x, weight), reference, 1e-10)
    stepped = outputs_and_grads(build(), x, weight, lambda m, x: stepwise(m, x)[0])
    assert_close(stepped, reference, 1e-10)
    for impl in ("chunked", "recurrent"):
        assert_close(outputs_and_grads(build(impl, torch.float32), x.float(), weight), reference)
    stepped = outputs_and_grads(build(dtype=torch.float32), x.float(), weight,
                                lambda m, x: stepwise(m, x)[0])
    assert_close(stepped, reference)


def test_at_length_4096_chunked_recurrent_and_step_agree_in_float32():
    """Outputs and gradients of both forward paths, step's outputs (decoding runs without
    gradients; its gradients are held to the others above), against float64 chunked."""
    g = torch.Generator().manual_seed(7)
    fields = {"d_model": 8, "heads": 2, "layers": 1, "chunk": 64}  # Dh = 8: d_model = 4 (Dh = 4)
    #  is so badly conditioned that the recurrent loop itself errs by 3e-5 in float32
    x = torch.randn(1, 4096, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(1, 4096, 8, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build(**fields), x, weight)
    for impl in ("chunked", "recurrent"):
        assert_close(outputs_and_grads(build(impl, torch.float32, **fields), x.float(), weight),
                     reference)
    with torch.no_grad():
        assert_close([stepwise(build(dtype=torch.float32, **fields), x.float())[0]],
                     reference[:1])


def numpy_norm(x, weight, groups=1):
    """LayerNorm without a bias over the last axis, or a group norm of `groups` equal groups."""
    xg = x.reshape(*x.shape[:-1], groups, -1)
    xg = (xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)
    return xg.reshape(x.shape) * weight


def silu(x):
    return x / (1 + np.exp(-x))


def test_one_block_matches_a_hand_written_numpy_computation():
    """norm -> up to [x_m, z] -> causal conv + silu -> q, k (from the conv), v (from x_m) ->
    gates from [q, k, v] -> the memory -> per-head norm -> + skip * conv -> * silu(z) -> down ->
    residual; a final norm. Every parameter jittered, so a missing one shows."""
    model = build(layers=1, chunk=4)
    B, L, D, E, H, K, b = 2, 11, 8, 16, 2, 4, 4
    x = torch.randn(B, L, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    P = {k: v.numpy() for k, v in model.state_dict().items()}
    p = lambda name: P["blocks.0.mlstm." + name]  # noqa: E731
    xs = x.numpy()
    h = numpy_norm(xs, P["blocks.0.norm.weight"])
    x_m, z = np.split(h @ p("up.weight").T, 2, axis=-1)  # (B, L, E) each
    padded = np.concatenate((np.zeros((B, K - 1, E)), x_m), axis=1)
    c = sum(padded[:, j:j + L] * p("conv.weight")[:, 0, j] for j in range(K)) + p("conv.bias")
    c = silu(c)
    q, k, v = (np.einsum("blgi,goi->blgo", a.reshape(B, L, E // b, b), w).reshape(B, L, E)
               for a, w in zip((c, c, x_m), p("qkv")))
    qkv = np.concatenate((q, k, v), axis=-1)
    i_pre, f_pre = (qkv @ p(g + ".weight").T + p(g + ".bias") for g in ("igate", "fgate"))
    heads = lambda a: a.reshape(B, L, H, -1).transpose(0, 2, 1, 3)  # noqa: E731  (B, H, L, Dh)
    mem = numpy_mlstm(heads(q), heads(k), heads(v), i_pre.transpose(0, 2, 1),
                      f_pre.transpose(0, 2, 1)).transpose(0, 2, 1, 3).reshape(B, L, E)
    out = (numpy_norm(mem, p("norm"), groups=H) + p("skip") * c) * silu(z)
    expected = numpy_norm(xs + out @ p("down.weight").T, P["norm.weight"])
    with torch.no_grad():
        for impl in ("chunked", "recurrent"):
            model.blocks[0].mlstm.impl = impl
            np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(stepwise(model, x)[0].numpy(), expected, rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("impl", ["chunked", "recurrent"])
def test_a_masked_token_changes_nothing_as_if_it_were_not_there(impl):
    """Padding anywhere, even between real tokens: neither the memory nor the conv window reads
    it, and gradients stay finite."""
    layer = jitter(MLSTMLayer(build(impl).config)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 20, 8, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(2, 20, generator=g) > 0.4
    mask[:, 0] = True
    y = layer(x, mask)
    for row in range(2):
        expected = layer(x[row:row + 1, mask[row]])[0]
        np.testing.assert_allclose(y[row, mask[row]].detach().numpy(),
                                   expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    y.sum().backward()
    assert x.grad.isfinite().all() and all(p.grad.isfinite().all() for p in layer.parameters())
    with torch.no_grad():
        np.testing.assert_array_equal(layer(x, torch.ones(2, 20, dtype=torch.bool)).numpy(),
                                      layer(x).numpy())


def test_state_size_counts_every_float_step_carries_and_is_flat_in_length():
    model = build_model("mlstm", d_model=8, heads=2, layers=3)  # E = 16, Dh = 8, K = 4
    by_hand = 2 * 8 * 8 + 2 * 8 + 2 + (4 - 1) * 16  # C, n, m, the conv's last K-1 inputs
    assert model.state_size(1) == model.state_size(10**6) == by_hand == 194
    state = model.init_state(1)
    assert len(state) == 3 and all(sum(t.numel() for t in s) == by_hand for s in state)


def test_the_step_state_has_one_size_at_every_position():
    model = build(dtype=torch.float32, layers=3)
    shapes = []
    with torch.no_grad():
        for L in (1, 100):
            _, state = stepwise(model, torch.randn(2, L, 8))
            shapes.append([tuple(t.shape) for s in state for t in s])
    assert shapes[0] == shapes[1] == [(2, 2, 8, 8), (2, 2, 8), (2, 2), (2, 3, 16)] * 3


@pytest.mark.parametrize("L", [32, 20])
def test_forward_flops_are_the_matmuls_counted_by_hand(L):
    """Per token: up 2 D 2E, conv 2 K E, q/k/v 3 * 2 E b, gates 2 * 2 (3E) H, down 2 E D; and
    per head per (padded) token the chunked memory's 4 C Dh + 4 Dh^2 + 2 Dh (q k^T, A v,
    the chunk's own v^T k, q C^T, q n^T). Elementwise work counts zero (seqarena.flops)."""
    B, D, E, H, Dh, K, b, C = 3, 8, 16, 2, 8, 4, 4, 16
    model = build_model("mlstm", d_model=D, heads=H, layers=1, chunk=C)
    per_token = 2 * D * 2 * E + 2 * K * E + 3 * 2 * E * b + 2 * 2 * 3 * E * H + 2 * E * D
    memory = H * (4 * C * Dh + 4 * Dh * Dh + 2 * Dh)
    padded = math.ceil(L / C) * C
    with torch.no_grad():
        counted = count_flops(lambda: model(torch.randn(B, L, D)))
    assert counted == B * L * per_token + B * padded * memory
    assert model.uncounted_flops(B, L) is None


def test_under_bf16_autocast_the_memory_runs_in_float32_and_stays_close():
    model = build(dtype=torch.float32, d_model=32, heads=4)
    x = torch.randn(2, 300, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
            _, state = stepwise(model, x[:, :3])
    assert all(t.dtype == torch.float32 for s in state for t in s)
    assert torch.isfinite(mixed).all()
    # bf16 keeps 8 bits of mantissa in the projections: ~1e-2 of a unit-scale output
    assert (mixed.float() - exact).abs().max().item() < 0.1


def test_initialised_as_the_reference():
    model = build_model("mlstm", d_model=64, heads=64, layers=2)  # 64 heads: 64 input biases
    layer = model.blocks[1].mlstm
    assert torch.equal(layer.fgate.bias, torch.linspace(3.0, 6.0, 64))
    assert not layer.fgate.weight.any() and not layer.igate.weight.any()
    assert 0.05 < layer.igate.bias.std().item() < 0.2 and layer.igate.bias.mean().abs() < 0.05
    assert torch.equal(layer.skip, torch.ones(128)) and torch.equal(layer.norm, torch.ones(128))
    assert abs(layer.up.weight.std().item() - math.sqrt(2 / (5 * 64))) < 0.01
    assert abs(layer.down.weight.std().item() - 2 / 2 / math.sqrt(64)) < 0.01


def test_registered_causal_with_its_family_and_costs():
    spec = MODELS.get("mlstm")
    model = build_model("mlstm")
    assert model.family == "xlstm" and model.causal and not model.seq2seq
    assert model.config.impl == "chunked" and model.config.heads == 4 and model.config.chunk == 64
    assert model.reference().config.impl == "recurrent" and model.reference().reference() is None
    assert spec.decode_cost == "O(1)" and "L C E" in spec.train_cost


@pytest.mark.parametrize("fields, field", [
    ({"impl": "parallel"}, "impl"),
    ({"heads": 3}, "heads"),
    ({"qkv_block": 5}, "qkv_block"),
    ({"chunk": 0}, "chunk"),
    ({"conv": 0}, "conv"),
    ({"expand": 0}, "expand"),
    ({"eps": -1.0}, "eps"),
    ({"dropout": 1.0}, "dropout"),
    ({"layers": 0}, "layers"),
    ({"heads": "4"}, "heads"),
])
def test_bad_config_is_a_config_error_naming_the_field(fields, field):
    with pytest.raises(ConfigError, match=field):
        build_model("mlstm", **fields)
