"""Positions that extrapolate: RoPE and ALiBi against numpy computations of their definitions,
the parallel forward against KV-cache decoding, and learned positions refusing long inputs."""

import math

import numpy as np
import pytest
import torch

from seqarena.errors import ConfigError, UserError
from seqarena.models import build_model
from seqarena.models.attention import MultiHeadAttention, alibi_slopes, rope
from seqarena.models.transformer import TransformerConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

B, L, D, H = 2, 7, 16, 4
Dh = D // H


def rotation(m: int, width: int) -> np.ndarray:
    """R_m (Dh, Dh): a 2-D rotation by m * theta_i in the plane of dims (i, i + Dh/2)."""
    R, half = np.zeros((width, width)), width // 2
    for i in range(half):
        a = m * 10000.0 ** (-2 * i / width)
        R[i, i], R[i, i + half] = math.cos(a), -math.sin(a)
        R[i + half, i], R[i + half, i + half] = math.sin(a), math.cos(a)
    return R


def numpy_attention(attn, x, causal, positions, key_mask=None):
    """The layer's output, written with numpy: projections, positions, softmax, out_proj."""
    numpy = lambda t: t.detach().double().numpy()  # noqa: E731
    w, b = numpy(attn.in_proj.weight), numpy(attn.in_proj.bias)
    x = x.double().numpy()
    q, k, v = np.split(x @ w.T + b, 3, axis=-1)  # (B, L, D) each
    split = lambda t: t.reshape(t.shape[0], t.shape[1], H, Dh).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q), split(k), split(v)  # (B, H, L, Dh)
    n = x.shape[1]
    if positions == "rope":
        R = np.stack([rotation(m, Dh) for m in range(n)])  # (L, Dh, Dh)
        q, k = np.einsum("lij,bhlj->bhli", R, q), np.einsum("lij,bhlj->bhli", R, k)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(Dh)  # (B, H, L, L)
    if positions == "alibi":
        i, j = np.arange(n)[:, None], np.arange(n)[None, :]
        m = attn.slopes.double().numpy()[:, None, None]  # (H, 1, 1)
        scores = scores - m * np.abs(i - j)  # the paper's -m_h (i - j) where j <= i
    see = np.ones((n, n), dtype=bool)
    if causal:
        see = np.tril(see)
    see = np.broadcast_to(see, scores.shape)
    if key_mask is not None:
        see = see & key_mask.numpy()[:, None, None, :]
    scores = np.where(see, scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    y = (p @ v).transpose(0, 2, 1, 3).reshape(x.shape[0], n, D)
    wo, bo = numpy(attn.out_proj.weight), numpy(attn.out_proj.bias)
    return torch.from_numpy(y @ wo.T + bo)


def test_rope_rotates_each_pair_by_its_angle_as_explicit_rotation_matrices():
    t = torch.randn(B, H, L, Dh, dtype=torch.float64)
    got = rope(t, torch.arange(3, 3 + L))
    for m in range(L):
        want = t[:, :, m].numpy() @ rotation(3 + m, Dh).T
        np.testing.assert_allclose(got[:, :, m].numpy(), want, atol=1e-12)


def test_rope_scores_depend_only_on_the_distance():
    q, k = torch.randn(2, 1, 1, 1, Dh, dtype=torch.float64)

    def score(m, n):
        return (rope(q, torch.tensor([m])) * rope(k, torch.tensor([n]))).sum().item()
    for m, n in [(5, 2), (2, 5), (0, 0), (9, 1)]:
        for shift in (1, 17, 300):
            assert math.isclose(score(m, n), score(m + shift, n + shift), abs_tol=1e-9)
    assert not math.isclose(score(5, 2), score(5, 3), abs_tol=1e-6)  # yet distance matters


def test_alibi_slopes_follow_the_paper_and_its_rule_for_other_head_counts():
    assert alibi_slopes(8).tolist() == [2.0 ** -h for h in range(1, 9)]  # 2^(-8h/H), H = 8
    assert alibi_slopes(4).tolist() == [2.0 ** (-2 * h) for h in range(1, 5)]
    # H = 6: the 4 slopes of H = 4, then every other slope of H = 8 (ofirpress's get_slopes(6))
    assert alibi_slopes(6).tolist() == [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]


@pytest.mark.parametrize("positions", ["rope", "alibi"])
@pytest.mark.parametrize("impl", ["sdpa", "manual"])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_numpy_with_positions(positions, impl, causal):
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, H, impl=impl, positions=positions).eval()
    x = torch.randn(B, L, D)
    key_mask = torch.arange(L)[None, :] < torch.tensor([[L], [L - 3]])  # right padding
    with torch.no_grad():
        y = attn(x, key_mask=key_mask, causal=causal).double()
    want = numpy_attention(attn, x, causal, positions, key_mask)
    real = key_mask  # padding rows may differ; they are never read
    assert (y - want)[real].abs().max().item() < 1e-5


