"""Hawk: both scans == the RG-LRU token by token == step-by-step == the paper's equations in numpy.

Tolerances: float64 paths agree to 1e-10; float32 paths are compared with the float64 recurrent
path on the same weights (at L = 4096 the float64 chunked scan, equal to it to 1e-12 at the shorter
lengths), max |error| <= 1e-5 * (1 + max |reference|), outputs and gradients alike (as in
test_minimal.py). Against numpy, float64 to 1e-10. The tests count FLOPs; none times anything.
"""

import json
import math

import numpy as np
import pytest
import torch
from test_minimal import errors, outputs_and_grads, stepwise
from test_train_cli import cli

from seqarena.errors import ConfigError
from seqarena.flops import count_flops
from seqarena.models import MODELS, build_model
from seqarena.models.hawk import rg_lru_coefficients, rg_lru_recurrent
from seqarena.models.scan import scan_chunked, scan_tree
from seqarena.results import read_results

# B batch, L length, D model width, N RG-LRU width, K convolution width

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

IMPLS = ["chunked", "scan", "recurrent"]


def build(impl="chunked", dtype=torch.float64, seed=0, **fields):
    torch.manual_seed(seed)
    fields = {"d_model": 8, "layers": 2, "expansion": 1.5, **fields}
    return build_model("hawk", impl=impl, **fields).to(dtype)


def assert_close(actual, reference, tol=1e-5):
    for i, error in enumerate(errors(actual, reference)):
        assert error <= tol, f"tensor {i}: relative error {error:.3g} > {tol:g}"


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_rg_lru(x, gate_a, gate_x, Lambda, c=8.0):
    """Section 2.4 as written: r_t = sigmoid(W_a x_t + b_a), i_t = sigmoid(W_x x_t + b_x),
    a_t = a^(c r_t) with a = sigmoid(Lambda), h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t)."""
    a = sigmoid(Lambda)
    h, hs = np.zeros_like(x[:, 0]), []
    for t in range(x.shape[1]):
        a_t = a ** (c * sigmoid(gate_a[:, t]))
        h = a_t * h + np.sqrt(1.0 - a_t**2) * (sigmoid(gate_x[:, t]) * x[:, t])
        hs.append(h)
    return np.stack(hs, axis=1)  # (B, L, N)


