"""Causal linear attention: chunked == parallel == step-by-step == the paper's recurrence in numpy.

Tolerances: float32 paths are compared with the float64 parallel path on the same weights
(at L = 4096 the float64 chunked path, equal to it to 1e-12 at the shorter lengths),
max |error| <= 1e-5 * (1 + max |reference|), outputs and gradients alike (as in test_minimal.py:
a parameter's gradient sums over B * L positions, so it can be large). Against numpy, float64
to 1e-10. The tests count FLOPs; none of them times anything.
"""

import json

import numpy as np
import pytest
import torch
from test_minimal import errors, outputs_and_grads, stepwise
from test_train_cli import cli
from torch.utils.flop_counter import FlopCounterMode

from seqarena.errors import ConfigError
from seqarena.models import MODELS, build_model
from seqarena.models.linear_attention import LinearAttention, attend_chunked, attend_parallel, phi
from seqarena.results import read_results

# B batch, L length, D model width, H heads, Dh head width, C chunk


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def build(impl="chunked", dtype=torch.float32, seed=0, **fields):
    torch.manual_seed(seed)
    fields = {"d_model": 8, "heads": 2, "layers": 2, "chunk": 16, **fields}
    return build_model("linear-attention", impl=impl, **fields).to(dtype)


def assert_close(actual, reference, tol=1e-5):
    for i, error in enumerate(errors(actual, reference)):
        assert error <= tol, f"tensor {i}: relative error {error:.3g} > {tol:g}"


def numpy_recurrence(q, k, v, eps=1e-6):
    """Section 3.4 token by token: S_t = S_{t-1} + phi(k_t) v_t^T, z_t = z_{t-1} + phi(k_t),
    y_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps). q, k, v (B, H, L, Dh) before phi."""
    feature = lambda x: np.where(x > 0, x + 1, np.exp(x))  # noqa: E731  elu(x) + 1
    q, k = feature(q), feature(k)
    B, H, L, Dh = q.shape
    S, z, ys = np.zeros((B, H, Dh, Dh)), np.zeros((B, H, Dh)), []
    for t in range(L):
        S = S + k[:, :, t, :, None] * v[:, :, t, None, :]
        z = z + k[:, :, t]
        numerator = np.einsum("bhi,bhij->bhj", q[:, :, t], S)
        ys.append(numerator / (np.einsum("bhi,bhi->bh", q[:, :, t], z)[..., None] + eps))
    return np.stack(ys, axis=2)  # (B, H, L, Dh)


@pytest.mark.parametrize("L", [1, 2, 15, 16, 17, 100, 4096])
def test_parallel_and_chunked_attention_match_the_papers_recurrence_in_numpy(L):
    g = torch.Generator().manual_seed(L)
    q, k, v = (torch.randn(2 if L < 4096 else 1, 2, L, 4, generator=g, dtype=torch.float64)
               for _ in range(3))
    expected = numpy_recurrence(q.numpy(), k.numpy(), v.numpy())
    for got in (attend_parallel(phi(q), phi(k), v, 1e-6),
                attend_chunked(phi(q), phi(k), v, 16, 1e-6),
                attend_chunked(phi(q), phi(k), v, 64, 1e-6)):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    y32 = attend_chunked(phi(q.float()), phi(k.float()), v.float(), 64, 1e-6)
    assert_close([y32], [torch.from_numpy(expected)])


