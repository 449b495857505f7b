"""Transformer blocks against torch.nn with copied weights; cached decoding against forward."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from seqarena.errors import ConfigError, UserError
from seqarena.flops import count_flops
from seqarena.models import build_model
from seqarena.models import StepNotSupported
from seqarena.models.transformer import (DecoderBlock, Decoder, Encoder, EncoderBlock, Positions,
                                         TransformerConfig)

# B batch, L length (S source, T target), D model width, H heads, F feed-forward width

B, L, S, T, D, H, F = 3, 6, 5, 7, 16, 4, 24
ATOL = RTOL = 1e-5  # torch.allclose(atol=1e-5) semantics: |a - e| <= atol + rtol * |e|

# our parameter name -> torch.nn.TransformerEncoderLayer / TransformerDecoderLayer name
ATTN = {"in_proj.weight": "in_proj_weight", "in_proj.bias": "in_proj_bias",
        "out_proj.weight": "out_proj.weight", "out_proj.bias": "out_proj.bias"}
FF_NORMS = {"ff.up.weight": "linear1.weight", "ff.up.bias": "linear1.bias",
            "ff.down.weight": "linear2.weight", "ff.down.bias": "linear2.bias",
            **{f"norm{i}.{p}": f"norm{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}}
ENCODER_NAMES = {**{f"attn.{k}": f"self_attn.{v}" for k, v in ATTN.items()}, **FF_NORMS}
DECODER_NAMES = {**{f"self_attn.{k}": f"self_attn.{v}" for k, v in ATTN.items()},
                 **{f"cross_attn.{k}": f"multihead_attn.{v}" for k, v in ATTN.items()}, **FF_NORMS}


def assert_close(actual, expected, what):
    err = (actual - expected).abs().max().item()
    assert torch.allclose(actual, expected, atol=ATOL, rtol=RTOL), \
        f"{what}: max abs difference {err:.2e}, tolerance atol={ATOL} rtol={RTOL}"


def copy_weights(ours, ref, names):
    """Randomise ref (norms and biases too, so a missing one shows) and copy it into ours."""
    ours_params, ref_params = dict(ours.named_parameters()), dict(ref.named_parameters())
    assert set(ours_params) == {k for k in names if names[k] in ref_params}, "unmapped parameters"
    with torch.no_grad():
        for ours_name, p in ours_params.items():
            q = ref_params[names[ours_name]]
            q.normal_(1.0 if "norm" in ours_name and "weight" in ours_name else 0.0, 0.2)
            p.copy_(q)
    return [ours_params[k] for k in ours_params], [ref_params[names[k]] for k in ours_params]


def assert_same_outputs_and_gradients(y, y_ref, inputs, ours_params, ref_params, ref_inputs=None):
    assert_close(y, y_ref, "output")
    probe = torch.randn_like(y)  # a random readout, so every output element steers the gradient
    g = torch.autograd.grad((y * probe).sum(), [*inputs, *ours_params])
    g_ref = torch.autograd.grad((y_ref * probe).sum(), [*(ref_inputs or inputs), *ref_params])
    for a, b, i in zip(g, g_ref, range(len(g))):
        assert_close(a, b, f"gradient {i}")


def right_padded(lengths, size):
    return torch.arange(size)[None, :] < torch.tensor(lengths)[:, None]  # True = real token


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_encoder_block_matches_torch_encoder_layer(norm_first, activation, impl):
    torch.manual_seed(0)
    config = TransformerConfig(d_model=D, heads=H, d_ff=F, norm_first=norm_first,
                               activation=activation, impl=impl)
    ours = EncoderBlock(config, causal=False)
    ref = nn.TransformerEncoderLayer(D, H, F, dropout=0.0, activation=activation,
                                     batch_first=True, norm_first=norm_first)
    params = copy_weights(ours, ref, ENCODER_NAMES)
    x = torch.randn(B, L, D, requires_grad=True)
    mask = right_padded([6, 4, 2], L)
    y, y_ref = ours(x, mask), ref(x, src_key_padding_mask=~mask)
    assert_same_outputs_and_gradients(y, y_ref, [x], *params)


@pytest.mark.parametrize("norm_first", [True, False])
def test_causal_encoder_block_matches_torch_with_causal_mask(norm_first):
    torch.manual_seed(1)
    config = TransformerConfig(d_model=D, heads=H, d_ff=F, norm_first=norm_first)
    ours = EncoderBlock(config, causal=True)
    ref = nn.TransformerEncoderLayer(D, H, F, dropout=0.0, activation="gelu", batch_first=True,
                                     norm_first=norm_first)
    params = copy_weights(ours, ref, ENCODER_NAMES)
    x = torch.randn(B, L, D, requires_grad=True)
    causal = nn.Transformer.generate_square_subsequent_mask(L)
    y, y_ref = ours(x), ref(x, src_mask=causal, is_causal=True)
    assert_same_outputs_and_gradients(y, y_ref, [x], *params)


@pytest.mark.parametrize("norm_first", [True, False])
def test_decoder_block_matches_torch_decoder_layer(norm_first):
    torch.manual_seed(2)
    config = TransformerConfig(d_model=D, heads=H, d_ff=F, norm_first=norm_first, activation="relu")
    ours = DecoderBlock(config)
    ref = nn.TransformerDecoderLayer(D, H, F, dropout=0.0, activation="relu", batch_first=True,
                                     norm_first=norm_first)
    params = copy_weights(ours, ref, DECODER_NAMES)
    tgt = torch.randn(B, T, D, requires_grad=True)
    memory = torch.randn(B, S, D, requires_grad=True)
    memory_mask = right_padded([5, 3, 1], S)
    y = ours(tgt, memory, memory_mask)
    y_ref = ref(tgt, memory, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T),
                tgt_is_causal=True, memory_key_padding_mask=~memory_mask)
    assert_same_outputs_and_gradients(y, y_ref, [tgt, memory], *params)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_forward_matches_step_by_step_decoding(positions, norm_first):
    torch.manual_seed(3)
    # sinusoids past max_len=10 are computed on the fly, and must continue the table
    max_len = 32 if positions == "learned" else 10
    model = build_model("transformer", d_model=D, heads=H, layers=2, positions=positions,
                        norm_first=norm_first, max_len=max_len).eval()
    steps = 20  # past the KV cache's first buffer (16): the growth must keep the past
    x = torch.randn(B, steps, D)
    with torch.no_grad():
        parallel = model(x)
        state = model.init_state(B)
        stepped = []
        for t in range(steps):
            y_t, state = model.step(state, x[:, t])
            stepped.append(y_t)
    assert_close(torch.stack(stepped, dim=1), parallel, "stepped output")


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_decoder_step_decoding_matches_parallel_decode(norm_first):
    torch.manual_seed(4)
    model = build_model("transformer-ed", d_model=D, heads=H, layers=2, norm_first=norm_first,
                        positions="learned", max_len=16).eval()
    assert model.seq2seq and model.causal
    src, tgt = torch.randn(B, S, D), torch.randn(B, T, D)
    src_mask = right_padded([5, 2, 4], S)
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        parallel = model.decode(tgt, memory, src_mask)
        assert_close(model(src, tgt, src_mask), parallel, "forward")
        state = model.init_state(B, memory, src_mask)
        stepped = []
        for t in range(T):
            y_t, state = model.step(state, tgt[:, t])
            stepped.append(y_t)
    assert_close(torch.stack(stepped, dim=1), parallel, "stepped output")


def test_encoder_sees_the_future_and_decoder_does_not():
    torch.manual_seed(5)
    config = TransformerConfig(d_model=D, heads=H, causal=True)
    encoder, decoder = Encoder(config), Decoder(dataclasses.replace(config, causal=False))
    assert not encoder.causal and decoder.causal  # the subclass fixes causal whatever the config
    x = torch.randn(B, L, D)
    changed = x.clone()
    changed[:, -1] = torch.randn(B, D)
    for model, sees_future in ((encoder, True), (decoder, False)):
        first = model(x)[:, :-1]
        moved = (model(changed)[:, :-1] - first).abs().max().item()
        assert (moved > 1e-3) == sees_future, f"{type(model).__name__}: past moved {moved:.2e}"


def test_padding_does_not_change_real_positions():
    torch.manual_seed(6)
    model = build_model("transformer", d_model=D, heads=H, causal=False)
    x = torch.randn(B, L, D)
    mask = right_padded([6, 4, 2], L)
    noisy = torch.where(mask[..., None], x, torch.randn(B, L, D) * 10)
    y, y_noisy = model(x, mask), model(noisy, mask)
    assert_close(y[mask], y_noisy[mask], "outputs at real positions")


@pytest.mark.parametrize("max_len", [4096, 6])  # 6: the last positions fall past the table
def test_sinusoidal_positions_follow_the_paper(max_len):
    pos = Positions(TransformerConfig(d_model=6, heads=2, positions="sinusoidal", max_len=max_len))
    pe = pos(torch.zeros(1, 5, 6), start=3)[0]  # positions 3..7
    for p in range(5):
        for i in range(3):
            angle = (p + 3) / 10000 ** (2 * i / 6)
            assert math.isclose(pe[p, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(pe[p, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)


def test_learned_positions_refuse_sequences_longer_than_max_len():
    model = build_model("transformer", d_model=D, heads=H, positions="learned", max_len=4)
    with pytest.raises(UserError, match="max_len=4"):
        model(torch.randn(1, 5, D))


def test_bidirectional_transformer_refuses_to_step():
    model = build_model("transformer", d_model=D, heads=H, causal=False)
    with pytest.raises(StepNotSupported, match="causal=True"):
        model.step(model.init_state(1), torch.randn(1, D))


@pytest.mark.parametrize("fields, names", [
    (dict(d_model=30, heads=4), ["d_model=30", "heads=4"]),
    (dict(heads=0), ["heads"]),
    (dict(d_model=0), ["d_model"]),
    (dict(layers=-1), ["layers"]),
    (dict(d_ff=-8), ["d_ff"]),
    (dict(positions="rotary"), ["positions", "rotary"]),
    (dict(activation="swish"), ["activation"]),
    (dict(impl="flash"), ["impl"]),
    (dict(positions="learned", max_len=0), ["max_len"]),
])
def test_bad_config_raises_config_error_naming_the_fields(fields, names):
    with pytest.raises(ConfigError) as e:
        TransformerConfig(**fields)
    for name in names:
        assert name in str(e.value)


def test_d_ff_zero_means_four_times_d_model():
    model = build_model("transformer", d_model=D, heads=H, d_ff=0)
    assert model.blocks[0].ff.up.out_features == 4 * D


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.1])  # with dropout SDPA on CPU takes the math path
def test_flops_equal_the_hand_count_with_a_causal_kernel_counting_half(impl, causal, dropout):
    model = build_model("transformer", d_model=D, heads=H, d_ff=F, causal=causal, impl=impl,
                        dropout=dropout)
    x = torch.randn(B, L, D)
    linears = 2 * B * L * (D * 3 * D + D * D + D * F + F * D)  # W_qkv, W_o, the feed-forward
    attention = 2 * 2 * B * H * L * L * (D // H)  # q k^T and att v over the whole square
    # the fused kernel told is_causal skips the upper triangle; the manual path and the math
    # path SDPA takes for dropout on CPU compute the whole square under a mask
    if causal and impl == "sdpa" and dropout == 0:
        attention //= 2
    assert count_flops(lambda: model(x)) == linears + attention


def test_encoder_decoder_flops_count_encoder_decoder_and_cross_attention():
    model = build_model("transformer-ed", d_model=D, heads=H, d_ff=F, positions="none")
    src, tgt = torch.randn(B, S, D), torch.randn(B, T, D)
    linears = 2 * B * (S * (4 * D * D + 2 * D * F) + T * (4 * D * D + 2 * D * F)  # self, ff
                       + T * 2 * D * D + S * 2 * D * D)  # cross: W_q, W_o on T; W_k, W_v on S
    attention = 4 * B * D * (S * S + T * S) + 2 * B * D * T * T  # decoder self-attention: causal
    assert count_flops(lambda: model(src, tgt)) == linears + attention
