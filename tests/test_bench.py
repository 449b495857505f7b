import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from seqarena.bench.peers import PEERS, Peer, Shape, TorchGRU, TorchLSTM
from seqarena.bench.points import (Workload, check_paths, measure_decode, measure_throughput,
                                   tensor_bytes)
from seqarena.bench.summary import crossovers, csv_text, thread_scaling
from seqarena.bench.sweep import Entry, Sweep, SweepConfig
from seqarena.errors import UserError
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
    w = Workload(module)
    x = torch.randn(B, L, D)
    if mode == "train":
        return w.flops(lambda: w.forward(x).square().mean().backward(), B, L, "train")
    return w.flops(lambda: w.forward(x), B, L, mode)


# --- FLOPs against hand-derived formulas ----------------------------------------------------------

def test_linear_flops_are_two_per_multiply_add_and_backward_counts_only_what_runs():
    B, L, D_in, D_out = 3, 5, 4, 6
    layer = Wrapped(nn.Linear(D_in, D_out))
    assert workload_flops(layer, "forward", B, L, D_in) == 2 * B * L * D_in * D_out
    # the input is data, so backward computes the weight gradient (one matmul) but no input gradient
    assert workload_flops(layer, "train", B, L, D_in) == 2 * (2 * B * L * D_in * D_out)


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_transformer_layer_flops_match_the_formula_on_both_attention_paths(impl):
    # per layer: q, k, v and out projections 8 B L D^2, feed-forward 4 B L D F,
    # q k^T and att v 4 B L^2 D
    B, L, D, F = 2, 12, 16, 48
    model = build_model("transformer", d_model=D, layers=1, heads=2, d_ff=F, positions="none",
                        impl=impl)
    expected = 8 * B * L * D * D + 4 * B * L * D * F + 4 * B * L * L * D
    assert workload_flops(model, "forward", B, L, D) == pytest.approx(expected)


def test_raw_lstm_flops_match_the_formula_though_the_counter_sees_none():
    # 4 gates, each a matmul of the input (D) and of the state (H): 2 * 4 * H * (D + H) per token
    B, L, D = 2, 7, 8
    lstm = TorchLSTM(Shape(d_model=D, layers=1, heads=1, d_ff=4 * D, causal=True,
                           norm_first=True, activation="gelu"))
    forward = 2 * 4 * D * (D + D) * B * L
    assert workload_flops(lstm, "forward", B, L, D) == forward
    assert workload_flops(lstm, "train", B, L, D) == 3 * forward  # backward = 2 x forward


def test_raw_gru_flops_are_not_double_counted_where_the_counter_sees_its_matmuls():
    B, L, D = 2, 7, 8
    gru = TorchGRU(Shape(d_model=D, layers=2, heads=1, d_ff=4 * D, causal=True,
                         norm_first=True, activation="gelu"))
    assert workload_flops(gru, "forward", B, L, D) == 2 * (2 * 3 * D * (D + D) * B * L)


def test_work_nobody_counts_is_reported_as_not_counted_rather_than_zero():
    assert workload_flops(Wrapped(nn.Tanh()), "forward", 2, 4, 3) is None


# --- decoding -------------------------------------------------------------------------------------

def test_a_kv_cache_grows_with_position_and_a_recurrent_state_does_not():
    B, D = 2, 16
    sizes = {}
    for name in ("transformer", "lstm"):
        w = Workload(build_model(name, d_model=D, layers=1))
        sizes[name] = [measure_decode(w, p, B, D, CPU, torch.float32, 1, window=2)
                       .extra["state_bytes"] for p in (4, 40)]
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
    refusal = check_paths(Workload(DisagreeingStep(nn.Linear(8, 8))), None, 8, CPU, torch.float32)
    assert refusal and "step-by-step" in refusal


def test_a_fast_path_that_disagrees_with_its_reference_is_refused():
    fast, reference = Wrapped(nn.Linear(8, 8)), Wrapped(nn.Linear(8, 8))
    reference.forward = lambda x, mask=None: -reference.inner(x)
    refusal = check_paths(Workload(fast), Workload(reference), 8, CPU, torch.float32)
    assert refusal and "reference" in refusal


