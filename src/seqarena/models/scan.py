"""The linear recurrence h_t = a_t * h_{t-1} + b_t along the sequence, four ways.

- `scan_sequential`: the loop itself, one step per position. The reference.
- `scan_log`: Heinsen's log-space parallel scan, as in the minGRU paper's appendix B.
- `scan_tree`: Blelloch's work-efficient parallel scan, in log2(L) levels. The default.
- `scan_chunked`: the loop run on all chunks at once, then the chunks joined.

The last two share one backward: the same recurrence run right to left (`_LinearScan`).

References:
- F. A. Heinsen, "Efficient Parallelization of a Ubiquitous Sequential Computation", 2023,
  arXiv:2311.06281, and github.com/glassroom/heinsen_sequence.
- L. Feng et al., "Were RNNs All We Needed?", 2024, arXiv:2410.01201, appendix B.
- G. E. Blelloch, "Prefix Sums and Their Applications", 1990, CMU-CS-90-190 (section 1.4:
  first-order linear recurrences as a scan).
- E. Martin, C. Cundy, "Parallelizing Linear Recurrent Neural Nets Over Sequence Length",
  ICLR 2018 (the scan and its backward for RNNs).

Every scan takes a and b as (B, L, N) and an optional start state h0 (B, N) (None: zeros) and
returns all states h (B, L, N); h_{-1} = h0, so h_0 = a_0 * h0 + b_0.
"""

from __future__ import annotations

import math

import torch

# B batch, L length, N state channels, C chunk length, K number of chunks


