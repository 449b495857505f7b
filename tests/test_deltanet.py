"""DeltaNet and Gated DeltaNet: chunked == recurrent == step-by-step == the paper's equations in
numpy, with and without negative eigenvalues.

Tolerances: float32 paths are compared with the float64 recurrent path on the same weights (at
L = 4096 the float64 chunked path, equal to it to 1e-12 at the shorter lengths),
max |error| <= 1e-5 * (1 + max |reference|), outputs and gradients alike (test_minimal.errors).
Against numpy, float64 to 1e-10. The tests count FLOPs; none of them times anything.

Models are built with key heads Dk >= 8: q and k are divided by their norms, so a head whose
convolved q or k is near zero (likely with 4 random channels, rare with 8) multiplies float32
rounding by 1 / |k| in the gradients, a property of the model, not of a path.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_minimal import errors, numpy_layer_norm, outputs_and_grads, sigmoid, stepwise

from seqarena.errors import ConfigError
from seqarena.flops import count_flops
from seqarena.models import MODELS, build_model
from seqarena.models.deltanet import DeltaRule, delta_rule_chunked, delta_rule_recurrent, delta_step

# B batch, L length, D model width, H heads, Dk / Dv key / value head widths, C chunk

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

VARIANTS = [("gated-deltanet", False), ("gated-deltanet", True), ("deltanet", False),
            ("deltanet", True)]  # (name, negative_eigen)


def build(name="gated-deltanet", impl="chunked", dtype=torch.float32, seed=0, **fields):
    torch.manual_seed(seed)
    fields = {"d_model": 16, "heads": 2, "layers": 2, "chunk": 16, **fields}  # Dk = 8
    return build_model(name, impl=impl, **fields).to(dtype)


def assert_close(actual, reference, tol=1e-5):
    for i, error in enumerate(errors(actual, reference)):
        assert error <= tol, f"tensor {i}: relative error {error:.3g} > {tol:g}"


def numpy_delta_rule(q, k, v, b, g):
    """The paper's eq.: S_t = a_t S_{t-1} (I - b_t k_t k_t^T) + b_t v_t k_t^T, o_t = S_t q_t,
    a_t = exp(g_t), S (Dv, Dk) as the paper writes it. q, k (B, H, L, Dk), v (B, H, L, Dv)."""
    B, H, L, Dk = q.shape
    S, I, outputs = np.zeros((B, H, v.shape[-1], Dk)), np.eye(Dk), []
    for t in range(L):
        k_t, a_t, b_t = k[:, :, t], np.exp(g[:, :, t])[..., None, None], b[:, :, t, None, None]
        S = a_t * S @ (I - b_t * k_t[..., :, None] * k_t[..., None, :]) \
            + b_t * v[:, :, t, :, None] * k_t[..., None, :]
        outputs.append(np.einsum("bhvk,bhk->bhv", S, q[:, :, t]))
    return np.stack(outputs, axis=2)  # (B, H, L, Dv)


def random_inputs(L, B=2, H=2, Dk=4, Dv=8, b_max=1.0, seed=0):
    """Unit q and k, b in [0, b_max], log-decays g <= 0 (some near 0, some strong), float64."""
    g_ = torch.Generator().manual_seed(seed)
    q, k = (F.normalize(torch.randn(B, H, L, Dk, generator=g_, dtype=torch.float64), dim=-1)
            for _ in range(2))
    v = torch.randn(B, H, L, Dv, generator=g_, dtype=torch.float64)
    b = b_max * torch.rand(B, H, L, generator=g_, dtype=torch.float64)
    g = -torch.rand(B, H, L, generator=g_, dtype=torch.float64) ** 3
    return q, k, v, b, g


@pytest.mark.parametrize("b_max", [1.0, 2.0])
@pytest.mark.parametrize("L", [1, 2, 15, 16, 17, 100, 4096])
def test_recurrent_and_chunked_rule_match_the_papers_equation_in_numpy(L, b_max):
    inputs = random_inputs(L, B=2 if L < 4096 else 1, b_max=b_max, seed=L)
    expected = numpy_delta_rule(*(t.numpy() for t in inputs))
    got = [delta_rule_chunked(*inputs, 16), delta_rule_chunked(*inputs, 64)]
    if L < 4096:  # the loop is held to numpy here and to the chunked form everywhere else
        got.append(delta_rule_recurrent(*inputs))
    for y in got:
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)
    y32 = delta_rule_chunked(*(t.float() for t in inputs), 64)
    assert_close([y32], [torch.from_numpy(expected)])


def test_without_the_gate_the_chunked_rule_is_deltanets():
    q, k, v, b, g = random_inputs(50, seed=3)
    expected = numpy_delta_rule(q.numpy(), k.numpy(), v.numpy(), b.numpy(), 0 * g.numpy())
    np.testing.assert_allclose(delta_rule_chunked(q, k, v, b, 0 * g, 16).numpy(), expected,
                               rtol=1e-10, atol=1e-12)


def test_a_write_with_b_2_reflects_what_the_state_holds_at_that_key():
    """I - 2 k k^T is a reflection: eigenvalue -1 along k, which negative_eigen makes reachable."""
    S = torch.randn(1, 4, 3, dtype=torch.float64)  # (B, Dk, Dv)
    k = F.normalize(torch.randn(1, 4, dtype=torch.float64), dim=-1)
    one = torch.ones(1, dtype=torch.float64)
    S2, readout = delta_step(S, k, k, torch.zeros(1, 3, dtype=torch.float64), 2 * one, one)
    torch.testing.assert_close(readout, -(k[:, None] @ S)[:, 0])
    assert torch.linalg.matrix_norm(S2) == pytest.approx(torch.linalg.matrix_norm(S).item())


@pytest.mark.parametrize("name, negative_eigen", VARIANTS)
@pytest.mark.parametrize("L", [1, 2, 15, 16, 17, 50])
def test_chunked_recurrent_and_step_agree_in_outputs_and_gradients(name, negative_eigen, L):
    g = torch.Generator().manual_seed(L)
    x = torch.randn(3, L, 16, generator=g, dtype=torch.float64)
    weight = torch.randn(3, L, 16, generator=g, dtype=torch.float64)
    fields = {"negative_eigen": negative_eigen}
    reference = outputs_and_grads(build(name, "recurrent", torch.float64, **fields), x, weight)
    assert_close(outputs_and_grads(build(name, "chunked", torch.float64, **fields), x, weight),
                 reference, 1e-12)
    stepped = outputs_and_grads(build(name, dtype=torch.float64, **fields), x, weight,
                                lambda m, x: stepwise(m, x)[0])
    assert_close(stepped, reference, 1e-12)
    for impl in ("chunked", "recurrent"):
        assert_close(outputs_and_grads(build(name, impl, **fields), x.float(), weight), reference)
    stepped = outputs_and_grads(build(name, **fields), x.float(), weight,
                                lambda m, x: stepwise(m, x)[0])
    assert_close(stepped, reference)


@pytest.mark.parametrize("name, negative_eigen", VARIANTS[:3])
def test_at_length_4096_float32_chunked_recurrent_and_step_agree_with_float64(name,
                                                                               negative_eigen):
    """Outputs and gradients of both forward paths; step's outputs (decoding runs without
    gradients; its gradients are held to the others above)."""
    g = torch.Generator().manual_seed(7)
    fields = {"d_model": 8, "heads": 1, "layers": 1, "chunk": 64, "d_ff": 8,
              "negative_eigen": negative_eigen}
    x = torch.randn(1, 4096, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(1, 4096, 8, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build(name, "chunked", torch.float64, **fields), x, weight)
    for impl in ("chunked", "recurrent"):
        assert_close(outputs_and_grads(build(name, impl, **fields), x.float(), weight), reference)
    with torch.no_grad():
        assert_close([stepwise(build(name, **fields), x.float())[0]], reference[:1])


def softplus(x):
    return np.log1p(np.exp(x))


def silu(x):
    return x * sigmoid(x)


@pytest.mark.parametrize("name, negative_eigen", VARIANTS)
def test_one_block_matches_a_hand_written_numpy_computation(name, negative_eigen):
    """norm -> W_q, W_k, W_v through causal depthwise convolutions + SiLU, L2-normed q, k; b, the
    decay; the delta rule; RMSNorm(o) * SiLU(W_g x); W_o; residual; norm -> relu MLP ->
    residual; a final norm. Random norm parameters, so a missing one shows."""
    model = build(name, d_model=8, layers=1, activation="relu", d_ff=12, chunk=4, expand_v=2,
                  negative_eigen=negative_eigen).double()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "A_log" not in n:  # A = exp(A_log) ~ 16 would forget everything at once
                p.normal_(generator=torch.Generator().manual_seed(p.numel()))
    x = torch.randn(2, 11, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    P = {k: v.numpy() for k, v in model.state_dict().items()}
    xs = x.numpy()
    h = numpy_layer_norm(xs, P["blocks.0.norm1.weight"], P["blocks.0.norm1.bias"])
    proj = h @ P["blocks.0.mix.in_proj.weight"].T  # (B, L, P)
    H, Dk, Dv, K = 2, 4, 8, 4
    X = H * (2 * Dk + Dv)
    padded = np.concatenate([np.zeros((2, K - 1, X)), proj[..., :X]], axis=1)
    conv = P["blocks.0.mix.conv.weight"][:, 0]  # (X, K), conv1d's taps, oldest input first
    xc = silu(np.stack([(padded[:, t:t + K] * conv.T).sum(1) for t in range(11)], axis=1))
    heads = lambda a: a.reshape(2, 11, H, -1).transpose(0, 2, 1, 3)  # noqa: E731 (B, H, L, .)
    q, k, v = (heads(a) for a in np.split(xc, [H * Dk, 2 * H * Dk], axis=-1))
    q, k = (a / np.sqrt((a * a).sum(-1, keepdims=True) + 1e-6) for a in (q, k))
    gate = proj[..., X:X + H * Dv]
    b = sigmoid(proj[..., X + H * Dv:X + H * Dv + H]).transpose(0, 2, 1) * (1 + negative_eigen)
    g = np.zeros_like(b)
    if name == "gated-deltanet":
        a = proj[..., X + H * Dv + H:] + P["blocks.0.mix.dt_bias"]
        g = (-np.exp(P["blocks.0.mix.A_log"]) * softplus(a)).transpose(0, 2, 1)
    o = numpy_delta_rule(q / np.sqrt(Dk), k, v, b, g).transpose(0, 2, 1, 3)  # (B, L, H, Dv)
    o = o / np.sqrt((o * o).mean(-1, keepdims=True) + 1e-5) * P["blocks.0.mix.norm_weight"]
    o = (o.reshape(2, 11, H * Dv) * silu(gate)) @ P["blocks.0.mix.out_proj.weight"].T
    xs = xs + o
    h = numpy_layer_norm(xs, P["blocks.0.norm2.weight"], P["blocks.0.norm2.bias"])
    h = np.maximum(h @ P["blocks.0.ff.up.weight"].T + P["blocks.0.ff.up.bias"], 0)
    xs = xs + h @ P["blocks.0.ff.down.weight"].T + P["blocks.0.ff.down.bias"]
    expected = numpy_layer_norm(xs, P["norm.weight"], P["norm.bias"])
    with torch.no_grad():
        for impl in ("chunked", "recurrent"):
            model.blocks[0].mix.impl = impl
            np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(stepwise(model, x)[0].numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["chunked", "recurrent"])
@pytest.mark.parametrize("name, negative_eigen", VARIANTS[1:3])
def test_left_or_right_padding_gives_the_unpadded_outputs(name, negative_eigen, impl):
    """A masked token writes nothing (b = 0, a = 1) and feeds zeros to the convolutions, which
    is what a sequence's start looks like, so padding on either side changes nothing."""
    torch.manual_seed(1)
    layer = DeltaRule(build(name, impl, negative_eigen=negative_eigen).config).double()
    x = torch.randn(2, 40, 16, dtype=torch.float64)
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0, :23] = True  # right padding
    mask[1, 13:] = True  # left padding
    with torch.no_grad():
        y = layer(x, mask)
        for row in range(2):
            torch.testing.assert_close(y[row, mask[row]], layer(x[row:row + 1, mask[row]])[0],
                                       rtol=1e-10, atol=1e-12)


