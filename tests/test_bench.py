import copy
import statistics
import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from seqarena.bench.peers import PEERS, Peer, Shape, TorchGRU, TorchLSTM
from seqarena.bench.points import (Workload, check_paths, make_input, measure_decode,
                                   measure_throughput, prepare_throughput, tensor_bytes,
                                   train_step)
from seqarena.bench.summary import (baseline_ratios, crossovers, csv_text, median_interval,
                                    peer_ratios, speed_ratio, thread_scaling)
from seqarena.bench import sweep
from seqarena.bench.sweep import Entry, Sweep, SweepConfig
from seqarena.bench.timer import Timing
from seqarena.errors import UserError
from seqarena.flops import count_bytes, count_flops
from seqarena.models import Backbone, StepNotSupported, build_model
from seqarena.results import BenchResult

# B batch, L length, D model width, H hidden width, F feed-forward width

CPU = torch.device("cpu")
TINY = dict(seq_lens=(8, 16), batch_sizes=(2,), d_models=(8,), layers=(1,), threads=(1,),
            devices=("cpu",), min_run_time_s=0.001, peak_min_run_time_s=0.001, peak_sizes=(64,),
            decode_window=2, time_budget_s=30.0)


class Wrapped(Backbone):
    """A torch module in the Backbone contract; step() replays the forward over the prefix."""

    family = "test"
    causal = True

    def __init__(self, inner: nn.Module):
        super().__init__(SimpleNamespace(d_model=getattr(inner, "in_features", 0)))
        self.inner = inner

    def forward(self, x, mask=None):
        return self.inner(x)

    def init_state(self, batch_size):
        return []

    def step(self, state, x_t):
        state = state + [x_t]
        return self.forward(torch.stack(state, dim=1))[:, -1], state


def workload_flops(module, mode, B, L, D):
    """The bench's FLOPs for one call of `mode` on a (B, L, D) input, as a sweep counts them."""
    return Workload(module).flops(torch.randn(B, L, D), mode)


# --- FLOPs against hand-derived formulas: one convention (seqarena.flops) ------------------------

def test_linear_flops_are_two_per_multiply_add_and_training_is_three_forwards():
    B, L, D_in, D_out = 3, 5, 4, 6
    layer = Wrapped(nn.Linear(D_in, D_out))
    assert workload_flops(layer, "forward", B, L, D_in) == 2 * B * L * D_in * D_out
    assert workload_flops(layer, "train", B, L, D_in) == 3 * (2 * B * L * D_in * D_out)


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_transformer_layer_flops_match_the_formula_on_both_attention_paths(impl):
    # per layer: q, k, v and out projections 8 B L D^2, feed-forward 4 B L D F,
    # q k^T and att v 4 B L^2 D (non-causal: the whole square on both paths)
    B, L, D, F = 2, 12, 16, 48
    model = build_model("transformer", d_model=D, layers=1, heads=2, d_ff=F, positions="none",
                        impl=impl, causal=False)
    expected = 8 * B * L * D * D + 4 * B * L * D * F + 4 * B * L * L * D
    assert workload_flops(model, "forward", B, L, D) == pytest.approx(expected)
    assert workload_flops(model, "train", B, L, D) == pytest.approx(3 * expected)


def test_causal_attention_through_the_fused_kernel_counts_half_the_square():
    B, L, D, F = 2, 12, 16, 48
    model = build_model("transformer", d_model=D, layers=1, heads=2, d_ff=F, positions="none")
    expected = 8 * B * L * D * D + 4 * B * L * D * F + 4 * B * L * L * D / 2
    assert workload_flops(model, "forward", B, L, D) == pytest.approx(expected)


def test_raw_lstm_flops_match_the_formula_though_the_counter_sees_none():
    # 4 gates, each a matmul of the input (D) and of the state (H): 2 * 4 * H * (D + H) per token
    B, L, D = 2, 7, 8
    lstm = TorchLSTM(Shape(d_model=D, layers=1, heads=1, d_ff=4 * D, causal=True,
                           norm_first=True, activation="gelu"))
    forward = 2 * 4 * D * (D + D) * B * L
    assert workload_flops(lstm, "forward", B, L, D) == forward
    assert workload_flops(lstm, "train", B, L, D) == 3 * forward