@pytest.mark.parametrize("L", [1, 2, 3, 15, 16, 17, 64, 100])
def test_chunked_parallel_and_step_agree_in_outputs_and_gradients(L):
    g = torch.Generator().manual_seed(L)
    x = torch.randn(3, L, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(3, L, 8, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build("parallel", torch.float64), x, weight)
    assert_close(outputs_and_grads(build("chunked", torch.float64), x, weight), reference, 1e-12)
    for impl in ("chunked", "parallel"):
        assert_close(outputs_and_grads(build(impl), x.float(), weight), reference)
    stepped = outputs_and_grads(build(), x.float(), weight, lambda m, x: stepwise(m, x)[0])
    assert_close(stepped, reference)


def test_at_length_4096_chunked_parallel_and_step_agree():
    """Outputs and gradients of both forward paths; step's outputs (decoding runs without
    gradients; its gradients are held to the others above). The float64 reference is the
    chunked path here, equal to the float64 quadratic to 1e-12 above, and 40x cheaper."""
    g = torch.Generator().manual_seed(7)
    fields = {"d_model": 4, "heads": 2, "layers": 1, "chunk": 64, "d_ff": 8}
    x = torch.randn(1, 4096, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(1, 4096, 4, generator=g, dtype=torch.float64)
    reference = outputs_and_grads(build("chunked", torch.float64, **fields), x, weight)
    for impl in ("chunked", "parallel"):
        assert_close(outputs_and_grads(build(impl, **fields), x.float(), weight), reference)
    with torch.no_grad():
        assert_close([stepwise(build(**fields), x.float())[0]], reference[:1])


def numpy_layer_norm(x, weight, bias):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * weight + bias


def test_one_block_matches_a_hand_written_numpy_computation():
    """norm -> W_q, W_k, W_v -> the recurrence -> W_o -> residual; norm -> relu MLP -> residual;
    a final norm. Random norm parameters and biases, so a missing one shows."""
    model = build(layers=1, activation="relu", positions="none", d_ff=12, chunk=4).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(generator=torch.Generator().manual_seed(p.numel()))
    x = torch.randn(2, 11, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    P = {k: v.numpy() for k, v in model.state_dict().items()}
    xs = x.numpy()
    h = numpy_layer_norm(xs, P["blocks.0.norm1.weight"], P["blocks.0.norm1.bias"])
    qkv = h @ P["blocks.0.attn.in_proj.weight"].T + P["blocks.0.attn.in_proj.bias"]
    q, k, v = (a.reshape(2, 11, 2, 4).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1))
    att = numpy_recurrence(q, k, v).transpose(0, 2, 1, 3).reshape(2, 11, 8)
    xs = xs + att @ P["blocks.0.attn.out_proj.weight"].T + P["blocks.0.attn.out_proj.bias"]
    h = numpy_layer_norm(xs, P["blocks.0.norm2.weight"], P["blocks.0.norm2.bias"])
    h = np.maximum(h @ P["blocks.0.ff.up.weight"].T + P["blocks.0.ff.up.bias"], 0)
    xs = xs + h @ P["blocks.0.ff.down.weight"].T + P["blocks.0.ff.down.bias"]
    expected = numpy_layer_norm(xs, P["norm.weight"], P["norm.bias"])
    with torch.no_grad():
        for impl in ("chunked", "parallel"):
            model.blocks[0].attn.impl = impl
            np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(stepwise(model, x)[0].numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["chunked", "parallel"])
def test_a_masked_key_counts_as_if_it_were_not_there(impl):
    torch.manual_seed(1)
    layer = LinearAttention(build(impl).config)
    x = torch.randn(2, 20, 8)
    mask = torch.rand(2, 20) > 0.4
    mask[:, 0] = True
    with torch.no_grad():
        y = layer(x, mask)
        for b in range(2):
            torch.testing.assert_close(y[b, mask[b]], layer(x[b:b + 1, mask[b]])[0],
                                       rtol=1e-5, atol=1e-5)


def test_the_state_has_one_size_at_every_position():
    model = build(layers=3)  # H = 2, Dh = 4
    shapes = []
    for L in (1, 100):
        _, state = stepwise(model, torch.randn(2, L, 8))
        shapes.append([tuple(t.shape) for t in state.S + state.z])
        assert state.t == L
    assert shapes[0] == shapes[1] == [(2, 2, 4, 4)] * 3 + [(2, 2, 4, 1)] * 3


def test_under_bf16_autocast_the_sums_run_in_float32_and_stay_close(monkeypatch):
    import seqarena.models.linear_attention as la

    seen = []
    original = la.attend_chunked
    monkeypatch.setattr(la, "attend_chunked",
                        lambda q, k, v, *a: seen.append({q.dtype, k.dtype, v.dtype}) or
                        original(q, k, v, *a))
    model = build(d_model=32, heads=4)
    x = torch.randn(2, 300, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
            _, state = stepwise(model, x[:, :3])
    assert seen and all(dtypes == {torch.float32} for dtypes in seen)
    assert all(t.dtype == torch.float32 for t in state.S + state.z)
    assert torch.isfinite(mixed).all()
    # bf16 keeps 8 bits of mantissa in the projections: ~1e-2 of a unit-scale output
    assert (mixed.float() - exact).abs().max().item() < 0.1


def test_flops_are_the_matmuls_the_counter_sees_and_the_elementwise_core_counts_zero():
    """seqarena.flops: matmul FLOPs only, for every model; nothing hidden to declare."""
    model = build("chunked", d_model=16, heads=2, layers=1, chunk=64)
    assert model.uncounted_flops(3, 100) is None


def test_chunked_matmuls_grow_linearly_in_length_and_the_quadratic_does_not():
    """Counted: per head, L (4 C Dh + 4 Dh^2 + 2 Dh) for the chunked form, 4 L^2 Dh quadratic."""
    counted = {}
    for impl, attend in (("chunked", lambda q, k, v: attend_chunked(q, k, v, 64, 1e-6)),
                         ("parallel", lambda q, k, v: attend_parallel(q, k, v, 1e-6))):
        for L in (1024, 2048):
            q, k, v = torch.rand(3, 1, 2, L, 8).unbind(0)
            with FlopCounterMode(display=False) as counter:
                attend(q, k, v)
            counted[impl, L] = counter.get_total_flops()
    assert counted["chunked", 1024] == 2 * 1024 * (4 * 64 * 8 + 4 * 8 * 8 + 2 * 8)
    assert counted["chunked", 2048] == 2 * counted["chunked", 1024]
    assert counted["parallel", 2048] == 4 * counted["parallel", 1024] == 4 * 2 * 4 * 1024**2 * 8


def test_registered_causal_with_its_family_and_costs():
    spec = MODELS.get("linear-attention")
    model = build_model("linear-attention")
    assert model.family == "linear-attention" and model.causal and not model.seq2seq
    assert model.config.impl == "chunked" and model.reference().config.impl == "parallel"
    assert model.reference().reference() is None  # the quadratic is the reference itself
    assert spec.decode_cost == "O(1)" and "L D^2 / H" in spec.train_cost


@pytest.mark.parametrize("fields, field", [
    ({"impl": "fast"}, "impl"),
    ({"heads": 3}, "heads"),
    ({"chunk": 0}, "chunk"),
    ({"eps": -1.0}, "eps"),
    ({"d_ff": -1}, "d_ff"),
    ({"positions": "rotary"}, "positions"),
    ({"activation": "tanh"}, "activation"),
    ({"dropout": 1.0}, "dropout"),
    ({"layers": 0}, "layers"),
    ({"heads": "4"}, "heads"),
])
def test_bad_config_is_a_config_error_naming_the_field(fields, field):
    with pytest.raises(ConfigError, match=field):
        build_model("linear-attention", **fields)


# --- through the command line: trains, compares, benches, with nothing outside models/ changed --

TINY = ["--d-model", "8", "--batch-size", "4", "--threads", "1", "--device", "cpu"]


def test_trains_on_copy_from_the_command_line_and_writes_a_run(capsys, tmp_path):
    status, out, err = cli(capsys, "train", "--model", "linear-attention", "--task", "copy",
                           "--steps", "5", "--seq-len", "24", "--out", tmp_path, "--name", "la",
                           *TINY)
    assert status == 0, err
    run = tmp_path / "la"
    assert json.loads((run / "config.json").read_text())["model"] == "linear-attention"
    (result,) = read_results(run / "summary.json")["results"]
    assert result.model == "linear-attention" and result.steps == 5


def test_compares_with_an_lstm_end_to_end(capsys, tmp_path):
    status, out, err = cli(capsys, "compare", "--models", "linear-attention,lstm", "--seq-lens",
                           "16", "--steps", "5", "--lr", "3e-3", "--out", tmp_path / "cmp", *TINY)
    assert status == 0, err
    assert "linear-attention" in out
    results = read_results(tmp_path / "cmp" / "summary.json")["results"]
    assert {r.model for r in results} == {"linear-attention", "lstm"}


@pytest.mark.parametrize("spec", ["linear-attention:parallel", "linear-attention"])
def test_benches_with_flops_counted_and_decode_points(capsys, tmp_path, spec):
    status, out, err = cli(capsys, "bench", "--models", spec, "--seq-lens", "16",
                           "--modes", "train,decode", "--batch-size", "2", "--d-model", "16",
                           "--threads", "1", "--min-run-time", "0.001", "--json", "--out", tmp_path)
    assert status == 0, err
    results = json.loads(out)["results"]
    assert {r["mode"] for r in results} == {"train", "decode"}
    impl = spec.partition(":")[2] or "chunked"
    model = build_model("linear-attention", d_model=16, layers=1, impl=impl)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 16, 16))
    for r in results:
        assert r["status"] == "ok" and r["model"] == "linear-attention" and r["mfu"] is not None
    train = next(r for r in results if r["mode"] == "train")
    assert train["flops"] == 3 * counter.get_total_flops()  # the one convention: 3 x forward
    assert len([r for r in results if r["mode"] == "decode"]) >= 2
