"""RetNet: chunkwise == parallel == step-by-step == the paper's recurrence (equations 1-3) in numpy.

Tolerances: float32 paths are compared with the float64 parallel path on the same weights
(at L = 4096 the float64 chunkwise path, equal to it to 1e-12 at the shorter lengths),
max |error| <= 1e-5 * (1 + max |reference|), outputs and gradients alike (as in test_minimal.py).
Against numpy, float64 to 1e-10. The tests count FLOPs; none of them times anything.
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
from seqarena.models.retnet import (MultiScaleRetention, log_decays, retain_chunked,
                                    retain_parallel, rotate)
from seqarena.results import read_results

# B batch, L length, D model width, H heads, Dk key width, Dv value width per head, C chunk

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def build(impl="chunked", dtype=torch.float64, seed=0, **fields):
    torch.manual_seed(seed)
    fields = {"d_model": 8, "heads": 2, "layers": 2, "chunk": 16, **fields}
    return build_model("retnet", impl=impl, **fields).to(dtype)


def assert_close(actual, reference, tol=1e-5):
    for i, error in enumerate(errors(actual, reference)):
        assert error <= tol, f"tensor {i}: relative error {error:.3g} > {tol:g}"


def numpy_retention(q, k, v):
    """Equations 1-3 token by token, complex as the paper writes them: Q_n = q_n e^{i n theta},
    K_n = k_n e^{i n theta} / sqrt(Dk) (coordinates 2j, 2j+1 the real and imaginary parts),
    s_n = gamma s_{n-1} + K_n^dagger v_n, o_n = Re(Q_n s_n), divided by sqrt(sum_m gamma^(n-m)).
    q, k (B, H, L, Dk), v (B, H, L, Dv), before rotation; gamma_h = 1 - 2^(-5-h)."""
    B, H, L, Dk = q.shape
    gamma = 1.0 - 2.0 ** (-5.0 - np.arange(H))[None, :, None, None]  # (1, H, 1, 1)
    theta = 10000.0 ** -np.linspace(0, 1, Dk // 2)
    qc, kc = (t[..., 0::2] + 1j * t[..., 1::2] for t in (q, k / np.sqrt(Dk)))  # (B, H, L, Dk/2)
    s, outputs, rows = np.zeros((B, H, Dk // 2, v.shape[-1]), complex), [], 0.0
    for n in range(L):
        turn = np.exp(1j * n * theta)
        s = gamma * s + np.conj(kc[:, :, n] * turn)[..., None] * v[:, :, n, None, :]
        o = np.einsum("bhj,bhjv->bhv", qc[:, :, n] * turn, s).real
        rows = gamma[..., 0] * rows + 1.0  # sum_m gamma^(n-m)
        outputs.append(o / np.sqrt(rows))
    return np.stack(outputs, axis=2)  # (B, H, L, Dv)


def positioned(q, k, L):
    """What the model feeds retention: q, k rotated by their positions, k scaled by Dk^-1/2."""
    pos = torch.arange(L, dtype=q.dtype)[None]  # (1, L)
    return rotate(q, pos), rotate(k * q.shape[-1] ** -0.5, pos), pos


@pytest.mark.parametrize("L", [1, 2, 15, 16, 17, 100, 4096])
def test_parallel_and_chunked_retention_match_the_papers_recurrence_in_numpy(L):
    g = torch.Generator().manual_seed(L)
    B = 2 if L < 4096 else 1
    q, k = (torch.randn(B, 3, L, 4, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, 3, L, 8, generator=g, dtype=torch.float64)
    expected = numpy_retention(q.numpy(), k.numpy(), v.numpy())
    lg = log_decays(3)
    qr, kr, pos = positioned(q, k, L)
    got = [retain_chunked(qr, kr, v, lg, pos, C) for C in (16, 64)]
    if L < 4096:
        got.append(retain_parallel(qr, kr, v, lg, pos))
    for y in got:
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)
    q32, k32, v32 = (t.float() for t in (q, k, v))
    qr, kr, pos = positioned(q32, k32, L)
    assert_close([retain_chunked(qr, kr, v32, lg.float(), pos, 64)], [torch.from_numpy(expected)])


def test_the_decays_are_the_papers():
    assert log_decays(4).exp().tolist() == [1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128, 1 - 1 / 256]


@pytest.mark.parametrize("L", [1, 2, 3, 15, 16, 17, 64, 100])
def test_chunked_parallel_and_step_agree_in_outputs_and_gradients(L):
    g = torch.Generator().manual_seed(L)
    x = torch.randn(3, L, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(3, L, 8, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build("parallel"), x, weight)
    assert_close(outputs_and_grads(build("chunked"), x, weight), reference, 1e-12)
    for impl in ("chunked", "parallel"):
        assert_close(outputs_and_grads(build(impl, torch.float32), x.float(), weight), reference)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        stepped = outputs_and_grads(build(dtype=dtype), x.to(dtype), weight,
                                    lambda m, x: stepwise(m, x)[0])
        assert_close(stepped, reference, tol)


def test_at_length_4096_chunked_and_step_agree_in_float32():
    """Outputs and gradients of the chunked path; step's outputs (decoding runs without
    gradients; its gradients are held to the others above). The float64 reference is the
    chunked path, equal to the float64 parallel form to 1e-12 above and far cheaper."""
    g = torch.Generator().manual_seed(7)
    fields = {"d_model": 4, "heads": 2, "layers": 1, "chunk": 64, "d_ff": 4}
    x = torch.randn(1, 4096, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(1, 4096, 4, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build(**fields), x, weight)
    assert_close(outputs_and_grads(build(dtype=torch.float32, **fields), x.float(), weight),
                 reference)
    with torch.no_grad():
        assert_close([stepwise(build(dtype=torch.float32, **fields), x.float())[0]],
                     reference[:1])


def numpy_rms_norm(x, weight=1.0, eps=1e-6):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * weight


def test_one_block_matches_a_hand_written_numpy_computation():
    """RMSNorm -> W_Q, W_K, W_V, W_G -> retention (numpy, equations 1-3) -> GroupNorm -> swish
    gate -> W_O -> residual; RMSNorm -> (gelu(X W_1) * X W_gate) W_2 -> residual; RMSNorm.
    Random norm weights, so a missing one shows."""
    model = build(layers=1, d_ff=12, chunk=4)
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.normal_(std=0.5, generator=torch.Generator().manual_seed(i))
    x = torch.randn(2, 11, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    P = {k.removeprefix("blocks.0."): v.numpy() for k, v in model.state_dict().items()}
    xs = x.numpy()
    heads = lambda t: t.reshape(2, 11, 2, -1).transpose(0, 2, 1, 3)  # noqa: E731 (B, H, L, .)
    h = numpy_rms_norm(xs, P["norm1.weight"])
    q, k, v, gate = np.split(h @ P["retention.proj.weight"].T, [8, 16, 32], axis=-1)
    y = numpy_rms_norm(numpy_retention(heads(q), heads(k), heads(v)))  # GroupNorm, per head
    y = gate / (1 + np.exp(-gate)) * y.transpose(0, 2, 1, 3).reshape(2, 11, 16)
    xs = xs + y @ P["retention.out_proj.weight"].T
    h = numpy_rms_norm(xs, P["norm2.weight"])
    up, gate = np.split(h @ P["ff.up.weight"].T, 2, axis=-1)
    gelu = up * 0.5 * (1 + np.vectorize(math.erf)(up / math.sqrt(2)))
    xs = xs + (gelu * gate) @ P["ff.down.weight"].T
    expected = numpy_rms_norm(xs, P["norm.weight"])
    with torch.no_grad():
        for impl in ("chunked", "parallel"):
            model.blocks[0].retention.impl = impl
            np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(stepwise(model, x)[0].numpy(), expected, rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("impl", ["chunked", "parallel"])
def test_a_padded_token_counts_as_if_it_were_not_there(impl):
    """It writes nothing into S and takes no position: the real tokens after it rotate and
    decay as they would without it."""
    model = build(impl, chunk=4)
    x = torch.randn(2, 20, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.rand(2, 20, generator=torch.Generator().manual_seed(2)) > 0.4
    with torch.no_grad():
        y = model(x, mask)
        assert torch.isfinite(y).all()  # also where nothing real came yet
        for b in range(2):
            torch.testing.assert_close(y[b, mask[b]], model(x[b:b + 1, mask[b]])[0],
                                       rtol=1e-12, atol=1e-12)


def test_the_state_has_one_size_at_every_position_and_state_size_counts_it():
    model = build(layers=3, dtype=torch.float32)  # H = 2, Dk = 4, Dv = 2 * 8 / 2 = 8
    shapes = []
    for L in (1, 100):
        _, state = stepwise(model, torch.randn(2, L, 8))
        shapes.append([tuple(t.shape) for t in state.S])
        assert state.t == L
    assert shapes[0] == shapes[1] == [(2, 2, 4, 8)] * 3
    assert model.state_size(1) == model.state_size(10_000) == 2 * 4 * 8  # H Dk Dv per layer
    assert sum(t.numel() for t in state.S) == 2 * 3 * model.state_size(100)


def test_under_bf16_autocast_retention_runs_in_float32_and_stays_close(monkeypatch):
    import seqarena.models.retnet as retnet

    seen = []
    original = retnet.retain_chunked
    monkeypatch.setattr(retnet, "retain_chunked",
                        lambda q, k, v, *a: seen.append({q.dtype, k.dtype, v.dtype}) or
                        original(q, k, v, *a))
    model = build(d_model=32, heads=4, dtype=torch.float32)
    x = torch.randn(2, 300, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
            _, state = stepwise(model, x[:, :3])
    assert seen and all(dtypes == {torch.float32} for dtypes in seen)
    assert all(t.dtype == torch.float32 for t in state.S)
    assert torch.isfinite(mixed).all()
    # bf16 keeps 8 bits of mantissa in the projections: ~1e-2 of a unit-scale output
    assert (mixed.float() - exact).abs().max().item() < 0.1


def test_flops_are_the_matmuls_the_counter_sees_exactly():
    """Per token: W_Q, W_K, W_V, W_G (D -> 2D + 2 H Dv), W_O, the GLU (D -> 2F -> D), and per
    head the chunkwise form's C (Dk + Dv) + 2 Dk Dv, or the parallel form's L (Dk + Dv)."""
    D, H, Dk, Dv, F_, C, L = 8, 2, 4, 8, 16, 16, 32
    dense = D * (2 * D + 2 * H * Dv) + H * Dv * D + 3 * D * F_
    x = torch.randn(2, L, D)
    for impl, per_head in (("chunked", C * (Dk + Dv) + 2 * Dk * Dv), ("parallel", L * (Dk + Dv))):
        model = build(impl, torch.float32, layers=1, d_ff=F_, chunk=C)
        assert count_flops(lambda: model(x)) == 2 * 2 * L * (dense + H * per_head)
        assert model.uncounted_flops(2, L) is None


def test_registered_causal_with_its_family_and_costs():
    spec = MODELS.get("retnet")
    model = build_model("retnet")
    assert model.family == "linear-attention" and model.causal and not model.seq2seq
    assert model.config.impl == "chunked" and model.reference().config.impl == "parallel"
    assert model.reference().reference() is None  # the parallel form is the reference itself
    assert spec.decode_cost == "O(1)" and "L D^2 / H" in spec.train_cost
    layer = MultiScaleRetention(model.config)  # defaults: D = 64, H = 4, Dv = 2 * 64 / 4
    assert layer.init_state(1).shape == (1, 4, 16, 32) and model.config.ff_width == 128


@pytest.mark.parametrize("fields, field", [
    ({"impl": "recurrent"}, "impl"),
    ({"heads": 3}, "heads"),
    ({"heads": 64}, "heads"),  # Dk = 1: nothing to rotate in pairs
    ({"value_factor": 0}, "value_factor"),
    ({"chunk": 0}, "chunk"),
    ({"eps": 0.0}, "eps"),
    ({"d_ff": -1}, "d_ff"),
    ({"dropout": 1.0}, "dropout"),
    ({"layers": 0}, "layers"),
    ({"heads": "4"}, "heads"),
    ({"no_such_field": 1}, "no_such_field"),
])
def test_bad_config_is_a_config_error_naming_the_field(fields, field):
    with pytest.raises(ConfigError, match=field):
        build_model("retnet", **fields)


# --- through the command line: trains and benches, with nothing outside models/ changed --------

def test_trains_on_copy_from_the_command_line_and_writes_a_run(capsys, tmp_path):
    status, out, err = cli(capsys, "train", "--model", "retnet", "--task", "copy", "--steps",
                           "5", "--seq-len", "24", "--out", tmp_path, "--name", "ret",
                           "--d-model", "8", "--batch-size", "4", "--threads", "1",
                           "--device", "cpu")
    assert status == 0, err
    (result,) = read_results(tmp_path / "ret" / "summary.json")["results"]
    assert result.model == "retnet" and result.steps == 5


def test_benches_with_flops_counted_and_decode_points(capsys, tmp_path):
    status, out, err = cli(capsys, "bench", "--models", "retnet", "--seq-lens", "16",
                           "--modes", "train,decode", "--batch-size", "2", "--d-model", "16",
                           "--threads", "1", "--min-run-time", "0.001", "--json", "--out", tmp_path)
    assert status == 0, err
    results = json.loads(out)["results"]
    assert {r["mode"] for r in results} == {"train", "decode"}
    for r in results:
        assert r["status"] == "ok" and r["model"] == "retnet"
        assert r["flops"] is not None and r["flops"] > 0