@pytest.mark.parametrize("positions", ["rope", "alibi"])
@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_causal_forward_equals_kv_cache_decoding(positions, impl):
    torch.manual_seed(0)
    model = build_model("transformer", d_model=D, heads=H, layers=2, positions=positions,
                        impl=impl, max_len=4).eval()  # max_len bounds nothing here
    x = torch.randn(B, 12, D)
    with torch.no_grad():
        parallel = model(x)
        state, steps = model.init_state(B), []
        for t in range(x.shape[1]):
            y_t, state = model.step(state, x[:, t])
            steps.append(y_t)
    err = (torch.stack(steps, dim=1) - parallel).abs().max().item()
    assert err < 1e-5, f"max |step - forward| = {err:.2e}"


@pytest.mark.parametrize("positions", ["rope", "alibi"])
def test_sdpa_and_manual_agree_with_positions_and_padding_gradients_included(positions):
    torch.manual_seed(0)
    sdpa = MultiHeadAttention(D, H, impl="sdpa", positions=positions)
    manual = MultiHeadAttention(D, H, impl="manual", positions=positions)
    manual.load_state_dict(sdpa.state_dict())
    x = torch.randn(B, L, D, requires_grad=True)
    mask = torch.arange(L)[None, :] < torch.tensor([[L], [4]])
    y1 = sdpa(x, key_mask=mask, causal=True)
    y2 = manual(x, key_mask=mask, causal=True)
    assert (y1 - y2)[mask].abs().max().item() < 1e-5
    probe = torch.randn_like(y1) * mask[..., None]
    g1 = torch.autograd.grad((y1 * probe).sum(), [x, *sdpa.parameters()])
    g2 = torch.autograd.grad((y2 * probe).sum(), [x, *manual.parameters()])
    assert max((a - b).abs().max().item() for a, b in zip(g1, g2)) < 1e-5


def test_encoder_decoder_applies_positions_to_self_attention_only():
    model = build_model("transformer-ed", d_model=D, heads=H, positions="alibi")
    assert model.blocks[0].self_attn.positions == "alibi"
    assert model.blocks[0].cross_attn.positions == "none"
    assert model.encoder.blocks[0].attn.positions == "alibi"


def test_learned_positions_refuse_a_longer_sequence_in_one_line_naming_the_fix():
    model = build_model("transformer", d_model=D, heads=H, positions="learned", max_len=8)
    with pytest.raises(UserError) as e:
        model(torch.randn(1, 9, D))
    message = str(e.value)
    assert "\n" not in message and "max_len >= 9" in message and "'rope'" in message


def test_rope_needs_an_even_head_width():
    with pytest.raises(ConfigError, match="positions='rope'"):
        TransformerConfig(d_model=12, heads=4, positions="rope")  # head width 3


def test_learned_positions_shorter_than_the_task_are_refused_before_training(tmp_path, capsys):
    """Through `seqarena train`: trained on lengths 1-40 but tested up to 500, a 64-row table
    could only fail at the first evaluation; it is refused up front, one line, exit 2, and
    nothing is written."""
    from seqarena.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "transformer", "--model-arg", "positions=learned",
              "--model-arg", "max_len=64", "--task", "parity", "--seq-len", "501", "--steps", "2",
              "--d-model", "8", "--out", str(tmp_path), "--name", "r"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "up to 501 tokens" in err and "set max_len >= 501" in err
    assert not (tmp_path / "r").exists()
