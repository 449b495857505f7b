"""Elman RNN, LSTM, GRU: from-scratch cells, fused path and torch.nn agree, gradients included."""

import pytest
import torch
from torch import nn

from seqarena.errors import ConfigError
from seqarena.flops import count_flops
from seqarena.models import MODELS, build_model
from seqarena.models import StepNotSupported

D, B, L = 8, 3, 6
ATOL = 1e-5

# (registered name, extra config fields, torch.nn class and its extra arguments)
KINDS = {
    "rnn-tanh": ("rnn", {"nonlinearity": "tanh"}, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": ("rnn", {"nonlinearity": "relu"}, nn.RNN, {"nonlinearity": "relu"}),
    "lstm": ("lstm", {}, nn.LSTM, {}),
    "gru": ("gru", {}, nn.GRU, {}),
}


def make(kind, impl="fused", **fields):
    name, extra, _, _ = KINDS[kind]
    torch.manual_seed(0)
    return build_model(name, d_model=D, impl=impl, **extra, **fields)


def outputs_and_grads(model, x, mask=None):
    """Forward, a loss that weighs every output differently, backward: output and all gradients."""
    x = x.clone().requires_grad_(True)
    model.zero_grad()
    y = model(x, mask) if mask is not None else model(x)
    if isinstance(y, tuple):  # torch.nn modules return (output, state)
        y = y[0]
    weights = torch.linspace(-1, 1, y.numel()).view_as(y)
    (y * weights).sum().backward()
    return y.detach(), x.grad, {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_close(a, b, what):
    err = (a - b).abs().max().item()
    assert err <= ATOL, f"{what}: max abs difference {err:.2e} > {ATOL:.0e}"


def prefix_mask(lengths, length):
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]  # (B, L)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_the_cells_match_torch_nn_with_copied_weights(kind, bidirectional):
    """The from-scratch cells against torch.nn (fused == scratch on the same parameters is
    test_contract's reference check)."""
    _, _, torch_cls, torch_args = KINDS[kind]
    torch.manual_seed(1)
    hidden = D // 2 if bidirectional else D
    reference = torch_cls(D, hidden, num_layers=2, batch_first=True, bidirectional=bidirectional,
                          **torch_args)
    x = torch.randn(B, L, D)
    y_ref, dx_ref, grads_ref = outputs_and_grads(reference, x)
    for impl in ("scratch",):
        model = make(kind, impl, layers=2, bidirectional=bidirectional)
        model.rnn.load_state_dict(reference.state_dict())
        y, dx, grads = outputs_and_grads(model, x)
        assert y.shape == (B, L, D)
        assert_close(y, y_ref, f"{impl} output")
        assert_close(dx, dx_ref, f"{impl} input gradient")
        for name, g in grads_ref.items():
            assert_close(grads[f"rnn.{name}"], g, f"{impl} gradient of {name}")


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_scratch_cells_equal_fused_path_sharing_one_set_of_weights(kind, bidirectional):
    fused = make(kind, "fused", layers=3, bidirectional=bidirectional)
    scratch = make(kind, "scratch", layers=3, bidirectional=bidirectional)
    scratch.load_state_dict(fused.state_dict())
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in scratch.named_parameters()]
    x = torch.randn(B, L, D)
    mask = prefix_mask([L, 4, 1], L)
    for m in (None, mask):
        y_f, dx_f, g_f = outputs_and_grads(fused, x, m)
        y_s, dx_s, g_s = outputs_and_grads(scratch, x, m)
        assert_close(y_s, y_f, "output")
        assert_close(dx_s, dx_f, "input gradient")
        for name in g_f:
            assert_close(g_s[name], g_f[name], f"gradient of {name}")


def test_scratch_path_reads_the_fused_modules_parameters():
    model = make("lstm", "scratch")
    x = torch.randn(B, L, D)
    before = model(x)
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(0.5)
    assert not torch.allclose(model(x), before)


@pytest.mark.parametrize("impl", ["fused", "scratch"])
@pytest.mark.parametrize("kind", KINDS)
def test_step_by_step_equals_forward(kind, impl):
    model = make(kind, impl, layers=2)
    assert model.causal
    x = torch.randn(B, L, D)
    with torch.no_grad():
        parallel = model(x)
        state = model.init_state(B)
        steps = []
        for t in range(L):
            y_t, state = model.step(state, x[:, t])
            steps.append(y_t)
    assert_close(torch.stack(steps, dim=1), parallel, "step vs forward")