def test_our_models_pass_their_checks():
    for name in ("lstm", "mingru", "transformer"):
        model = build_model(name, d_model=8, layers=1)
        ref_impl = {"lstm": "scratch", "mingru": "sequential", "transformer": "manual"}[name]
        reference = build_model(name, d_model=8, layers=1, impl=ref_impl)
        assert check_paths(Workload(model), Workload(reference), 8, CPU, torch.float32) is None


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
    assert "step-by-step" in report.results[0].extra["error"]
    assert any("not timed" in note for note in report.notes)


def test_decoding_a_model_without_step_is_recorded_as_unsupported():
    class NoStep(Wrapped):
        def step(self, state, x_t):
            raise StepNotSupported("no cache")

    report = run([entry("nostep", lambda d: NoStep(nn.Linear(d, d)))], modes=("decode",))
    assert {r.status for r in report.results} == {"unsupported"}


def test_every_registered_model_runs_through_a_tiny_sweep():
    report = run(None, models=("rnn", "lstm", "gru", "mingru", "minlstm", "transformer",
                               "transformer-ed", "rnn-ed"), seq_lens=(8,))
    bad = [(r.model, r.mode, r.status, r.extra) for r in report.results
           if r.status not in ("ok", "unsupported")]
    assert not bad
    ok = [r for r in report.results if r.status == "ok"]
    assert all(r.flops and r.flops > 0 and r.mfu > 0 for r in ok)
    peak = report.peak_flops["cpu/float32/1t"]
    for r in ok:
        assert r.mfu == pytest.approx(r.flops / r.latency_s / peak)


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

def result(model, mode, seq_len, tokens_per_s, threads=1, impl="seqarena", iqr_s=0.0):
    return BenchResult(model, impl, mode, seq_len, 4, 8, 1, threads, "cpu", "float32",
                       tokens_per_s, 4 * seq_len / tokens_per_s, None, None, None,
                       extra={"iqr_s": iqr_s})


def test_crossover_names_the_shortest_length_where_one_overtakes_the_other():
    results = [result("transformer", "train", 64, 300.0), result("mingru", "train", 64, 100.0),
               result("transformer", "train", 256, 150.0), result("mingru", "train", 256, 200.0),
               result("transformer", "train", 1024, 50.0), result("mingru", "train", 1024, 250.0),
               result("lstm", "decode", 1, 9.0), result("transformer", "decode", 1, 5.0),
               result("lstm", "decode", 64, 9.0), result("transformer", "decode", 64, 4.0)]
    lines = crossovers(results)
    assert lines[0].startswith("train: mingru overtakes transformer at L=256")
    assert "spread" not in lines[0]
    assert lines[1].startswith("decode: lstm faster than transformer at every length")
    assert len(lines) == 2


def test_a_lead_that_changes_back_is_stated_on_the_same_line():
    results = [result("lstm", "train", L, tps) for L, tps in ((16, 30.0), (64, 39.0), (256, 50.0))]
    results += [result("transformer", "train", L, tps)
                for L, tps in ((16, 28.0), (64, 56.0), (256, 43.0))]
    assert crossovers(results) == ["train: transformer overtakes lstm at L=64 (1.44x; lstm faster "
                                   "up to L=16); lstm ahead again from L=256"]


def test_a_crossover_inside_the_timing_spread_is_flagged_as_possible_noise():
    results = [result("lstm", "train", 64, 100.0), result("gru", "train", 64, 90.0),
               result("lstm", "train", 256, 100.0, iqr_s=2.0),
               result("gru", "train", 256, 101.0, iqr_s=2.0)]
    assert crossovers(results) == ["train: gru overtakes lstm at L=256 (1.01x; lstm faster up "
                                   "to L=64; within the timing spread)"]


def test_thread_scaling_compares_all_cores_with_one_thread():
    rows = thread_scaling([result("lstm", "train", 64, 100.0, threads=1),
                           result("lstm", "train", 64, 150.0, threads=2)])
    assert rows[0]["speedup"] == pytest.approx(1.5) and rows[0]["threads_to"] == 2


def test_csv_has_a_column_for_every_field_and_extra_key():
    r = result("lstm", "decode", 4, 10.0)
    r.extra = {"position": 4, "state_bytes": 128}
    header, row = csv_text([r]).splitlines()
    assert header.split(",")[-2:] == ["position", "state_bytes"]
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