@pytest.mark.parametrize("peer, ours", [(TorchGRU, "gru"), (TorchLSTM, "lstm")])
def test_every_rnn_trains_at_three_times_its_forward_whatever_the_counter_sees(peer, ours):
    # the counter sees GRU's matmuls on CPU but not LSTM's: both must still come out at 3.00x
    B, L, D = 2, 7, 8
    shape = Shape(d_model=D, layers=2, heads=1, d_ff=4 * D, causal=True, norm_first=True,
                  activation="gelu")
    for module in (peer(shape), build_model(ours, d_model=D, layers=2)):
        forward = workload_flops(module, "forward", B, L, D)
        assert forward == 2 * (2 * (3 if ours == "gru" else 4) * D * (D + D) * B * L)
        assert workload_flops(module, "train", B, L, D) == 3 * forward


def substitute(a, b, upper, unit):
    """Solve a x = b by substitution in plain Python; returns x and the multiply-adds it did."""
    n, k = len(b), len(b[0])
    x, madds = [[0.0] * k for _ in range(n)], 0
    for i in (range(n - 1, -1, -1) if upper else range(n)):
        others = range(i + 1, n) if upper else range(i)
        for c in range(k):
            acc = b[i][c]
            for j in others:
                acc -= a[i][j] * x[j][c]
                madds += 1
            x[i][c] = acc if unit else acc / a[i][i]
    return x, madds


@pytest.mark.parametrize("upper, unit, left", [(False, True, True), (True, False, True),
                                               (False, False, False)])
def test_a_triangular_solve_counts_two_flops_per_multiply_add_of_its_substitution(upper, unit,
                                                                                   left):
    # a batch of 3 triangles of 6 x 6 against 4 right-hand sides each, as a loop would do them
    torch.manual_seed(0)
    a = torch.randn(3, 6, 6, dtype=torch.float64) + 6 * torch.eye(6, dtype=torch.float64)
    a = a.triu() if upper else a.tril()
    # A X = B with B (6, 4), or X A = B with B (4, 6), which is A^T X^T = B^T
    rhs = torch.randn(3, 6, 4, dtype=torch.float64)
    rhs = rhs if left else rhs.mT
    madds, solved = 0, []
    for ai, bi in zip(a, rhs):
        x, m = substitute((ai if left else ai.T).tolist(), (bi if left else bi.T).tolist(),
                          upper == left, unit)
        madds += m
        x = torch.tensor(x, dtype=torch.float64)
        solved.append(x if left else x.T)
    flops = count_flops(lambda: torch.linalg.solve_triangular(a, rhs, upper=upper, left=left,
                                                              unitriangular=unit))
    assert flops == 2 * madds  # 3 triangles x 4 right-hand sides x 6 * 5 / 2 multiply-adds
    out = torch.linalg.solve_triangular(a, rhs, upper=upper, left=left, unitriangular=unit)
    torch.testing.assert_close(out, torch.stack(solved))


def test_work_nobody_counts_is_reported_as_not_counted_rather_than_zero():
    assert workload_flops(Wrapped(nn.Tanh()), "forward", 2, 4, 3) is None


def test_bytes_moved_count_what_each_op_reads_and_writes():
    x = torch.randn(4, 5, 3)
    # x * 2: reads and writes 60 floats; + 1: the same again; the view costs nothing
    assert count_bytes(lambda: (x * 2 + 1).view(-1)) == 4 * 4 * 60


# --- decoding -------------------------------------------------------------------------------------

def test_a_kv_cache_grows_with_position_and_a_recurrent_state_does_not():
    B, D = 2, 16
    sizes = {}
    for name in ("transformer", "lstm"):
        w = Workload(build_model(name, d_model=D, layers=1))
        sizes[name] = [measure_decode(w, p, B, D, CPU, torch.float32, 1, window=2)
                       .state_bytes for p in (4, 40)]
    assert sizes["transformer"][1] > sizes["transformer"][0] > 0
    assert sizes["lstm"][0] == sizes["lstm"][1] == 2 * (1 * B * D) * 4  # h and c, float32