def test_a_masked_token_leaves_the_state_as_it_was():
    """b = 0 and g = 0 at a position: the chunked rule's later outputs are those without it."""
    q, k, v, b, g = random_inputs(40, seed=5)
    keep = torch.rand(2, 1, 40, generator=torch.Generator().manual_seed(6)) > 0.3
    kept = delta_rule_chunked(q, k, v, b * keep, g * keep, 16)
    for row in range(2):
        idx = keep[row, 0]
        alone = delta_rule_chunked(*(t[row:row + 1, :, idx] for t in (q, k, v, b, g)), 16)
        torch.testing.assert_close(kept[row:row + 1, :, idx], alone, rtol=1e-10, atol=1e-12)


def test_state_size_counts_the_memory_and_the_convolution_buffers():
    model = build("gated-deltanet", d_model=8, heads=2, expand_v=2, conv_size=3, layers=3)
    # H Dk Dv = 2 * 4 * 8 = 64; (K - 1)(2 H Dk + H Dv) = 2 * (16 + 16) = 64
    assert model.state_size(1) == model.state_size(10_000) == 128
    state = model.init_state(1)
    assert sum(t.numel() for t in (state.S[0], state.window[0])) == 128
    assert build("deltanet").state_size(5) == 2 * 8 * 8 + 3 * (2 * 16 + 16)  # D 16, H 2


