"""Mamba-2: chunked SSD == the token-by-token recurrence == step-by-step == the paper's equations
in numpy, with and without negative eigenvalues.

Tolerances: float64 paths agree to 1e-10. float32 paths are compared with the float64 recurrent
path on the same weights, max |error| <= 1e-5 * (1 + max |reference|), outputs and gradients of
the input and of every parameter alike (as test_linear_attention.py). Against numpy, float64 to
1e-10. The tests count FLOPs; none of them times anything.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_minimal import errors, outputs_and_grads, stepwise

from seqarena.errors import ConfigError
from seqarena.flops import count_flops
from seqarena.models import MODELS, build_model
from seqarena.models.mamba2 import ssd_chunked, ssd_recurrent

# B batch, L length, D model width, E inner width, H heads, P head width, N state, W conv width

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def build(impl="chunked", dtype=torch.float32, seed=0, **fields):
    torch.manual_seed(seed)
    fields = {"d_model": 8, "layers": 2, "d_state": 4, "headdim": 4, "chunk": 16, **fields}
    return build_model("mamba2", impl=impl, **fields).to(dtype)  # E = 16, H = 4


def assert_close(actual, reference, tol=1e-5):
    for i, error in enumerate(errors(actual, reference)):
        assert error <= tol, f"tensor {i}: relative error {error:.3g} > {tol:g}"


def numpy_ssd(x, dt, A, B, C, D, negative_eigen=False):
    """Section 3 per head: a_t = exp(dt_t A) (Grazzi et al.: 2 exp(dt_t A) - 1),
    h_t = a_t h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t + D x_t. x (B, L, H, P), dt (B, L, H),
    B, C (B, L, N) -> y (B, L, H, P), h (B, H, P, N)."""
    b, L, H, P = x.shape
    h, ys = np.zeros((b, H, P, B.shape[-1])), []
    for t in range(L):
        a = np.exp(dt[:, t] * A)
        if negative_eigen:
            a = 2 * a - 1
        h = a[:, :, None, None] * h + np.einsum("bh,bhp,bn->bhpn", dt[:, t], x[:, t], B[:, t])
        ys.append(np.einsum("bhpn,bn->bhp", h, C[:, t]) + D[None, :, None] * x[:, t])
    return np.stack(ys, axis=1), h


def ssm_inputs(L, seed, b=2, H=3, P=4, N=5, dtype=torch.float64):
    """x, dt, A, B, C, D with dt A spread over (0.01, 5): decays near 1 and near 0, and with
    negative_eigen many below 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, H, P, generator=g, dtype=dtype)
    dt = F.softplus(torch.randn(b, L, H, generator=g, dtype=dtype) - 1)
    A = -torch.exp(2 * torch.rand(H, generator=g, dtype=dtype) - 1)
    B, C = (torch.randn(b, L, N, generator=g, dtype=dtype) for _ in range(2))
    D = torch.randn(H, generator=g, dtype=dtype)
    return x, dt, A, B, C, D


