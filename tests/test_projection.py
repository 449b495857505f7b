"""Projection to other hardware: the fit recovers a known roofline-plus-floor machine, projects
lengths it never saw exactly, and bad devices, numbers and bench runs are refused in one line."""

import math

import pytest

from seqarena.bench.projection import (CPU_FLOOR_S, DEVICES, calibrate, device_from_args,
                                       project, project_bench, projection_error, render_text,
                                       sequential_steps, thread_projection_error)
from seqarena.errors import UserError
from seqarena.results import BenchResult

# F FLOPs, M bytes moved, S dependent steps, L length, B batch

ROOFS = {"cpu/float32/1t": (1e11, 2e10), "cpu/float32/2t": (1.9e11, 3e10)}
TRUE = {"flops": 0.4, "bytes": 0.6, "floors": 7.0}  # e_f, e_m, k of the synthetic machine


def counts(family, mode, L):
    """FLOPs and bytes of a point, shaped like the real ones: attention's F has an L^2 term, a
    scan's bytes a constant (its weights) besides the L term."""
    if mode == "decode":
        return (1e5 + 2e3 * L, 4e4 + 8e2 * L) if family == "attention" else (3e5, 2e5)
    if family == "attention":
        return 2e3 * L * L + 5e5 * L, 3e4 * L + 1e6
    return 4e5 * L, 1e4 * L + 3e6


def synthetic(model, family, mode, L, threads=1, constants=TRUE):
    """A point timed on a machine that follows the model exactly."""
    peak, bandwidth = ROOFS[f"cpu/float32/{threads}t"]
    flops, moved = counts(family, mode, L)
    steps = sequential_steps(family, mode, L, 1)
    seconds = (flops / (constants["flops"] * peak) + moved / (constants["bytes"] * bandwidth)
               + steps * constants["floors"] * CPU_FLOOR_S)
    return BenchResult(model=model, impl="seqarena", mode=mode, seq_len=L, batch=8, d_model=64,
                       layers=1, threads=threads, device="cpu", dtype="float32",
                       tokens_per_s=8 * (1 if mode == "decode" else L) / seconds,
                       latency_s=seconds, flops=flops, mfu=flops / seconds / peak,
                       peak_mem_bytes=None, family=family, bytes_moved=moved,
                       mbu=moved / seconds / bandwidth,
                       position=L if mode == "decode" else None,
                       state_bytes=(4096 * L if family == "attention" else 2048)
                       if mode == "decode" else None)


LENGTHS = (16, 32, 64, 128, 256, 1024, 4096)


def run(threads=(1,)):
    rows = []
    for t in threads:
        for L in LENGTHS:
            for mode in ("train", "prefill"):
                rows += [synthetic("transformer", "attention", mode, L, t),
                         synthetic("mingru", "scan", mode, L, t)]
        for p in (1, *LENGTHS):
            rows += [synthetic("transformer", "attention", "decode", p, t),
                     synthetic("mingru", "scan", "decode", p, t)]
    return rows


def test_calibration_recovers_the_constants_of_a_known_machine():
    calibration = calibrate(run(), ROOFS, max_len=256)
    for model in ("transformer", "mingru"):
        fit = calibration.fit(model, "train")
        assert fit.lengths == [16, 32, 64, 128, 256]
        assert fit.flops_efficiency == pytest.approx(TRUE["flops"], rel=1e-3)
        assert fit.bandwidth_efficiency == pytest.approx(TRUE["bytes"], rel=1e-3)
        assert fit.floors_per_step == pytest.approx(TRUE["floors"], rel=1e-3)
        assert fit.fit_error < 1e-3


def test_lengths_never_calibrated_on_are_projected_exactly():
    errors = projection_error(run(), ROOFS, calibrate_max_len=256, test_lens=(1024, 4096))
    assert {e.mode for e in errors} == {"train", "prefill", "decode"}
    for e in errors:
        assert e.points == 4  # two models at L = 1024 and 4096
        assert e.worst < 1e-3, e
    # decode: a time linear in the position cannot tell its three terms apart, yet the
    # projection along the positions is still exact
    assert "L<=256 -> L=1024,4096" in errors[0].what


def test_one_thread_projects_to_two_with_the_measured_roofs():
    errors = {e.mode: e for e in thread_projection_error(run(threads=(1, 2)), ROOFS, 1, 2)}
    assert errors["train"].worst < 1e-3 and errors["prefill"].worst < 1e-3
    # a recurrence's decode step has the same FLOPs, bytes and steps at every position: no
    # measurement on one machine can split its time between the roofs, so on other roofs the
    # even split the fit assumes is off, by less than the roofs moved (1.9x and 1.5x here)
    assert 0 < errors["decode"].worst < 0.5