def lru_inputs(L, B=2, N=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(L)
    x, gate_a, gate_x = (torch.randn(B, L, N, generator=g, dtype=dtype) for _ in range(3))
    # Lambda so that a^c spans the initial range [0.9, 0.999] and beyond, where a_t ~ 1
    a_c = torch.linspace(0.5, 0.9999, N, dtype=dtype)
    return x, gate_a, gate_x, torch.logit(a_c ** (1 / 8))


@pytest.mark.parametrize("L", [1, 2, 15, 16, 17, 100, 4096])
def test_recurrent_and_both_scans_match_the_papers_equations_in_numpy(L):
    x, gate_a, gate_x, Lambda = lru_inputs(L, B=2 if L < 4096 else 1)
    expected = numpy_rg_lru(*(t.numpy() for t in (x, gate_a, gate_x, Lambda)))
    coefficients = rg_lru_coefficients(x, gate_a, gate_x, Lambda, 8.0)
    for got in (rg_lru_recurrent(x, gate_a, gate_x, Lambda, 8.0),
                scan_tree(*coefficients), scan_chunked(*coefficients)):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    x32, a32, g32, L32 = (t.float() for t in (x, gate_a, gate_x, Lambda))
    coefficients = rg_lru_coefficients(x32, a32, g32, L32, 8.0)
    assert_close([scan_chunked(*coefficients), scan_tree(*coefficients)],
                 [torch.from_numpy(expected)] * 2)


@pytest.mark.parametrize("L", [1, 2, 3, 15, 16, 17, 64, 100])
def test_scans_recurrent_and_step_agree_in_outputs_and_gradients(L):
    """Lengths around the chunked scan's chunks of sqrt(L): 15 (5 chunks of 3), 16, 17 (a
    position left over), and fewer tokens than the convolution's width."""
    g = torch.Generator().manual_seed(L)
    x = torch.randn(3, L, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(3, L, 8, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build("recurrent"), x, weight)
    for impl in ("scan", "chunked"):
        assert_close(outputs_and_grads(build(impl), x, weight), reference, 1e-12)
    for impl in IMPLS:
        assert_close(outputs_and_grads(build(impl, torch.float32), x.float(), weight), reference)
    stepped = outputs_and_grads(build(dtype=torch.float32), x.float(), weight,
                                lambda m, x: stepwise(m, x)[0])
    assert_close(stepped, reference)


def test_at_length_4096_both_scans_and_step_agree_in_float32():
    """Outputs and gradients of both scans; step's outputs (decoding runs without gradients;
    its gradients are held to the others above). The float64 reference is the chunked scan,
    equal to the float64 recurrence to 1e-12 above and 20x cheaper."""
    g = torch.Generator().manual_seed(7)
    fields = {"d_model": 4, "layers": 1, "expansion": 1.0, "mlp_expansion": 1}
    x = torch.randn(1, 4096, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(1, 4096, 4, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build(**fields), x, weight)
    for impl in ("scan", "chunked"):
        assert_close(outputs_and_grads(build(impl, torch.float32, **fields), x.float(), weight),
                     reference)
    with torch.no_grad():
        assert_close([stepwise(build(dtype=torch.float32, **fields), x.float())[0]],
                     reference[:1])


def numpy_rms_norm(x, weight):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * weight


def numpy_gelu(x):  # the tanh approximation
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def test_one_residual_block_matches_a_hand_written_numpy_computation():
    """Figure 2: RMSNorm -> [GeLU(W_y x)] * [RG-LRU(Conv1D(W_x x))] -> W_out -> residual;
    RMSNorm -> GeLU(W_1 x) * W_2 x -> W_3 -> residual; a final RMSNorm. Random norm weights and
    biases, so a missing one shows; the convolution's taps are checked by their order in time.
    (Standard deviation 0.5: unit weights grow the MLP's output to ~1e4, and the comparison
    would measure float64's cancellation rather than the model.)"""
    model = build(layers=1, expansion=1.5)  # N = 12
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.normal_(std=0.5, generator=torch.Generator().manual_seed(i))
    x = torch.randn(2, 11, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    P = {k.removeprefix("blocks.0."): v.numpy() for k, v in model.state_dict().items()}
    xs = x.numpy()
    h = numpy_rms_norm(xs, P["norm1.weight"])
    u, y = np.split(h @ P["temporal.in_proj.weight"].T + P["temporal.in_proj.bias"], 2, axis=-1)
    w = P["temporal.conv.weight"][:, 0]  # (N, K): tap k multiplies x_{t - (K - 1) + k}
    conv = np.stack([P["temporal.conv.bias"] + sum(w[:, 3 - s] * u[:, t - s]
                                                   for s in range(4) if t - s >= 0)
                     for t in range(11)], axis=1)
    gate_a, gate_x = np.split(conv @ P["temporal.gates.weight"].T + P["temporal.gates.bias"], 2,
                              axis=-1)
    lru = numpy_rg_lru(conv, gate_a, gate_x, P["temporal.Lambda"])
    xs = xs + (lru * numpy_gelu(y)) @ P["temporal.out_proj.weight"].T + P["temporal.out_proj.bias"]
    h = numpy_rms_norm(xs, P["norm2.weight"])
    gate, value = np.split(h @ P["mlp.up.weight"].T + P["mlp.up.bias"], 2, axis=-1)
    xs = xs + (numpy_gelu(gate) * value) @ P["mlp.down.weight"].T + P["mlp.down.bias"]
    expected = numpy_rms_norm(xs, P["norm.weight"])
    with torch.no_grad():
        for impl in IMPLS:
            model.blocks[0].temporal.impl = impl
            np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(stepwise(model, x)[0].numpy(), expected, rtol=1e-10,
                                   atol=1e-12)


def test_the_recurrence_is_initialised_with_a_to_the_c_uniform_in_0_9_to_0_999():
    model = build(d_model=64, expansion=4.0, layers=1, dtype=torch.float32)  # N = 256
    a_c = torch.sigmoid(model.blocks[0].temporal.Lambda.double()) ** 8
    assert 0.9 <= a_c.min() and a_c.max() <= 0.999
    assert 0.93 < a_c.mean() < 0.97  # uniform: mean 0.9495


def test_a_padded_token_leaves_the_recurrence_state_as_it_was():
    x, gate_a, gate_x, Lambda = lru_inputs(20, B=2)
    mask = torch.rand(2, 20, generator=torch.Generator().manual_seed(3)) > 0.4
    mask[:, 0] = True
    for lru in (lambda *t, mask=None: rg_lru_recurrent(*t, mask),
                lambda *t, mask=None: scan_tree(*rg_lru_coefficients(*t, mask)),
                lambda *t, mask=None: scan_chunked(*rg_lru_coefficients(*t, mask))):
        h = lru(x, gate_a, gate_x, Lambda, 8.0, mask=mask)
        for b in range(2):  # as if the padded tokens were not there
            real = [t[b:b + 1, mask[b]] for t in (x, gate_a, gate_x)]
            torch.testing.assert_close(h[b, mask[b]], lru(*real, Lambda, 8.0)[0],
                                       rtol=1e-12, atol=1e-12)
            after = torch.cumsum(mask[b], 0) - 1  # the last real token at or before each t
            # (to rounding: the chunked scan reaches a position by another order of sums)
            torch.testing.assert_close(h[b], h[b, mask[b]][after], rtol=1e-15, atol=1e-15)


def test_with_a_mask_every_impl_agrees_and_right_padding_changes_no_real_output():
    x = torch.randn(2, 13, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    mask = torch.rand(2, 13, generator=torch.Generator().manual_seed(5)) > 0.3
    with torch.no_grad():
        outputs = [build(impl)(x, mask) for impl in IMPLS]
        for y in outputs[1:]:
            torch.testing.assert_close(y, outputs[0], rtol=1e-12, atol=1e-12)
        right = torch.arange(13) < 9  # real tokens first, then padding, as the tasks pad
        model = build()
        torch.testing.assert_close(model(x, right.expand(2, 13))[:, :9], model(x[:, :9]),
                                   rtol=1e-12, atol=1e-12)


def test_the_state_has_one_size_at_every_position_and_state_size_counts_it():
    model = build(layers=3, dtype=torch.float32)  # N = 12, K = 4
    shapes = []
    for L in (1, 100):
        _, state = stepwise(model, torch.randn(2, L, 8))
        shapes.append([tuple(t.shape) for t in state.window + state.h])
    assert shapes[0] == shapes[1] == [(2, 3, 12)] * 3 + [(2, 12)] * 3
    # per layer and sequence: 3 convolution inputs and h, 12 floats each
    assert model.state_size(1) == model.state_size(10_000) == 3 * 12 + 12
    assert sum(t.numel() for t in state.window + state.h) == 2 * 3 * model.state_size(100)


def test_under_bf16_autocast_the_recurrence_runs_in_float32_and_stays_close(monkeypatch):
    import seqarena.models.hawk as hawk

    seen = []
    original = hawk.scan_chunked
    monkeypatch.setattr(hawk, "scan_chunked", lambda a, b: seen.append({a.dtype, b.dtype}) or
                        original(a, b))
    model = build(d_model=32, dtype=torch.float32)
    x = torch.randn(2, 300, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
            _, state = stepwise(model, x[:, :3])
    assert seen and all(dtypes == {torch.float32} for dtypes in seen)
    assert all(t.dtype == torch.float32 for t in state.h)
    assert torch.isfinite(mixed).all()
    # bf16 keeps 8 bits of mantissa in the projections: ~1e-2 of a unit-scale output
    assert (mixed.float() - exact).abs().max().item() < 0.1


def test_flops_are_the_matmuls_and_the_convolution_and_the_scan_counts_zero():
    """seqarena.flops: per layer and token, W_x and W_y (D -> 2N), the depthwise convolution
    (N K), W_a and W_x (N -> 2N), W_out (N -> D), the MLP (D -> 2 M D -> D)."""
    D, N, K, M = 8, 12, 4, 3
    per_token = D * 2 * N + N * K + N * 2 * N + N * D + D * 2 * M * D + M * D * D
    x = torch.randn(2, 10, 8)
    for impl in IMPLS:
        model = build(impl, dtype=torch.float32, layers=2)
        assert count_flops(lambda: model(x)) == 2 * 2 * 10 * 2 * per_token
        assert model.uncounted_flops(2, 10) is None


def test_registered_causal_with_its_family_and_costs():
    spec = MODELS.get("hawk")
    model = build_model("hawk")
    assert model.family == "scan" and model.causal and not model.seq2seq
    assert model.config.impl == "chunked" and model.reference().config.impl == "recurrent"
    assert build_model("hawk", impl="scan").reference().config.impl == "recurrent"
    assert model.reference().reference() is None  # the recurrence is the reference itself
    assert spec.decode_cost == "O(1)" and "log L" in spec.train_cost
    # the defaults: recurrentgemma's RG-LRU width (= d_model), the paper's M = 3, K = 4, c = 8
    assert (model.config.lru_width, model.config.mlp_expansion, model.config.conv_width,
            model.config.c) == (64, 3, 4, 8.0)


@pytest.mark.parametrize("fields, field", [
    ({"impl": "parallel"}, "impl"),
    ({"expansion": 0.01}, "expansion"),
    ({"expansion": 0.0}, "expansion"),
    ({"mlp_expansion": 0}, "mlp_expansion"),
    ({"conv_width": 0}, "conv_width"),
    ({"c": -1.0}, "c"),
    ({"dropout": 1.0}, "dropout"),
    ({"layers": 0}, "layers"),
    ({"conv_width": "4"}, "conv_width"),
    ({"no_such_field": 1}, "no_such_field"),
])
def test_bad_config_is_a_config_error_naming_the_field(fields, field):
    with pytest.raises(ConfigError, match=field):
        build_model("hawk", **fields)


# --- through the command line: trains and benches, with nothing outside models/ changed --------

def test_trains_on_copy_from_the_command_line_and_writes_a_run(capsys, tmp_path):
    status, out, err = cli(capsys, "train", "--model", "hawk", "--task", "copy", "--steps", "5",
                           "--seq-len", "24", "--out", tmp_path, "--name", "hawk", "--d-model",
                           "8", "--batch-size", "4", "--threads", "1", "--device", "cpu")
    assert status == 0, err
    (result,) = read_results(tmp_path / "hawk" / "summary.json")["results"]
    assert result.model == "hawk" and result.steps == 5


def test_benches_with_flops_counted_and_decode_points(capsys, tmp_path):
    status, out, err = cli(capsys, "bench", "--models", "hawk", "--seq-lens", "16",
                           "--modes", "train,decode", "--batch-size", "2", "--d-model", "16",
                           "--threads", "1", "--min-run-time", "0.001", "--json", "--out", tmp_path)
    assert status == 0, err
    results = json.loads(out)["results"]
    assert {r["mode"] for r in results} == {"train", "decode"}
    for r in results:
        assert r["status"] == "ok" and r["model"] == "hawk"
        assert r["flops"] is not None and r["flops"] > 0