def test_the_state_has_one_size_at_every_position():
    model = build(layers=3)  # H = 2, Dk = Dv = 8, K = 4, 2 H Dk + H Dv = 48
    shapes = []
    for L in (1, 100):
        _, state = stepwise(model, torch.randn(2, L, 16))
        shapes.append([tuple(t.shape) for t in state.S + state.window])
    assert shapes[0] == shapes[1] == [(2, 2, 8, 8)] * 3 + [(2, 3, 48)] * 3


def test_under_bf16_autocast_the_state_runs_in_float32_and_stays_close(monkeypatch):
    import seqarena.models.deltanet as dn

    seen = []
    original = dn.delta_rule_chunked
    monkeypatch.setattr(dn, "delta_rule_chunked",
                        lambda *a: seen.append({t.dtype for t in a[:5]}) or original(*a))
    model = build(d_model=32, heads=4)
    x = torch.randn(2, 300, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
            _, state = stepwise(model, x[:, :3])
    assert seen and all(dtypes == {torch.float32} for dtypes in seen)
    assert all(t.dtype == torch.float32 for t in state.S + state.window)
    assert torch.isfinite(mixed).all()
    assert (mixed.float() - exact).abs().max().item() < 0.1  # bf16 projections: ~1e-2


def hand_flops(B, L, D, H, Dk, Dv, K, F, C, gated, impl):
    """Matmul FLOPs of one layer's forward, two per multiply-add (seqarena.flops)."""
    P = 2 * H * Dk + 2 * H * Dv + H * (1 + gated)  # W_q, W_k, W_v, W_g, W_b, W_a
    dense = 2 * B * L * (D * P + H * Dv * D + 2 * D * F)  # in_proj, W_o, the MLP
    conv = 2 * B * L * H * (2 * Dk + Dv) * K
    if impl == "recurrent":  # k^T S and q^T S per token
        return dense + conv + 4 * B * H * L * Dk * Dv, 0
    N = L // C
    chunk = (6 * C * C * Dk + 2 * C * C * Dv  # K K^T, Q K^T, attn W; attn U
             + 2 * C * Dk * Dk + 4 * C * Dk * Dv  # K^T W; K^T U, Q_state S
             + 2 * Dk * Dk * Dv)  # M S, the loop
    return dense + conv + B * H * N * chunk, B * H * N * C * (C - 1) * (Dk + Dv)


@pytest.mark.parametrize("name", ["gated-deltanet", "deltanet"])
@pytest.mark.parametrize("impl", ["chunked", "recurrent"])
def test_flops_are_the_matmuls_and_the_triangular_solves_all_counted(name, impl):
    """The counter sees the projections, the depthwise convolution, every matmul and (by
    seqarena's formula) the triangular solves, exactly; nothing is left to declare."""
    model = build(name, impl, d_model=16, heads=2, layers=1, expand_v=2, d_ff=24, chunk=8)
    x = torch.randn(3, 32, 16)
    counted = count_flops(lambda: model(x))
    seen, solves = hand_flops(3, 32, 16, 2, 8, 16, 4, 24, 8, name == "gated-deltanet", impl)
    assert counted == seen + solves
    assert model.uncounted_flops(3, 32) is None


def test_registered_with_their_family_costs_and_reference():
    for name, gated in (("gated-deltanet", True), ("deltanet", False)):
        spec = MODELS.get(name)
        model = build_model(name)
        assert model.family == "delta-rule" and model.causal and not model.seq2seq
        assert model.config.gated is gated and model.config.impl == "chunked"
        assert model.config.heads == 4 and model.config.chunk == 64
        assert model.reference().config.impl == "recurrent"
        assert model.reference().reference() is None  # the loop is the reference itself
        assert spec.decode_cost == "O(1)" and "L D^2 / H" in spec.train_cost
        assert hasattr(model.blocks[0].mix, "A_log") is gated  # DeltaNet has no decay parameters


@pytest.mark.parametrize("fields, field", [
    ({"impl": "fast"}, "impl"),
    ({"heads": 3}, "heads"),
    ({"chunk": 0}, "chunk"),
    ({"expand_v": 0}, "expand_v"),
    ({"conv_size": 0}, "conv_size"),
    ({"d_ff": -1}, "d_ff"),
    ({"activation": "tanh"}, "activation"),
    ({"dropout": 1.0}, "dropout"),
    ({"layers": 0}, "layers"),
    ({"negative_eigen": 1}, "negative_eigen"),
    ({"gated": "yes"}, "gated"),
])
def test_bad_config_is_a_config_error_naming_the_field(fields, field):
    for name in ("gated-deltanet", "deltanet"):
        with pytest.raises(ConfigError, match=field):
            build_model(name, **fields)