@pytest.mark.parametrize("negative_eigen", [False, True])
@pytest.mark.parametrize("L", [1, 2, 15, 16, 17, 100])
def test_chunked_and_recurrent_ssd_match_the_papers_recurrence_in_numpy(L, negative_eigen):
    inputs = ssm_inputs(L, seed=L)
    y_np, h_np = numpy_ssd(*(t.numpy() for t in inputs), negative_eigen)
    if negative_eigen and L >= 15:  # the sign-carrying path is exercised
        assert (2 * torch.exp(inputs[1] * inputs[2]) - 1 < 0).float().mean() > 0.1
    for y, h in (ssd_recurrent(*inputs, negative_eigen),
                 ssd_chunked(*inputs, 16, negative_eigen),
                 ssd_chunked(*inputs, 64, negative_eigen)):
        np.testing.assert_allclose(y.numpy(), y_np, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(h.numpy(), h_np, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("negative_eigen", [False, True])
@pytest.mark.parametrize("L", [1, 2, 15, 16, 17, 100])
def test_chunked_recurrent_and_step_agree_in_outputs_and_gradients(L, negative_eigen):
    g = torch.Generator().manual_seed(L)
    x = torch.randn(3, L, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(3, L, 8, generator=g, dtype=torch.float64)
    fields = {"negative_eigen": negative_eigen}
    reference = outputs_and_grads(build("recurrent", torch.float64, **fields), x, weight)
    assert_close(outputs_and_grads(build("chunked", torch.float64, **fields), x, weight),
                 reference, 1e-10)
    for impl in ("chunked", "recurrent"):
        assert_close(outputs_and_grads(build(impl, **fields), x.float(), weight), reference)
    stepped = outputs_and_grads(build(**fields), x.float(), weight,
                                lambda m, x: stepwise(m, x)[0])
    assert_close(stepped, reference)


@pytest.mark.parametrize("negative_eigen", [False, True])
def test_at_length_4096_float32_paths_match_the_float64_recurrence(negative_eigen):
    """Outputs and gradients of both forward paths; step's outputs (decoding runs without
    gradients; its gradients are held to the others above)."""
    g = torch.Generator().manual_seed(7)
    fields = {"d_model": 4, "layers": 1, "d_state": 4, "headdim": 4, "chunk": 64,
              "negative_eigen": negative_eigen}  # E = 8, H = 2
    x = torch.randn(1, 4096, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(1, 4096, 4, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build("recurrent", torch.float64, **fields), x, weight)
    for impl in ("chunked", "recurrent"):
        assert_close(outputs_and_grads(build(impl, **fields), x.float(), weight), reference)
    with torch.no_grad():
        assert_close([stepwise(build(**fields), x.float())[0]], reference[:1])


def numpy_rms_norm(x, weight):
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * weight


def silu(x):
    return x / (1 + np.exp(-x))


@pytest.mark.parametrize("negative_eigen", [False, True])
def test_one_block_matches_a_hand_written_numpy_computation(negative_eigen):
    """RMSNorm -> in_proj -> [z, xBC, dt]; causal conv of width W + SiLU on xBC; dt =
    softplus(dt + dt_bias), A = -exp(A_log); the SSM; RMSNorm(y * silu(z)); out_proj; residual;
    a final RMSNorm. Random norm weights, biases, A_log and D, so a missing one shows."""
    model = build(layers=1, negative_eigen=negative_eigen).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(generator=torch.Generator().manual_seed(p.numel()))
    x = torch.randn(2, 11, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    P = {k: v.numpy() for k, v in model.state_dict().items()}
    E, N, H, W = 16, 4, 4, 4
    xs = x.numpy()
    u = numpy_rms_norm(xs, P["blocks.0.norm.weight"]) @ P["blocks.0.mixer.in_proj.weight"].T
    z, xBC, dt = u[..., :E], u[..., E:2 * E + 2 * N], u[..., 2 * E + 2 * N:]
    padded = np.concatenate([np.zeros((2, W - 1, E + 2 * N)), xBC], axis=1)
    w = P["blocks.0.mixer.conv1d.weight"][:, 0]  # (E + 2N, W): w[:, W-1] meets the newest input
    conv = sum(padded[:, k:k + 11] * w[:, k] for k in range(W)) + P["blocks.0.mixer.conv1d.bias"]
    xBC = silu(conv)
    dt = np.log1p(np.exp(dt + P["blocks.0.mixer.dt_bias"]))
    y, _ = numpy_ssd(xBC[..., :E].reshape(2, 11, H, E // H), dt,
                     -np.exp(P["blocks.0.mixer.A_log"]), xBC[..., E:E + N], xBC[..., E + N:],
                     P["blocks.0.mixer.D"], negative_eigen)
    y = numpy_rms_norm(y.reshape(2, 11, E) * silu(z), P["blocks.0.mixer.norm.weight"])
    xs = xs + y @ P["blocks.0.mixer.out_proj.weight"].T
    expected = numpy_rms_norm(xs, P["norm.weight"])
    with torch.no_grad():
        for m in (model, model.reference()):  # chunked, then recurrent on the same weights
            np.testing.assert_allclose(m(x).numpy(), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(stepwise(model, x)[0].numpy(), expected, rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("impl", ["chunked", "recurrent"])
def test_left_padding_under_the_mask_changes_nothing_on_the_real_tokens(impl):
    """A masked token writes nothing: not into the conv window, not into the state (dt = 0)."""
    model = build(impl, negative_eigen=True).eval()
    x = torch.randn(2, 20, 8, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, :5], mask[1, :13] = False, False
    with torch.no_grad():
        y = model(x, mask)
        for b in range(2):
            torch.testing.assert_close(y[b, mask[b]], model(x[b:b + 1, mask[b]])[0],
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("negative_eigen", [False, True])
def test_a_token_with_dt_zero_leaves_the_state_as_if_it_were_not_there(negative_eigen):
    """What the mask does inside the SSM, anywhere in the sequence: a = 1, nothing written."""
    x, dt, A, B, C, D = ssm_inputs(40, seed=4)
    keep = torch.rand(2, 40, generator=torch.Generator().manual_seed(5)) > 0.3
    keep[1] = keep[0]  # the same positions in both rows, so the kept ones form a batch
    y_all, h_all = ssd_chunked(x, dt * keep[..., None], A, B, C, D, 16, negative_eigen)
    k = keep[0]
    y_kept, h_kept = ssd_recurrent(x[:, k], dt[:, k], A, B[:, k], C[:, k], D, negative_eigen)
    torch.testing.assert_close(y_all[:, k], y_kept, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h_all, h_kept, rtol=1e-10, atol=1e-12)


def test_state_size_counts_the_conv_window_and_the_ssm_state():
    model = build(layers=3)  # E = 16, N = 4, H = 4, P = 4, W = 4
    expected = (4 - 1) * (16 + 2 * 4) + 4 * 4 * 4  # 72 conv inputs + 64 state = 136
    assert model.state_size(1) == model.state_size(10_000) == expected
    state = model.init_state(1)
    assert [t.numel() for t in (state.window[0], state.h[0])] == [72, 64]


def test_the_state_has_one_size_at_every_position():
    model = build(layers=3)
    shapes = []
    for L in (1, 100):
        _, state = stepwise(model, torch.randn(2, L, 8))
        shapes.append([tuple(t.shape) for t in state.window + state.h])
    assert shapes[0] == shapes[1] == [(2, 3, 24)] * 3 + [(2, 4, 4, 4)] * 3


@pytest.mark.parametrize("L", [1, 40])
def test_forward_flops_are_the_projections_and_the_ssd_matmuls(L):
    """Per layer: in_proj 2 L D (2E + 2N + H), out_proj 2 L E D, and per chunk of Q (the last
    padded to Q): C B^T 2 Q^2 N, the diagonal blocks 2 H Q^2 P, chunk states and state ->
    output 2 H Q P N each; the conv, 2 L (E + 2N) W, is declared, the scan counts zero."""
    model = build(d_model=8, layers=1)
    B, D, E, N, H, P, W = 3, 8, 16, 4, 4, 4, 4
    Q = min(16, L)
    padded = -(-L // Q) * Q
    x = torch.randn(B, L, D)
    expected = (2 * B * L * D * (2 * E + 2 * N + H) + 2 * B * L * E * D
                + 2 * B * padded * (Q * N + H * Q * P + 2 * H * P * N))
    assert count_flops(lambda: model(x)) == expected
    assert model.uncounted_flops(B, L) == 2 * B * L * (E + 2 * N) * W


def test_under_bf16_autocast_the_state_runs_in_float32_and_stays_close(monkeypatch):
    import seqarena.models.mamba2 as m2

    seen = []
    original = m2.ssd_chunked
    monkeypatch.setattr(m2, "ssd_chunked",
                        lambda *a, **k: seen.append({t.dtype for t in a[:6]}) or original(*a, **k))
    model = build(d_model=32, headdim=8)
    x = torch.randn(2, 300, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
            _, state = stepwise(model, x[:, :3])
    assert seen and all(dtypes == {torch.float32} for dtypes in seen)
    assert all(t.dtype == torch.float32 for t in state.window + state.h)
    assert torch.isfinite(mixed).all()
    assert (mixed.float() - exact).abs().max().item() < 0.1


def test_initialisation_follows_the_reference():
    """softplus(dt_bias) in [dt_min, dt_max], -A = exp(A_log) in [1, 16], D = 1."""
    mixer = build(d_model=64, layers=1, headdim=2, dt_min=0.01, dt_max=0.05).blocks[0].mixer
    dt = F.softplus(mixer.dt_bias)
    assert dt.shape == (64,) and (dt >= 0.01 * (1 - 1e-5)).all() and (dt <= 0.05 * (1 + 1e-5)).all()
    assert dt.max() / dt.min() > 3  # spread log-uniformly, not one value
    A = torch.exp(mixer.A_log)
    assert (A >= 1).all() and (A <= 16).all() and A.max() > 8
    assert torch.equal(mixer.D, torch.ones(64))
    assert mixer.in_proj.weight.shape == (2 * 128 + 2 * 4 + 64, 64)


def test_registered_causal_with_its_family_and_costs():
    spec = MODELS.get("mamba2")
    model = build_model("mamba2")
    c = model.config
    assert (c.d_model, c.d_state, c.expand, c.headdim, c.d_conv, c.chunk) == (64, 16, 2, 16, 4, 64)
    assert not c.negative_eigen and model.state_size(0) == 3 * (128 + 32) + 128 * 16
    assert model.family == "ssm" and model.causal and not model.seq2seq
    assert c.impl == "chunked" and model.reference().config.impl == "recurrent"
    assert model.reference().reference() is None  # the recurrence is the reference itself
    assert spec.decode_cost == "O(1)"


@pytest.mark.parametrize("fields, field", [
    ({"impl": "fast"}, "impl"),
    ({"headdim": 5}, "headdim"),
    ({"d_state": 0}, "d_state"),
    ({"chunk": 0}, "chunk"),
    ({"d_conv": 0}, "d_conv"),
    ({"expand": 0}, "expand"),
    ({"dt_min": -1.0}, "dt_min"),
    ({"dt_min": 0.5, "dt_max": 0.1}, "dt_min"),
    ({"negative_eigen": "yes"}, "negative_eigen"),
    ({"dropout": 1.0}, "dropout"),
    ({"layers": 0}, "layers"),
])
def test_bad_config_is_a_config_error_naming_the_field(fields, field):
    with pytest.raises(ConfigError, match=field):
        build_model("mamba2", **fields)
