"""Multi-head attention: against torch.nn.MultiheadAttention, manual against SDPA, the KV cache."""

import pytest
import torch
from torch import nn

from seqarena.models.attention import KVCache, MultiHeadAttention, record_attention

# B batch, L query length, S key length, D model width, H heads

B, L, S, D, H = 3, 7, 5, 16, 4
ATOL = RTOL = 1e-5  # torch.allclose(atol=1e-5) semantics: |a - e| <= atol + rtol * |e|


def random_mha(impl="sdpa"):
    torch.manual_seed(0)
    ours = MultiHeadAttention(D, H, impl=impl)
    ref = nn.MultiheadAttention(D, H, batch_first=True)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.25)  # biases too, so a missing bias would show
        ours.in_proj.weight.copy_(ref.in_proj_weight)
        ours.in_proj.bias.copy_(ref.in_proj_bias)
        ours.out_proj.weight.copy_(ref.out_proj.weight)
        ours.out_proj.bias.copy_(ref.out_proj.bias)
    return ours, ref


def right_padded(lengths, size):
    return torch.arange(size)[None, :] < torch.tensor(lengths)[:, None]  # (B, size), True = real


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


def assert_close(actual, expected, what):
    err = (actual - expected).abs().max().item()
    assert torch.allclose(actual, expected, atol=ATOL, rtol=RTOL), \
        f"{what}: max abs difference {err:.2e}, tolerance atol={ATOL} rtol={RTOL}"


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_torch_multihead_attention_with_copied_weights(impl, padding,
                                                                             causal):
    ours, ref = random_mha(impl)
    torch.manual_seed(1)
    x = torch.randn(B, L, D, requires_grad=True)
    probe = torch.randn(B, L, D)  # a random readout, so every output element steers the gradient
    key_mask = right_padded([7, 4, 2], L) if padding else None
    y = ours(x, key_mask=key_mask, causal=causal)
    y_ref, _ = ref(x, x, x, need_weights=False,
                   key_padding_mask=None if key_mask is None else ~key_mask,
                   attn_mask=torch.ones(L, L, dtype=torch.bool).triu(1) if causal else None)
    assert_close(y, y_ref, "output")
    ours_params = [ours.in_proj.weight, ours.in_proj.bias, ours.out_proj.weight, ours.out_proj.bias]
    ref_params = [ref.in_proj_weight, ref.in_proj_bias, ref.out_proj.weight, ref.out_proj.bias]
    for g, g_ref, name in zip(grads((y * probe).sum(), [x, *ours_params]),
                              grads((y_ref * probe).sum(), [x, *ref_params]),
                              ["x", "W_qkv", "b_qkv", "W_o", "b_o"]):
        assert_close(g, g_ref, f"gradient of {name}")


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_cross_attention_matches_torch_with_memory_padding(impl):
    ours, ref = random_mha(impl)
    torch.manual_seed(2)
    x = torch.randn(B, L, D, requires_grad=True)
    memory = torch.randn(B, S, D, requires_grad=True)
    key_mask = right_padded([5, 3, 1], S)
    y = ours(x, memory, key_mask=key_mask)
    y_ref, _ = ref(x, memory, memory, key_padding_mask=~key_mask, need_weights=False)
    assert_close(y, y_ref, "output")
    probe = torch.randn(B, L, D)
    for g, g_ref, name in zip(grads((y * probe).sum(), [x, memory]),
                              grads((y_ref * probe).sum(), [x, memory]), ["x", "memory"]):
        assert_close(g, g_ref, f"gradient of {name}")


def test_manual_equals_sdpa_with_rows_that_see_no_key():
    torch.manual_seed(3)
    sdpa = MultiHeadAttention(D, H, impl="sdpa")
    manual = MultiHeadAttention(D, H, impl="manual")
    manual.load_state_dict(sdpa.state_dict())
    x = torch.randn(B, L, D, requires_grad=True)
    # left padding under a causal mask: the first queries of row 1 may see no key at all
    key_mask = torch.ones(B, L, dtype=torch.bool)
    key_mask[1, :3] = False
    probe = torch.randn(B, L, D)
    outs = [m(x, key_mask=key_mask, causal=True) for m in (sdpa, manual)]
    assert torch.isfinite(outs[1]).all()
    assert_close(outs[1], outs[0], "output")
    g_sdpa = grads((outs[0] * probe).sum(), [x, *sdpa.parameters()])
    g_manual = grads((outs[1] * probe).sum(), [x, *manual.parameters()])
    for a, b in zip(g_manual, g_sdpa):
        assert torch.isfinite(a).all()
        assert_close(a, b, "gradient")


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_kv_cache_steps_match_causal_forward(impl):
    torch.manual_seed(4)
    attn = MultiHeadAttention(D, H, impl=impl).eval()
    steps = 20  # longer than the cache's first buffer (16), so it must grow and keep its contents
    x = torch.randn(B, steps, D)
    with torch.no_grad():
        parallel = attn(x, causal=True)
        cache = KVCache()
        stepped = torch.cat([attn.step(x[:, t:t + 1], cache) for t in range(steps)], dim=1)
    assert cache.length == steps
    assert_close(stepped, parallel, "stepped output")


def test_memory_cache_step_matches_cross_attention():
    torch.manual_seed(5)
    attn = MultiHeadAttention(D, H).eval()
    x, memory = torch.randn(B, L, D), torch.randn(B, S, D)
    key_mask = right_padded([5, 2, 4], S)
    with torch.no_grad():
        parallel = attn(x, memory, key_mask=key_mask)
        cache = attn.memory_cache(memory)
        stepped = torch.cat([attn.step(x[:, t:t + 1], cache, key_mask) for t in range(L)], dim=1)
    assert cache.length == S  # a memory cache is read, never appended to
    assert_close(stepped, parallel, "stepped output")


def test_recorded_weights_are_the_causal_softmax_and_recording_stops_on_exit():
    torch.manual_seed(6)
    attn = MultiHeadAttention(D, H)
    x = torch.randn(B, L, D)
    key_mask = right_padded([7, 5, 3], L)
    with torch.no_grad():
        with record_attention(attn) as maps:
            attn(x, key_mask=key_mask, causal=True)
        attn(x)
    (weights,) = maps[""]
    assert weights.shape == (B, H, L, L)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, L))
    assert (weights.triu(1) == 0).all(), "a query attended to a later key"
    assert (weights[2, :, :, 3:] == 0).all(), "a query attended to a padding key"
    # brute force: the equations, head by head
    q, k, _ = attn.in_proj(x).split(D, dim=2)
    Dh = D // H
    for h in range(H):
        head = slice(h * Dh, (h + 1) * Dh)
        scores = q[..., head] @ k[..., head].transpose(1, 2) / Dh ** 0.5  # (B, L, L)
        allowed = torch.ones(L, L, dtype=torch.bool).tril() & key_mask[:, None, :]
        expected = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        assert_close(weights[:, h], expected, f"weights of head {h}")
    assert attn.recorded is None
