"""The serving ledger against hand computations on recorded points shaped like `bench --quick`:
prefill at L = 64, 256, 1024 and decode at positions 1, 64, 256, 1024, batch 8."""

import pytest

from seqarena.bench.ledger import break_even, ledger, map_grid, render_text
from seqarena.errors import UserError
from seqarena.results import BenchResult

# P prompt tokens, G generated tokens, B batch

LENGTHS = (64, 256, 1024)
POSITIONS = (1, 64, 256, 1024)


def point(model, family, mode, L, seconds, state_bytes=None):
    return BenchResult(model=model, impl="seqarena", mode=mode, seq_len=L, batch=8, d_model=64,
                       layers=1, threads=2, device="cpu", dtype="float32",
                       tokens_per_s=8 * (1 if mode == "decode" else L) / seconds,
                       latency_s=seconds, flops=None, mfu=None, peak_mem_bytes=None,
                       family=family, position=L if mode == "decode" else None,
                       state_bytes=state_bytes)


# per-token decode latency of the transformer: it reads a cache of p - 1 tokens
def tf_decode(p):
    return 5e-5 + 2e-7 * p


def recorded():
    """A Transformer (cheap prefill, decode growing with the cache), an LSTM (dear sequential
    prefill, flat decode) and a minGRU that decodes slower than the Transformer everywhere."""
    rows = []
    for L in LENGTHS:
        rows += [point("transformer", "attention", "prefill", L, 2e-6 * L),
                 point("lstm", "recurrent", "prefill", L, 1e-5 * L),
                 point("mingru", "scan", "prefill", L, 3e-6 * L)]
    for p in POSITIONS:
        rows += [point("transformer", "attention", "decode", p, tf_decode(p), 4096 * p),
                 point("lstm", "recurrent", "decode", p, 1e-4, 2048),
                 point("mingru", "scan", "decode", p, 1e-3, 1024)]
    return rows


def measured_decode(model, p, _recorded=recorded()):
    """The recorded decode latency at position p, read off the line between recorded positions."""
    rows = {r.seq_len: r.latency_s for r in _recorded if r.model == model and r.mode == "decode"}
    lo = max(q for q in rows if q <= p)
    hi = min(q for q in rows if q >= p)
    if lo == hi:
        return rows[lo]
    return rows[lo] + (rows[hi] - rows[lo]) * (p - lo) / (hi - lo)


def test_a_request_costs_its_prefill_plus_every_decode_step():
    (row,) = [r for r in ledger(recorded(), [64], [192]) if r.model == "transformer"]
    by_hand = sum(measured_decode("transformer", p) for p in range(65, 257))
    assert row.prefill_s == pytest.approx(2e-6 * 64)
    assert row.decode_s == pytest.approx(by_hand, rel=1e-12)
    assert row.total_s == pytest.approx(2e-6 * 64 + by_hand, rel=1e-12)
    assert (row.prefill_basis, row.decode_basis) == ("measured", "interpolated")


def test_a_prompt_between_measured_lengths_is_interpolated_and_says_so():
    (row,) = [r for r in ledger(recorded(), [160], [1]) if r.model == "lstm"]
    assert row.prefill_basis == "interpolated"
    assert row.prefill_s == pytest.approx(1e-5 * 64 + (1e-5 * 256 - 1e-5 * 64) * 96 / 192)


def test_one_token_at_a_measured_position_is_measured():
    (row,) = [r for r in ledger(recorded(), [64], [1]) if r.model == "lstm"]
    assert row.decode_basis == "interpolated"  # position 65 was not timed
    (row,) = [r for r in ledger(recorded(), [1024], [1]) if r.model == "lstm"]
    assert row.status == "beyond measured" and row.total_s is None  # position 1025 was not
    rows = ledger([r for r in recorded() if r.mode == "prefill" or r.seq_len != 1024] +
                  [point("lstm", "recurrent", "decode", 257, 1e-4, 2048)], [256], [1])
    (row,) = [r for r in rows if r.model == "lstm"]
    assert row.decode_basis == "measured"


def test_past_the_last_measured_position_nothing_is_computed():
    rows = ledger(recorded(), [256], [768, 769])
    assert {r.status for r in rows if r.generated == 768} == {"ok"}
    assert {r.status for r in rows if r.generated == 769} == {"beyond measured"}
    assert all(r.decode_s is None and r.total_s is None for r in rows if r.generated == 769)


def test_the_cache_grows_with_the_tokens_and_the_recurrent_state_does_not():
    rows = {(r.model, r.generated): r for r in ledger(recorded(), [64], [192, 960])}
    assert rows[("transformer", 192)].state_bytes == 4096 * 256
    assert rows[("transformer", 192)].state_basis == "measured"
    assert rows[("lstm", 960)].state_bytes == 2048
    assert rows[("lstm", 960)].state_basis == "flat"
    (far,) = [r for r in ledger(recorded(), [1024], [1024]) if r.model == "transformer"]
    assert far.state_bytes == pytest.approx(4096 * 2048)
    assert far.state_basis == "extrapolated"


def test_the_cheapest_model_is_marked_once_per_request():
    rows = ledger(recorded(), [64, 256], [1, 512])
    for P in (64, 256):
        for G in (1, 512):
            cell = [r for r in rows if (r.prompt, r.generated) == (P, G)]
            assert sum(r.cheapest for r in cell) == 1
            assert min(cell, key=lambda r: r.total_s).cheapest


