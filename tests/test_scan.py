"""The scans of h_t = a_t h_{t-1} + b_t against the loop: numpy in float64, and torch's autograd.

Tolerances: float64 scans must match to 1e-12; float32 scans to 1e-5 of the largest value of
the float64 reference (max |error| <= 1e-5 * max |reference|), outputs and gradients alike.
"""

import numpy as np
import pytest
import torch

from seqarena.models.scan import scan_chunked, scan_log, scan_sequential, scan_tree, tree_scan_

FAST = {"tree": scan_tree, "chunked": scan_chunked}


def numpy_loop(a, b, h0=None):
    """The recurrence in float64 numpy, one position at a time."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    h = np.zeros_like(b)
    prev = np.zeros_like(b[:, 0]) if h0 is None else np.asarray(h0, np.float64)
    for t in range(b.shape[1]):
        prev = a[:, t] * prev + b[:, t]
        h[:, t] = prev
    return h


def close32(actual, reference, tol=1e-5):
    """max |actual - reference| <= tol * max |reference|, reference in float64."""
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    error = np.abs(actual - reference).max() / np.abs(reference).max()
    assert error <= tol, f"relative error {error:.3g} > {tol:g}"


def gates(kind, shape, generator):
    """Gates in (0, 1]: 'uniform', 'small' (~1e-3), or 'mixed' (1e-6 or ~1, at random)."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    if kind == "small":
        return 1e-3 * (1 + u)
    if kind == "mixed":
        tiny = torch.rand(shape, generator=generator, dtype=torch.float64) < 0.5
        return torch.where(tiny, torch.full_like(u, 1e-6), 1 - 1e-3 * u)
    return u


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("L", [1, 2, 3, 4, 5, 17, 64, 100])
def test_fast_scans_match_the_loop_with_a_start_state_in_float64(name, L):
    g = torch.Generator().manual_seed(L)
    a = torch.rand(2, L, 3, generator=g, dtype=torch.float64)
    b = torch.randn(2, L, 3, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, 3, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(FAST[name](a, b, h0).numpy(), numpy_loop(a, b, h0), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(FAST[name](a, b).numpy(), numpy_loop(a, b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("L", [1, 2, 7, 17])
def test_fast_scan_gradients_pass_gradcheck(name, L):
    g = torch.Generator().manual_seed(L)
    a = torch.rand(2, L, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, L, 3, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(FAST[name], (a, b, h0))


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("kind", ["small", "mixed", "uniform"])
def test_fast_scans_stay_exact_in_float32_where_the_cumulative_product_underflows(name, kind):
    g = torch.Generator().manual_seed(0)
    a64 = gates(kind, (2, 4096, 3), g).requires_grad_()
    b64 = torch.rand(2, 4096, 3, generator=g, dtype=torch.float64).requires_grad_()
    assert (a64.float().cumprod(dim=1)[:, -1] == 0).all()  # the naive product is gone
    reference = scan_sequential(a64, b64)
    weight = torch.randn(reference.shape, generator=g, dtype=torch.float64)
    (reference * weight).sum().backward()

    a32, b32 = a64.detach().float().requires_grad_(), b64.detach().float().requires_grad_()
    h32 = FAST[name](a32, b32)
    (h32 * weight.float()).sum().backward()
    close32(h32.detach(), numpy_loop(a64.detach(), b64.detach()))
    close32(a32.grad, a64.grad)
    close32(b32.grad, b64.grad)


def test_log_scan_matches_the_loop_in_float64_even_where_the_product_underflows():
    g = torch.Generator().manual_seed(1)
    a = gates("mixed", (2, 4096, 3), g)
    b = torch.rand(2, 4096, 3, generator=g, dtype=torch.float64)
    h0 = torch.rand(2, 3, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(scan_log(a.log(), b.log(), h0.log()).numpy(),
                               numpy_loop(a, b, h0), rtol=1e-9)


def test_log_scan_gradients_match_the_loop_in_float64():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(2, 9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.rand(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, h0: scan_log(a.log(), b.log(), h0.log()),
                                    (a, b, h0))
    weight = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    grads_log = torch.autograd.grad((scan_log(a.log(), b.log(), h0.log()) * weight).sum(),
                                    (a, b, h0))
    grads_loop = torch.autograd.grad((scan_sequential(a, b, h0) * weight).sum(), (a, b, h0))
    for got, want in zip(grads_log, grads_loop):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_log_scan_loses_float32_precision_over_a_long_span_of_small_gates_where_the_tree_does_not():
    """Why the tree scan is the default: log h = a*_t + logcumsumexp(...) cancels two numbers of
    size ~t |log a|, so float32 keeps only ~1e-3 of h at L=4096, a ~1e-3."""
    g = torch.Generator().manual_seed(3)
    a = gates("small", (1, 4096, 2), g)
    b = torch.rand(1, 4096, 2, generator=g, dtype=torch.float64)
    reference = numpy_loop(a, b)
    log_error = np.abs(scan_log(a.float().log(), b.float().log()).numpy() - reference).max()
    tree_error = np.abs(scan_tree(a.float(), b.float()).numpy() - reference).max()
    assert log_error > 1e-5 * np.abs(reference).max()
    assert tree_error < 1e-6 * np.abs(reference).max()


def test_reverse_tree_scan_is_the_loop_run_backwards():
    """grad_b_t = g_t + a_{t+1} grad_b_{t+1}: the reverse scan the fused cells call directly."""
    g = torch.Generator().manual_seed(4)
    a = torch.rand(2, 13, 3, generator=g, dtype=torch.float64)
    grad_h = torch.randn(2, 13, 3, generator=g, dtype=torch.float64)
    a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)  # a_{t+1}, 0 past the end
    expected = numpy_loop(a_next.flip(1), grad_h.flip(1))[:, ::-1]
    out = grad_h.clone()
    tree_scan_(a, out, reverse=True)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