def test_a_device_projection_is_the_fitted_terms_on_its_datasheet_roofs():
    rows = run()
    calibration = calibrate(rows, ROOFS, max_len=256, threads=1)
    h100 = device_from_args("h100")
    (p,) = [p for p in project(rows, calibration, h100)
            if (p.model, p.mode, p.seq_len) == ("mingru", "train", 4096)]
    flops, moved = counts("scan", "train", 4096)
    expected = (flops / (TRUE["flops"] * 67e12) + moved / (TRUE["bytes"] * 3350e9)
                + 12 * TRUE["floors"] * 5e-6)
    assert p.projected_s == pytest.approx(expected, rel=1e-3)
    assert p.bound == "latency"  # 12 dependent levels of 35 us dwarf 0.16 ms of FLOPs
    assert "projected to NVIDIA H100 SXM" in p.basis and "L<=256" in p.basis
    assert p.from_measured_s == pytest.approx(
        synthetic("mingru", "scan", "train", 4096).latency_s)


def test_bfloat16_halves_the_bytes_and_takes_the_tensor_core_peak():
    rows = [r for r in run() if r.mode == "train"]
    calibration = calibrate(rows, ROOFS)
    a100 = device_from_args("a100")
    fp32 = {(p.model, p.seq_len): p for p in project(rows, calibration, a100)}
    bf16 = {(p.model, p.seq_len): p for p in project(rows, calibration, a100, "bfloat16")}
    key = ("transformer", 4096)
    assert bf16[key].memory_s == pytest.approx(fp32[key].memory_s / 2)
    assert bf16[key].compute_s == pytest.approx(fp32[key].compute_s * 19.5 / 312)


def test_the_h100_is_its_dense_figure_not_the_sparse_one():
    assert DEVICES["h100"].bf16_flops == 989e12
    assert "sparsity" in DEVICES["h100"].source
    assert DEVICES["a100"].bandwidth == 2039e9 and DEVICES["h200"].bandwidth == 4800e9
    assert all(d.source for d in DEVICES.values())


def test_an_unknown_device_is_refused_in_one_line_listing_the_known():
    with pytest.raises(UserError) as error:
        device_from_args("h1000")
    message = str(error.value)
    assert "\n" not in message and "did you mean h100" in message
    assert all(name in message for name in DEVICES)


@pytest.mark.parametrize("numbers", [dict(peak_flops=0, bandwidth=1e12),
                                     dict(peak_flops=1e15, bandwidth=-3),
                                     dict(peak_flops=1e15, bandwidth=1e12, floor_s=0),
                                     dict(peak_flops=math.nan, bandwidth=1e12)])
def test_non_positive_numbers_are_refused(numbers):
    with pytest.raises(UserError, match="must be a positive number"):
        device_from_args(**numbers)


def test_the_users_own_numbers_make_a_device():
    device = device_from_args(peak_flops=1e15, bandwidth=2e12, floor_s=3e-6)
    assert (device.peak("bfloat16"), device.bandwidth, device.floor_s) == (1e15, 2e12, 3e-6)
    assert device_from_args("l4", floor_s=2e-6).floor_s == 2e-6
    with pytest.raises(UserError, match="--bandwidth"):
        device_from_args(peak_flops=1e15)


def test_dependent_steps_follow_each_family():
    assert sequential_steps("recurrent", "train", 100, 2) == 200
    assert sequential_steps("scan", "prefill", 100, 2) == 14  # ceil(log2 100) = 7 levels
    assert sequential_steps("linear-attention", "forward", 130, 1) == 3  # chunks of 64
    assert sequential_steps("some-new-family", "train", 64, 1) == 1
    assert sequential_steps("attention", "train", 4096, 3) == 3
    assert sequential_steps("recurrent", "decode", 4096, 3) == 3


def doc(rows):
    return {"results": rows, "machine": {"cpu": "test CPU", "threads": 1, "torch": "x"},
            "peak_flops": {k: v[0] for k, v in ROOFS.items()},
            "peak_bandwidth": {k: v[1] for k, v in ROOFS.items()}}


def test_a_bench_run_without_the_ledgers_modes_is_refused():
    with pytest.raises(UserError, match="no decode results.*--modes prefill,decode"):
        project_bench(doc([r for r in run() if r.mode != "decode"]), device_from_args("t4"))


def test_the_projected_report_holds_crossovers_ledger_and_its_measured_error():
    report = project_bench(doc(run()), device_from_args("h100"), prompts=[256, 1024],
                           generated=[16, 256])
    assert report.calibration.threads == 1 and report.calibration.max_len is None
    assert {r.device for r in report.ledger} == {"NVIDIA H100 SXM"}
    assert {(r.prompt, r.generated) for r in report.ledger} == {(256, 16), (256, 256),
                                                                (1024, 16), (1024, 256)}
    assert report.crossovers and report.break_even
    assert all(e.worst < 1e-3 for e in report.error)
    text = render_text(report)
    assert "projected to NVIDIA H100 SXM" in text and "break-even" in text
    assert "sparsity" in text  # the source of the figures is shown


def test_the_projection_chart_draws_projected_beside_measured():
    from seqarena.report.serving import projection_chart

    report = project_bench(doc(run()), device_from_args("l4"))
    chart = projection_chart(report.points, report.crossovers, report.error)
    assert chart.title == "Projected to NVIDIA L4"
    assert [ax.get_title() for ax in chart.fig.axes[:3]] == [
        "train, projected (error 0%)", "prefill, projected (error 0%)",
        "decode, projected (error 0%)"]