class Hog(Wrapped):
    """Holds `mb` megabytes of temporaries during its forward, in 4 MB blocks."""

    def __init__(self, mb):
        super().__init__(nn.Linear(8, 8))
        self.mb = mb

    def forward(self, x, mask=None):
        blocks = [torch.ones(1 << 20) for _ in range(self.mb // 4)]  # 4 MB of float32 each
        return self.inner(x) + sum(b[0] for b in blocks)


def test_cpu_peak_memory_of_a_step_does_not_depend_on_what_ran_before():
    x = torch.randn(2, 8, 8)
    measure_throughput(Workload(Hog(128)), "prefill", x, 1, 0.001)  # leaves freed blocks behind
    peak = measure_throughput(Workload(Hog(64)), "prefill", x, 1, 0.001).peak_mem_bytes
    assert peak >= 56 * 2 ** 20


def test_tensor_bytes_counts_each_storage_once():
    t = torch.zeros(10, 4)
    assert tensor_bytes({"a": t, "b": [t[:5], (t, torch.zeros(3))]}) == 160 + 12


# --- refusing to time a wrong path ----------------------------------------------------------------

class DisagreeingStep(Wrapped):
    def step(self, state, x_t):
        y, state = super().step(state, x_t)
        return y + 1.0, state  # decoding no longer matches the forward


def test_a_backbone_whose_step_disagrees_with_its_forward_is_refused():
    refusal = check_paths(Workload(DisagreeingStep(nn.Linear(8, 8))), CPU, torch.float32)
    assert refusal and "step-by-step" in refusal


class WithReference(Wrapped):
    """A fast path whose reference() is `twin` with the same weights."""

    def __init__(self, inner, twin=None):
        super().__init__(inner)
        self.twin = twin

    def reference(self):
        twin = self.twin(copy.deepcopy(self.inner))
        return twin


def test_a_fast_path_that_disagrees_with_its_reference_is_refused():
    class Negated(Wrapped):
        def forward(self, x, mask=None):
            return -self.inner(x)

    refusal = check_paths(Workload(WithReference(nn.Linear(8, 8), Negated)), CPU, torch.float32)
    assert refusal and "output differs from the reference" in refusal


class WrongBackward(torch.autograd.Function):
    """The identity forward, with a gradient twice too large: only a backward check sees it."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


def test_a_fast_path_whose_gradients_disagree_with_its_reference_is_refused_before_training():
    class BadGradient(WithReference):
        def forward(self, x, mask=None):
            return WrongBackward.apply(self.inner(x))

    fast = Workload(BadGradient(nn.Linear(8, 8), Wrapped))
    refusal = check_paths(fast, CPU, torch.float32)
    assert refusal and "gradient" in refusal and "reference" in refusal
    assert check_paths(fast, CPU, torch.float32, backward=False) is None  # outputs agree
    report = run([Entry("bad", "test", lambda d, k: BadGradient(nn.Linear(d, d), Wrapped))],
                 modes=("train",))
    assert {r.status for r in report.results} == {"error"}


def test_our_models_pass_their_checks_gradients_included():
    for name in ("lstm", "gru", "mingru", "minlstm", "transformer", "rnn-ed", "transformer-ed"):
        model = build_model(name, d_model=8, layers=1)
        assert check_paths(Workload(model), CPU, torch.float32) is None, name


# --- a sweep records failures and goes on ---------------------------------------------------------

class RaisesOOM(Wrapped):
    def __init__(self, d_model, error):
        super().__init__(nn.Linear(d_model, d_model))
        self.error = error

    def forward(self, x, mask=None):
        if x.shape[1] > 8:  # the correctness check (L = 8) passes; the sweep's points do not
            raise self.error
        return self.inner(x)


class Slow(Wrapped):
    def forward(self, x, mask=None):
        if x.shape[1] > 8:
            time.sleep(30.0)
        return self.inner(x)


def entry(name, make):
    return Entry(name, "test", lambda d_model, layers: make(d_model))


def run(entries, **overrides):
    config = SweepConfig(**{"models": ("lstm",), **TINY, **overrides})
    return Sweep(config, entries=entries).run()


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory"),
                                   MemoryError(),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory")])
def test_out_of_memory_is_recorded_and_the_sweep_goes_on(error):
    report = run([entry("oom", lambda d: RaisesOOM(d, error)),
                  entry("ok", lambda d: Wrapped(nn.Linear(d, d)))],
                 seq_lens=(16, 32), modes=("train", "prefill"))
    statuses = {(r.model, r.mode, r.seq_len): r.status for r in report.results}
    assert statuses[("oom", "train", 16)] == statuses[("oom", "prefill", 16)] == "oom"
    assert statuses[("oom", "train", 32)] == "oom"  # not run: it could only need more
    assert {s for (m, _, _), s in statuses.items() if m == "ok"} == {"ok"}


def test_a_point_past_its_time_budget_is_recorded_as_a_timeout_and_the_sweep_goes_on():
    report = run([entry("slow", lambda d: Slow(nn.Linear(d, d))),
                  entry("ok", lambda d: Wrapped(nn.Linear(d, d)))],
                 seq_lens=(16, 32), modes=("forward",), time_budget_s=2.0)
    statuses = {(r.model, r.seq_len): r.status for r in report.results}
    assert statuses == {("slow", 16): "timeout", ("slow", 32): "timeout",
                        ("ok", 16): "ok", ("ok", 32): "ok"}


def test_a_refused_backbone_is_recorded_as_an_error_with_the_reason():
    report = run([entry("wrong", lambda d: DisagreeingStep(nn.Linear(d, d)))], modes=("train",))
    assert {r.status for r in report.results} == {"error"}
    assert "step-by-step" in report.results[0].error
    assert any("not timed" in note for note in report.notes)


def test_decoding_a_model_without_step_is_recorded_as_unsupported():
    class NoStep(Wrapped):
        def step(self, state, x_t):
            raise StepNotSupported("no cache")

    report = run([entry("nostep", lambda d: NoStep(nn.Linear(d, d)))], modes=("decode",))
    assert {r.status for r in report.results} == {"unsupported"}


def test_every_registered_model_runs_through_a_tiny_sweep():
    from seqarena.models import MODELS

    built_in = tuple(n for n in MODELS if MODELS.get(n).build.__module__.startswith("seqarena.")
                     and not n.startswith("keras"))
    report = run(None, models=built_in, seq_lens=(8,))
    bad = [(r.model, r.mode, r.status, r.error) for r in report.results
           if r.status not in ("ok", "unsupported")]
    assert not bad
    ok = [r for r in report.results if r.status == "ok"]
    assert all(r.flops and r.flops > 0 and r.mfu > 0 for r in ok)
    peak = report.peak_flops["cpu/float32/1t"]
    bandwidth = report.peak_bandwidth["cpu/float32/1t"]
    assert peak > 0 and bandwidth > 0
    for r in ok:
        assert len(r.round_s) == 3 and r.latency_s == pytest.approx(statistics.median(r.round_s))


def test_the_matmul_peak_counts_two_n_cubed_flops_per_multiply(monkeypatch):
    """At a fixed time per call, each path's peak is the multiply's FLOPs, as torch's own counter
    counts an n x n by n x n product, over that time."""
    from torch.utils.flop_counter import FlopCounterMode

    from seqarena.bench import peak as peak_module

    monkeypatch.setattr(peak_module, "time_call", lambda fn, *a, **k: Timing(1e-3, 0.0, 3))
    n = 48
    found = peak_module.matmul_peaks(torch.device("cpu"), torch.float32, 1, sizes=(n,))
    with FlopCounterMode(display=False) as counter:
        torch.randn(n, n) @ torch.randn(n, n)
    assert counter.get_total_flops() == 2 * n ** 3
    assert found and all(v == pytest.approx(2 * n ** 3 / 1e-3) for v in found.values())


def test_contenders_are_timed_in_interleaved_rounds_the_order_flipped_each_round(monkeypatch):
    log = []
    real = sweep.prepare_throughput

    def logged(workload, *args):
        point = real(workload, *args)
        name = workload.module.name
        point.time_round = lambda seconds: (log.append(name), Timing(1e-3, 0.0, 1))[1]
        return point

    class Named(Wrapped):
        def __init__(self, d_model, name):
            super().__init__(nn.Linear(d_model, d_model))
            self.name = name

    monkeypatch.setattr(sweep, "prepare_throughput", logged)
    report = run([entry(n, lambda d, n=n: Named(d, n)) for n in "ab"], seq_lens=(16,),
                 modes=("forward",), rounds=4)
    assert log == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [r.round_s for r in report.results] == [[1e-3] * 4] * 2


def test_peak_memory_is_measured_on_a_real_step_for_every_contender_even_with_cached_counts():
    x = torch.randn(2, 16, 8)
    workload, counts = Workload(Hog(64)), {}
    first = prepare_throughput(workload, "prefill", x, 1, counts)
    again = prepare_throughput(workload, "prefill", x, 1, counts)  # counts come from the cache
    assert first.peak_mem_bytes >= 56 * 2 ** 20 and again.peak_mem_bytes >= 56 * 2 ** 20


# --- peers ----------------------------------------------------------------------------------------

def test_unknown_peer_names_the_known_ones():
    with pytest.raises(UserError, match="torch-lstm"):
        SweepConfig(models=("lstm",), peers=("torch-lsmt",), **{k: v for k, v in TINY.items()})


def test_a_peer_whose_package_is_missing_is_skipped_with_a_note():
    missing = Peer("ghost", "lstm", "ghost-rnn", "no_such_package_for_seqarena", TorchLSTM)
    report = run([Entry("lstm", "ghost-rnn", lambda d, k: missing.build(Shape.like_ours(d, k)))])
    assert report.results == []
    assert any("no_such_package_for_seqarena" in n and "pip install" in n for n in report.notes)


@pytest.mark.parametrize("name", PEERS.names())
def test_every_peer_runs_forward_at_our_width(name):
    module = PEERS.get(name).build(Shape.like_ours(16, 1))
    assert module(torch.randn(2, 8, 16)).shape == (2, 8, 16)


# --- summaries ------------------------------------------------------------------------------------

def result(model, mode, seq_len, tokens_per_s, threads=1, impl="seqarena", iqr_s=0.0,
           round_s=()):
    return BenchResult(model, impl, mode, seq_len, 4, 8, 1, threads, "cpu", "float32",
                       tokens_per_s, 4 * seq_len / tokens_per_s, None, None, None,
                       iqr_s=iqr_s, round_s=list(round_s))


def texts(results):
    return [c["text"] for c in crossovers(results)]


def test_crossover_names_the_shortest_length_where_one_overtakes_the_other():
    results = [result("transformer", "train", 64, 300.0), result("mingru", "train", 64, 100.0),
               result("transformer", "train", 256, 150.0), result("mingru", "train", 256, 200.0),
               result("transformer", "train", 1024, 50.0), result("mingru", "train", 1024, 250.0),
               result("lstm", "decode", 1, 9.0), result("transformer", "decode", 1, 5.0),
               result("lstm", "decode", 64, 9.0), result("transformer", "decode", 64, 4.0)]
    lines = texts(results)
    assert lines[0].startswith("train: mingru overtakes transformer at L=256")
    assert "spread" not in lines[0]
    assert lines[1].startswith("decode: lstm faster than transformer at every length")
    assert len(lines) == 2


def test_a_lead_that_changes_back_is_stated_on_the_same_line():
    results = [result("lstm", "train", L, tps) for L, tps in ((16, 30.0), (64, 39.0), (256, 50.0))]
    results += [result("transformer", "train", L, tps)
                for L, tps in ((16, 28.0), (64, 56.0), (256, 43.0))]
    assert texts(results) == ["train: transformer overtakes lstm at L=64 (1.44x; lstm faster "
                                   "up to L=16); lstm ahead again from L=256"]


def test_a_crossover_inside_the_timing_spread_is_flagged_as_possible_noise():
    results = [result("lstm", "train", 64, 100.0), result("gru", "train", 64, 90.0),
               result("lstm", "train", 256, 100.0, iqr_s=2.0),
               result("gru", "train", 256, 101.0, iqr_s=2.0)]
    assert texts(results) == ["train: gru overtakes lstm at L=256 (1.01x; lstm faster up "
                                   "to L=64; within the timing spread)"]


def test_a_crossover_is_a_record_with_the_median_of_per_round_ratios_and_its_interval():
    # rounds timed side by side: gru's per-round speed over lstm's is 1.25, 1.1, 0.95 at L=256
    results = [result("lstm", "train", 64, 100.0, round_s=[1.0, 1.0, 1.0]),
               result("gru", "train", 64, 50.0, round_s=[2.0, 2.0, 2.0]),
               result("lstm", "train", 256, 100.0, round_s=[1.25, 1.1, 0.95]),
               result("gru", "train", 256, 101.0, round_s=[1.0, 1.0, 1.0])]
    (record,) = crossovers(results)
    assert record["kind"] == "overtakes" and record["leader"] == "lstm" and record["at"] == 256
    assert record["ratio"] == pytest.approx(1.1)
    assert (record["low"], record["high"]) == pytest.approx((0.95, 1.25))
    assert record["within_noise"] and "within the timing spread" in record["text"]
    assert "1.10x [0.95-1.25]" in record["text"]


def test_the_interval_of_a_median_is_the_range_for_few_values_and_order_statistics_for_many():
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    values = list(range(1, 21))  # n = 20: x_(6) and x_(15) cover the median with >= 95 %
    assert median_interval(values) == (6, 15)


def test_ours_over_a_peer_is_the_median_of_per_round_ratios():
    ours = result("lstm", "train", 64, 100.0, round_s=[1.0, 2.0, 1.0])
    peer = result("lstm", "train", 64, 90.0, impl="torch.nn.LSTM", round_s=[1.1, 2.4, 0.9])
    (row,) = peer_ratios([ours, peer])
    assert row["peer"] == "torch.nn.LSTM" and row["ratio"] == pytest.approx(1.1)
    assert (row["low"], row["high"]) == pytest.approx((0.9, 1.2))
    assert speed_ratio(ours, peer)["rounds"] == 3


def test_a_baseline_flags_only_moves_outside_the_noise():
    old = [result("lstm", "train", 64, 100.0, round_s=[1.0, 1.1, 0.9]),
           result("gru", "train", 64, 100.0, round_s=[1.0, 1.1, 0.9])]
    new = [result("lstm", "train", 64, 200.0, round_s=[0.5, 0.55, 0.45]),
           result("gru", "train", 64, 105.0, round_s=[0.95, 1.05, 1.0])]
    rows = {row["model"]: row for row in baseline_ratios(new, old)}
    assert rows["lstm"]["moved"] == "faster" and rows["lstm"]["low"] > 1
    assert rows["gru"]["moved"] is None and rows["gru"]["low"] < 1 < rows["gru"]["high"]


def test_thread_scaling_compares_all_cores_with_one_thread():
    rows = thread_scaling([result("lstm", "train", 64, 100.0, threads=1),
                           result("lstm", "train", 64, 150.0, threads=2)])
    assert rows[0]["speedup"] == pytest.approx(1.5) and rows[0]["threads_to"] == 2


def test_csv_has_a_column_for_every_field():
    r = result("lstm", "decode", 4, 10.0)
    r.position, r.state_bytes = 4, 128
    header, row = csv_text([r]).splitlines()
    columns = dict(zip(header.split(","), row.split(",")))
    assert (columns["position"], columns["state_bytes"]) == ("4", "128")
    assert row.startswith("lstm,seqarena,decode,4,")


@pytest.mark.parametrize("name", ["torch-transformer", "x-transformers"])
def test_attention_peers_count_the_same_flops_as_our_transformer(name):
    B, L, D = 2, 12, 16
    shape = Shape.like_ours(D, 1, causal=False)
    ours = build_model("transformer", d_model=D, layers=1, causal=False, positions="none")
    assert workload_flops(PEERS.get(name).build(shape), "forward", B, L, D) == \
        pytest.approx(workload_flops(ours, "forward", B, L, D))


# --- OpenMP wait policy ----------------------------------------------------------------------------

@pytest.fixture
def fresh_process(monkeypatch):
    """choose_wait_policy as if torch were not loaded yet, with OMP_WAIT_POLICY unset."""
    import types

    from seqarena.bench import openmp

    monkeypatch.setenv("OMP_WAIT_POLICY", "unset-by-fixture")
    monkeypatch.delenv("OMP_WAIT_POLICY")  # restored, whatever the test sets, at teardown
    monkeypatch.setattr(openmp, "sys", types.SimpleNamespace(modules={}))
    monkeypatch.setattr(openmp.os, "cpu_count", lambda: 2)
    return openmp, monkeypatch


@pytest.mark.parametrize("load, expected", [(0.3, None), (1.9, None), (2.0, "PASSIVE"),
                                            (6.5, "PASSIVE")])
def test_openmp_waits_passively_only_when_every_core_is_busy(fresh_process, load, expected):
    openmp, monkeypatch = fresh_process
    monkeypatch.setattr(openmp, "load_average", lambda: load)
    assert openmp.choose_wait_policy() == expected


def test_a_wait_policy_the_user_set_is_kept(fresh_process):
    openmp, monkeypatch = fresh_process
    monkeypatch.setattr(openmp, "load_average", lambda: 9.0)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert openmp.choose_wait_policy() == "ACTIVE"


def test_the_reference_check_ignores_gradients_left_by_an_earlier_step():
    model = build_model("gru", d_model=8, layers=1)
    workload = Workload(model)
    train_step(workload, make_input(2, 8, 8, CPU, torch.float32, seed=0))()  # leaves .grad set
    assert check_paths(workload, CPU, torch.float32) is None