def test_break_even_matches_a_hand_computation():
    (found,) = [b for b in break_even(recorded(), [64]) if b.model == "lstm"]
    lstm_total, tf_total = 1e-5 * 64, 2e-6 * 64  # the prefills at P = 64
    for G in range(1, 1024 - 64 + 1):  # add the step at position 64 + G
        lstm_total += measured_decode("lstm", 64 + G)
        tf_total += measured_decode("transformer", 64 + G)
        if lstm_total <= tf_total:
            break
    assert lstm_total <= tf_total
    assert found.generated == G
    assert found.up_to == 1024 - 64
    assert found.attention == "transformer"
    assert found.cheaper_throughout
    assert found.decode_basis == "interpolated"


def test_a_model_never_cheaper_says_never_within_the_measured_range():
    (found,) = [b for b in break_even(recorded(), [64]) if b.model == "mingru"]
    assert found.generated is None
    assert found.up_to == 960
    assert "never" in found.text and "measured range" in found.text


def test_a_bench_run_without_decode_is_refused_in_one_line():
    with pytest.raises(UserError) as error:
        ledger([r for r in recorded() if r.mode != "decode"], [64], [1])
    message = str(error.value)
    assert "decode" in message and "--modes prefill,decode" in message
    assert "\n" not in message


def test_a_batch_not_measured_is_refused_naming_the_measured_ones():
    with pytest.raises(UserError, match="B = 8"):
        ledger(recorded(), [64], [1], batch=4)


def test_the_map_grid_and_the_text_cover_the_measured_range():
    prompts, generated = map_grid(recorded())
    assert prompts == [64, 256, 1024]
    assert generated[0] == 1 and generated[-1] == 512
    text = render_text(ledger(recorded(), [64], [192]), break_even(recorded(), [64]))
    assert "transformer" in text and "break-even" in text and "never" in text


def test_the_map_colours_each_cell_by_the_cheapest_model():
    from seqarena.report.serving import ledger_map

    prompts, generated = map_grid(recorded())
    rows = ledger(recorded(), prompts, generated)
    (chart,) = ledger_map(rows, breaks=break_even(recorded(), prompts))
    (mesh,) = chart.fig.axes[0].collections
    cells = mesh.get_array().reshape(len(generated), len(prompts))
    models = sorted({r.model for r in rows}, key=lambda m: ("lstm", "mingru", "transformer")
                    .index(m))  # the palette's order: recurrent, scan, attention
    for r in rows:
        if r.cheapest:
            assert cells[generated.index(r.generated), prompts.index(r.prompt)] == \
                models.index(r.model) + 1
    assert (cells[:, prompts.index(1024)] == 0).all()  # every G there is beyond measured


# --- through the command line: bench writes the ledger, project reads the run ---------------------

def test_bench_writes_the_ledger_of_its_own_points_and_project_reads_them(tmp_path, capsys):
    import json

    import numpy as np

    from seqarena.cli import main

    def cli(*args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return e.value.code, out, err

    status, out, err = cli("bench", "--models", "lstm,transformer", "--seq-lens", "8,32",
                           "--modes", "prefill,decode", "--batch-size", "2", "--d-model", "8",
                           "--threads", "1", "--min-run-time", "0.001", "--rounds", "2",
                           "--out", tmp_path / "b")
    assert status == 0, err
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    rows = doc["results"]
    for r in doc["serving"]["ledger"]:
        if r["total_s"] is None:
            continue
        mine = [x for x in rows if x["model"] == r["model"] and x["status"] == "ok"]
        prefill = next(x["latency_s"] for x in mine
                       if x["mode"] == "prefill" and x["seq_len"] == r["prompt"])
        timed = sorted((x["position"], x["latency_s"]) for x in mine if x["mode"] == "decode")
        positions = np.arange(r["prompt"] + 1, r["prompt"] + r["generated"] + 1)
        decode = np.interp(positions, *zip(*timed)).sum()  # a straight line between timed ones
        assert r["prefill_s"] == pytest.approx(prefill)
        assert r["total_s"] == pytest.approx(prefill + decode)
    assert "serving: from which G a recurrence costs no more than attention" in out

    status, out, err = cli("project", tmp_path / "b" / "bench.json", "--device", "h100")
    assert status == 0, err
    assert out.startswith("projected to NVIDIA H100 SXM: 67 TFLOP/s float32, 989 TFLOP/s "
                          "bfloat16 (dense), 3,350 GB/s")
    assert "the projection's error on the measured machine" in out
    for bad, message in ((["--device", "h1000"], "unknown device 'h1000' (did you mean h100?)"),
                         (["--peak-flops", "-1", "--bandwidth", "1e12"], "--peak-flops must be"
                                                                         " a positive number")):
        status, out, err = cli("project", tmp_path / "b" / "bench.json", *bad)
        assert status == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert message in err


def test_project_refuses_a_run_without_the_modes_the_ledger_needs(tmp_path, capsys):
    from seqarena.cli import main
    from seqarena.results import write_results

    write_results(tmp_path / "bench.json", "bench",
                  [point("lstm", "recurrent", "prefill", L, 1e-5 * L) for L in LENGTHS])
    with pytest.raises(SystemExit) as e:
        main(["project", str(tmp_path / "bench.json"), "--device", "a100"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "decode" in err