@pytest.mark.parametrize("kind", ["rnn-tanh", "lstm", "gru"])
def test_causal_model_output_at_t_ignores_later_inputs_and_padding(kind):
    model = make(kind, layers=2)
    x = torch.randn(B, L, D)
    changed = x.clone()
    changed[:, 4:] = torch.randn(B, L - 4, D)
    with torch.no_grad():
        assert_close(model(changed)[:, :4], model(x)[:, :4], "prefix outputs")
        assert_close(model(x, prefix_mask([4, 4, 4], L))[:, :4], model(x)[:, :4], "masked")


@pytest.mark.parametrize("impl", ["fused", "scratch"])
@pytest.mark.parametrize("kind", KINDS)
def test_bidirectional_with_padding_equals_each_sequence_run_unpadded(kind, impl):
    model = make(kind, impl, layers=2, bidirectional=True)
    assert not model.causal
    lengths = [L, 4, 1]
    x = torch.randn(B, L, D)  # padding positions hold noise, which must not leak
    with torch.no_grad():
        y = model(x, prefix_mask(lengths, L))
        for b, n in enumerate(lengths):
            alone = model(x[b:b + 1, :n])
            assert_close(y[b, :n], alone[0], f"sequence {b} of length {n}")
            assert torch.all(y[b, n:] == 0)


def test_bidirectional_refuses_a_mask_with_padding_before_real_tokens():
    model = make("gru", bidirectional=True)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 0] = False
    with pytest.raises(ValueError, match="padding at the end"):
        model(torch.randn(B, L, D), mask)


def test_bidirectional_step_raises_a_clear_error():
    model = make("lstm", bidirectional=True)
    with pytest.raises(StepNotSupported, match="bidirectional"):
        model.step(model.init_state(B), torch.randn(B, D))


def test_dropout_acts_between_layers_in_training_only():
    model = make("lstm", "scratch", layers=2, dropout=0.5)
    plain = make("lstm", "scratch", layers=2)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(B, L, D)
    model.eval()
    assert_close(model(x), plain(x), "eval output")
    model.train()
    assert not torch.allclose(model(x), plain(x))


@pytest.mark.parametrize("fields, field", [
    ({"d_model": 0}, "d_model"),
    ({"layers": -1}, "layers"),
    ({"nonlinearity": "sigmoid"}, "nonlinearity"),
    ({"impl": "cuda"}, "impl"),
    ({"bidirectional": True, "d_model": 7}, "d_model"),
    ({"dropout": 1.0}, "dropout"),
])
def test_bad_config_raises_config_error_naming_the_field(fields, field):
    with pytest.raises(ConfigError, match=field):
        build_model("rnn", **fields)


def test_nonlinearity_other_than_tanh_is_refused_for_gated_cells():
    for name in ("lstm", "gru"):
        with pytest.raises(ConfigError, match="nonlinearity"):
            build_model(name, nonlinearity="relu")


def test_registered_with_costs():
    for name in ("rnn", "lstm", "gru"):
        spec = MODELS.get(name)
        assert (spec.train_cost, spec.decode_cost) == ("O(L) sequential", "O(1)")


def counted_flops(model, batch, length):
    return count_flops(lambda: model(torch.randn(batch, length, model.config.d_model)))


@pytest.mark.parametrize("impl", ["fused", "scratch"])
def test_uncounted_plus_counted_flops_equal_the_hand_formula(impl):
    # LSTM, D = H = 4, two layers, B = 3, L = 5 (15 tokens):
    # matmuls per layer 2 * 15 * 4 gates * 4 units * (4 inputs + 4 hidden) = 3840;
    # the gate math is elementwise and counts zero (seqarena.flops)
    torch.manual_seed(0)
    model = build_model("lstm", d_model=4, layers=2, impl=impl)
    assert model.uncounted_flops(3, 5) + counted_flops(model, 3, 5) == 2 * 3840
    if impl == "scratch":  # every matmul is visible
        assert model.uncounted_flops(3, 5) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_total_flops_are_the_same_whichever_impl_runs(kind):
    totals = []
    for impl in ("fused", "scratch"):
        model = make(kind, impl, layers=2, bidirectional=True)
        totals.append(model.uncounted_flops(2, 3) + counted_flops(model, 2, 3))
    # 2 layers x 2 directions, H = 4, 6 tokens: matmuls 2 * 6 * G * 4 * (8 inputs + 4 hidden)
    gates = {"lstm": 4, "gru": 3}.get(kind, 1)
    assert totals[0] == totals[1] == 4 * (2 * 6 * gates * 4 * 12)
