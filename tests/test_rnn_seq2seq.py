"""rnn-ed: step-by-step decoding equals parallel decoding, padding in the source is invisible."""

import pytest
import torch

from seqarena.errors import ConfigError
from seqarena.flops import count_flops
from seqarena.models import MODELS, build_model

D, B, S, T = 8, 3, 7, 5
ATOL = 1e-5


def make(cell="lstm", impl="fused", layers=2):
    torch.manual_seed(0)
    return build_model("rnn-ed", d_model=D, layers=layers, cell=cell, impl=impl)


def source_mask(lengths=(S, 4, 2)):
    return torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]  # (B, S)


def assert_close(a, b, what):
    err = (a - b).abs().max().item()
    assert err <= ATOL, f"{what}: max abs difference {err:.2e} > {ATOL:.0e}"


def test_registered_as_encoder_decoder():
    model = make()
    assert model.seq2seq and model.causal
    assert MODELS.get("rnn-ed").decode_cost == "O(S)"
    src, tgt = torch.randn(B, S, D), torch.randn(B, T, D)
    assert model(src, tgt, source_mask()).shape == (B, T, D)


@pytest.mark.parametrize("impl", ["fused", "scratch"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_decoding_equals_parallel_decode(cell, impl):
    model = make(cell, impl)
    src, tgt, mask = torch.randn(B, S, D), torch.randn(B, T, D), source_mask()
    with torch.no_grad():
        memory = model.encode(src, mask)
        parallel = model.decode(tgt, memory, mask)
        state = model.init_state(B, memory, mask)
        steps = []
        for t in range(T):
            out, state = model.step(state, tgt[:, t])
            steps.append(out)
    assert_close(torch.stack(steps, dim=1), parallel, "step vs decode")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padded_source_positions_change_nothing(cell):
    model = make(cell)
    lengths = (S, 4, 2)
    mask = source_mask(lengths)
    src, tgt = torch.randn(B, S, D), torch.randn(B, T, D)
    noisy = torch.where(mask.unsqueeze(-1), src, torch.randn(B, S, D) * 10)
    with torch.no_grad():
        out = model(src, tgt, mask)
        assert_close(model(noisy, tgt, mask), out, "output with noise in the padding")
        for b, n in enumerate(lengths):  # and the same as each source alone, unpadded
            alone = model(src[b:b + 1, :n], tgt[b:b + 1])
            assert_close(out[b], alone[0], f"sequence {b} with source length {n}")
        assert not torch.allclose(model(noisy, tgt), out)  # without the mask the noise shows


def test_decoder_is_causal_over_the_target():
    model = make()
    src, tgt = torch.randn(B, S, D), torch.randn(B, T, D)
    changed = tgt.clone()
    changed[:, 3:] = torch.randn(B, T - 3, D)
    with torch.no_grad():
        assert_close(model(src, changed)[:, :3], model(src, tgt)[:, :3], "prefix outputs")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_scratch_and_fused_agree_with_shared_weights(cell):
    fused, scratch = make(cell, "fused"), make(cell, "scratch")
    scratch.load_state_dict(fused.state_dict())
    src, tgt, mask = torch.randn(B, S, D), torch.randn(B, T, D), source_mask()
    results = []
    for model in (fused, scratch):
        s, t = src.clone().requires_grad_(True), tgt.clone().requires_grad_(True)
        y = model(s, t, mask)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append((y, s.grad, t.grad, {n: p.grad for n, p in model.named_parameters()}))
    (y_f, ds_f, dt_f, g_f), (y_s, ds_s, dt_s, g_s) = results
    assert_close(y_s, y_f, "output")
    assert_close(ds_s, ds_f, "source gradient")
    assert_close(dt_s, dt_f, "target gradient")
    for name in g_f:
        assert_close(g_s[name], g_f[name], f"gradient of {name}")


def test_uncounted_flops_add_the_hidden_matmuls_of_encoder_and_decoder():
    src, tgt = torch.randn(2, S, D), torch.randn(2, T, D)
    totals = []
    for impl in ("fused", "scratch"):
        model = make("lstm", impl, layers=1)
        totals.append(model.uncounted_flops(2, S, T) + count_flops(lambda: model(src, tgt)))
        if impl == "scratch":  # the scratch cells show every matmul
            assert model.uncounted_flops(2, S, T) == 0
    assert totals[0] == totals[1]


@pytest.mark.parametrize("fields, field", [
    ({"cell": "rnn"}, "cell"),
    ({"impl": "fast"}, "impl"),
    ({"d_model": 9}, "d_model"),
    ({"layers": 0}, "layers"),
])
def test_bad_config_raises_config_error_naming_the_field(fields, field):
    with pytest.raises(ConfigError, match=field):
        build_model("rnn-ed", **fields)