def scan_sequential(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t, one position at a time; autograd differentiates the loop."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    states = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):  # unbind: one backward node, not L slices
        h = a_t * h + b_t
        states.append(h)
    return torch.stack(states, dim=1)  # (B, L, N)


def scan_log(log_a: torch.Tensor, log_b: torch.Tensor, log_h0: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Heinsen's scan for a_t > 0, b_t > 0, given log a and log b; returns h (not log h).

    Unrolling the loop gives h_t = A_t * (h0 + sum_{s<=t} b_s / A_s) with A_t = prod_{s<=t} a_s.
    A_t underflows to 0 after a few hundred small gates and b_s / A_s overflows, so both live in
    log space: log h_t = a*_t + log(h0 + sum_s exp(log b_s - a*_s)), a*_t = cumsum(log a). Nothing
    over- or underflows, but a*_t grows like t*|log a| and the final a*_t + logcumsumexp(...)
    cancels two large numbers: in float32 the relative error of h grows like L*|log a|*2^-24
    (about 1e-3 at L=4096, a=1e-3), and the gradient with respect to a fares far worse.
    `scan_tree` and `scan_chunked` have no such cancellation; use this one in float64.
    """
    a_star = log_a.cumsum(dim=1)  # (B, L, N)
    log_sum = (log_b - a_star).logcumsumexp(dim=1)  # log sum_{s<=t} b_s / A_s
    if log_h0 is not None:
        log_sum = torch.logaddexp(log_h0.unsqueeze(1), log_sum)  # fold h0 into the sum
    return (a_star + log_sum).exp()


def scan_tree(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None
              ) -> torch.Tensor:
    """Blelloch's work-efficient scan: log2(L) levels of a few whole-tensor ops. The default.

    Neighbouring positions combine in pairs, (a_1, b_1) after (a_0, b_0) being one step with
    a = a_1 a_0 and b = a_1 b_0 + b_1; the scan recurses on the L/2 pairs and then fills in the
    positions between them. Why it is exact where a cumulative product of gates underflows: it
    never divides by a product of gates and never takes a logarithm. Every value it forms is a
    partial sum of the loop's own terms or a product of gates; a product that underflows to 0
    multiplies a state and stands for a term below the float's resolution, as in the loop. So
    gates of 1e-3 over thousands of steps, or tiny gates mixed with gates of ~1, give the
    sequential loop's answer to rounding. Work is about 3L multiply-adds; 3 log2(L) kernel
    launches, where the chunked scan needs about 3 sqrt(L), each a wait for all threads.
    """
    return _LinearScan.apply(*_prepare(a, b, h0), _tree_forward, _tree_backward)


def scan_chunked(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """The loop over positions within a chunk runs on all K chunks at once; chunks are joined.

    Exact for the same reason as `scan_tree`: no division by and no logarithm of a product of
    gates. Chunks of C = sqrt(L) balance the two loops over a chunk (C steps each) against the
    loop over chunks (L / C steps). It does about 2L multiply-adds, fewer than `scan_tree`, but
    launches ~3 sqrt(L) kernels, which on a busy CPU each wait on a descheduled thread.
    """
    return _LinearScan.apply(*_prepare(a, b, h0), _chunked_forward, _chunked_backward)


def _prepare(a, b, h0):
    h0 = b.new_zeros(b.shape[0], b.shape[2]) if h0 is None else h0
    return a.contiguous(), b.contiguous(), h0  # the scans below take views of (L, N) blocks


class _LinearScan(torch.autograd.Function):
    """The gradient of a linear recurrence is the same recurrence run backwards in time, so
    backward is a second scan instead of autograd through L small steps:
    dLoss/db_t = grad_h_t + a_{t+1} dLoss/db_{t+1}, dLoss/dh0 = a_0 dLoss/db_0 and
    dLoss/da_t = dLoss/db_t h_{t-1}."""

    @staticmethod
    def forward(ctx, a, b, h0, forward, backward):
        h = forward(a, b, h0)
        ctx.backward_scan = backward
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        grad_b = ctx.backward_scan(a, grad_h.contiguous())
        grad_h0 = a[:, 0] * grad_b[:, 0]
        grad_a = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.empty_like(grad_b)
            torch.mul(grad_b[:, 1:], h[:, :-1], out=grad_a[:, 1:])
            torch.mul(grad_b[:, 0], h0, out=grad_a[:, 0])
        return grad_a, grad_b, grad_h0, None, None


@torch.no_grad()
def _tree_forward(a, b, h0):
    h = b.clone()
    h[:, 0].addcmul_(a[:, 0], h0)
    tree_scan_(a, h)
    return h


@torch.no_grad()
def _tree_backward(a, grad_h):
    grad_b = grad_h.clone()
    tree_scan_(a, grad_b, reverse=True)
    return grad_b


def tree_scan_(a: torch.Tensor, h: torch.Tensor, reverse: bool = False) -> None:
    """`scan_tree` in place from h0 = 0, without autograd: h holds b on entry and h on exit.

    reverse=True runs the backward recurrence instead: h_t += a_{t+1} h_{t+1}, right to left,
    turning dLoss/dh into dLoss/db. For fused kernels that write their own backward.
    """
    _tree_(a[:, 1:], h, reverse)


def _tree_(c, h, reverse):
    """In place, h_{t+1} += c_t h_t left to right, or h_t += c_t h_{t+1} right to left.

    c (B, L-1, N) links position t to t+1. Pairs (2i, 2i+1) fold one into the other, the scan
    recurses on the positions holding the pair sums (linked by products of two c), then the
    others take the one finished value they still lack.
    """
    L = h.shape[1]
    if L < 2:
        return
    P = L // 2  # pairs
    even, odd = h[:, 0:2 * P:2], h[:, 1:2 * P:2]  # (B, P, N) each, interleaved views
    if reverse:
        even.addcmul_(c[:, 0:2 * P:2], odd)
        _tree_(c[:, 0:L - 2:2] * c[:, 1:L - 1:2], h[:, 0::2], reverse)  # (B, ceil(L/2)-1, N)
        h[:, 1:L - 1:2].addcmul_(c[:, 1:L - 1:2], h[:, 2:L:2])
    else:
        odd.addcmul_(c[:, 0:2 * P:2], even)
        _tree_(c[:, 1:2 * P - 2:2] * c[:, 2:2 * P - 1:2], odd, reverse)  # (B, P-1, N)
        h[:, 2:L:2].addcmul_(c[:, 1:L - 1:2], h[:, 1:L - 1:2])


def _chunk_length(seq_len: int) -> int:
    return max(1, math.isqrt(seq_len))  # sqrt(L): C steps in a chunk, L / C chunks


@torch.no_grad()
def _chunked_forward(a, b, h0):
    B, L, N = b.shape
    C = _chunk_length(L)
    K = L // C
    h = torch.empty_like(b)
    a4, b4, h4 = (t[:, :K * C].view(B, K, C, N) for t in (a, b, h))  # (B, K, C, N)
    # 1. Each chunk's last state, started from zero, and the decay it applies to its start.
    end = b4[:, :, 0].clone()  # (B, K, N)
    for t in range(1, C):
        torch.addcmul(b4[:, :, t], a4[:, :, t], end, out=end)
    decay = a4.prod(dim=2)  # (B, K, N)
    # 2. The true start of each chunk, one chunk after another: only K small steps.
    start = torch.empty_like(end)  # (B, K, N)
    start[:, 0] = h0
    for k in range(1, K):
        torch.addcmul(end[:, k - 1], decay[:, k - 1], start[:, k - 1], out=start[:, k])
    # 3. Every chunk again, now from its true start, writing the states.
    prev = start
    for t in range(C):
        torch.addcmul(b4[:, :, t], a4[:, :, t], prev, out=h4[:, :, t])
        prev = h4[:, :, t]
    # The last L - K*C positions, fewer than C, one by one.
    prev = h[:, K * C - 1]
    for t in range(K * C, L):
        torch.addcmul(b[:, t], a[:, t], prev, out=h[:, t])
        prev = h[:, t]
    return h


@torch.no_grad()
def _chunked_backward(a, g):
    """gb_t = g_t + a_{t+1} gb_{t+1} from the right, as `_chunked_forward` from the left.

    `carry` is what flows into a position from its right neighbour, a_{t+1} gb_{t+1}.
    """
    B, L, N = g.shape
    C = _chunk_length(L)
    K = L // C
    gb = torch.empty_like(g)
    carry = g.new_zeros(B, N)
    for t in range(L - 1, K * C - 1, -1):  # the tail first, right to left
        torch.add(g[:, t], carry, out=gb[:, t])
        carry = a[:, t] * gb[:, t]
    a4, g4, gb4 = (t[:, :K * C].view(B, K, C, N) for t in (a, g, gb))  # (B, K, C, N)
    # 1. Each chunk's gb at its first position with no carry from its right, times a there:
    # the carry the chunk hands to its left neighbour from its own inputs.
    first = g4[:, :, C - 1].clone()  # (B, K, N)
    for t in range(C - 2, -1, -1):
        torch.addcmul(g4[:, :, t], a4[:, :, t + 1], first, out=first)
    own = a4[:, :, 0] * first  # (B, K, N)
    decay = a4.prod(dim=2)  # (B, K, N)
    # 2. The carry into each chunk's last position, chunk by chunk from the right.
    into = torch.empty_like(own)  # (B, K, N)
    into[:, K - 1] = carry
    for k in range(K - 1, 0, -1):
        torch.addcmul(own[:, k], decay[:, k], into[:, k], out=into[:, k - 1])
    # 3. Every chunk again from its true carry.
    torch.add(g4[:, :, C - 1], into, out=gb4[:, :, C - 1])
    for t in range(C - 2, -1, -1):
        torch.addcmul(g4[:, :, t], a4[:, :, t + 1], gb4[:, :, t + 1], out=gb4[:, :, t])
    return gb
