import json
import re
import subprocess
import sys

import pytest

from test_report_fixtures import (MACHINE, MODELS, run_result, write_bench, write_compare,
                             write_newer_schema, write_run)
from seqarena.errors import UserError
from seqarena.report import collect, write_report
from seqarena.report.speed import bench_crossovers, roofline_chart
from seqarena.report.style import FAMILY_COLOURS, Palette
from seqarena.results import write_results


def report(paths, tmp_path, name="report.html"):
    lines = []
    out = write_report(paths, tmp_path / name, log=lines.append)
    return out.read_text(encoding="utf-8"), lines


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "seqarena", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """One compare dir (5 models x 2 lengths) and one bench dir, reported once for the module."""
    root = tmp_path_factory.mktemp("full")
    write_compare(root / "cmp")
    write_bench(root / "bench")
    html, lines = report([root / "cmp", root / "bench"], root)
    return root, html, lines


def test_summary_table_holds_every_run_and_its_numbers(full_report):
    _, html, lines = full_report
    assert lines == []
    table = html[html.index('<table class="summary">'):]
    table = table[table.index("<tbody>"):table.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    assert len(rows) == len(MODELS) * 2
    for L in (32, 128):
        for m in MODELS:
            want = run_result(m, L)
            row = next(r for r in rows if f"</span>{m}</td>" in r and f'data-value="{L}"' in r)
            assert f'data-value="{want.params}">{want.params:,}<' in row
            assert f'data-value="{want.metric}"' in row
            assert f'data-value="{want.peak_mem_bytes}"' in row


def test_only_the_model_a_verdict_named_is_highlighted_and_nothing_on_a_tie(full_report):
    _, html, _ = full_report
    best = re.findall(r'<td class="num best" data-value="([^"]+)"', html)
    # rnn is named best at L = 32; at L = 128 lstm scores as rnn on every example: a tie
    assert [float(v) for v in best] == [run_result("rnn", 32).metric]
    assert "L=128, best at equal steps: tie: " in html and "rnn, lstm (not separated" in html
    for L in (32, 128):  # each length's verdict beside its paired differences
        assert f'id="fig-compare_adding_forest_L{L}"' in html or \
            f"compare_adding_forest_L{L}" in html
    assert 'id="fig-compare_adding_lr_search"' in html and "(tuned)" in html


def test_the_serving_map_shows_the_cheapest_model_per_request(full_report):
    root, html, _ = full_report
    maps = re.findall(r'<figure id="fig-(serving_map_[^"]+)">', html)
    assert len(maps) == 1 and (root / "report_figures" / f"{maps[0]}.png").is_file()
    assert '<section id="serving">' in html


def test_page_loads_nothing_from_elsewhere(full_report):
    _, html, _ = full_report
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert "default-src 'none'" in html
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith(("#", "data:", "report_figures/")), url


def test_every_chart_is_inline_svg_with_png_and_svg_copies_beside_it(full_report):
    root, html, _ = full_report
    slugs = re.findall(r'<figure id="fig-([^"]+)">', html)
    assert {"throughput", "memory", "mfu", "roofline", "decode",
            "compare_adding_metric"} <= set(slugs)
    assert html.count('<svg') == len(slugs) == html.count('class="chart"')
    for slug in slugs:
        png = root / "report_figures" / f"{slug}.png"
        assert png.read_bytes().startswith(b"\x89PNG")
        assert "<svg" in (root / "report_figures" / f"{slug}.svg").read_text()


def test_svg_ids_are_unique_across_the_page(full_report):
    _, html, _ = full_report
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    for ref in set(re.findall(r'url\(#([^)]+)\)', html)):
        assert ref in ids


def test_machine_and_reproducing_command_are_on_the_page(full_report):
    _, html, _ = full_report
    assert "Test CPU 9000, 2 threads, torch 2.13.0" in html
    assert "seqarena bench --quick" in html
    assert "seqarena compare --out" in html


def test_the_report_marks_the_crossovers_the_bench_wrote_without_finding_its_own(tmp_path):
    d = write_bench(tmp_path / "b")
    bench = collect([d]).benches[0]
    written = [c for c in bench.crossovers if c["kind"] == "overtakes" and c["mode"] == "train"]
    drawn = bench_crossovers([bench], "train")
    assert [(c["other"], c["leader"], c["at"]) for c in drawn] == \
        [(c["other"], c["leader"], c["at"]) for c in written] and drawn
    assert all(c["result"].model == c["other"] and c["result"].seq_len == c["at"] for c in drawn)
    bench.crossovers = []  # nothing written: nothing drawn, whatever the lines do
    assert bench_crossovers([bench], "train") == []


def test_the_roofline_chart_draws_both_roofs_from_the_bench_file(tmp_path):
    bench = collect([write_bench(tmp_path / "b")]).benches[0]
    chart = roofline_chart([bench], Palette({"lstm": "recurrent", "transformer": "attention"}))
    assert chart is not None and chart.slug == "roofline"
    roof = chart.fig.axes[0].lines[0]
    x, y = roof.get_xdata(), roof.get_ydata()
    assert max(y) == pytest.approx(1e11)  # the flat roof: the matmul peak
    assert y[0] == pytest.approx(2e10 * x[0])  # the slope: bandwidth x intensity


def test_colours_come_from_each_model_s_family_as_its_results_state_it():
    families = {"transformer": "attention", "lstm": "recurrent", "rnn": "recurrent",
                "mingru": "scan", "gru": "recurrent", "transformer-ed": "attention",
                "my-new-thing": "linear-attention", "plug": "plugin"}
    colour = Palette(families)
    assert {colour(m) for m in ("rnn", "lstm", "gru")} <= set(FAMILY_COLOURS["recurrent"])
    assert colour("mingru") in FAMILY_COLOURS["scan"]
    assert {colour(m) for m in ("transformer", "transformer-ed")} <= set(FAMILY_COLOURS["attention"])
    assert colour("my-new-thing") in FAMILY_COLOURS["linear-attention"]
    assert len({colour(m) for m in families}) == len(families)
    assert Palette({"lstm": "recurrent"})("lstm") == colour("lstm")  # the same in every report
    # the name does not decide: a "gru" that says it is attention is drawn as attention
    assert Palette({"gru": "attention"})("gru") in FAMILY_COLOURS["attention"]
    assert sorted(families, key=colour.order)[:3] == ["rnn", "lstm", "gru"]


def test_crashed_run_shows_what_it_logged_and_says_so(tmp_path):
    write_run(tmp_path / "crashed", "lstm", 64, crashed_at=47)
    html, lines = report([tmp_path / "crashed"], tmp_path)
    assert len(lines) == 1 and "did not finish" in lines[0] and "40 records" in lines[0]
    assert 'id="fig-curves_adding_L64"' in html
    assert "running</span>" in html


def test_newer_schema_and_empty_dir_are_skipped_beside_valid_runs(tmp_path):
    write_run(tmp_path / "good", "gru", 32)
    write_newer_schema(tmp_path / "future")
    (tmp_path / "empty").mkdir()
    html, lines = report([tmp_path / "good", tmp_path / "future", tmp_path / "empty"], tmp_path)
    assert any("future" in s and "newer seqarena" in s for s in lines)
    assert any("empty" in s and "no runs" in s for s in lines)
    assert len(lines) == 2
    assert "</span>gru</td>" in html


def test_nothing_valid_raises_one_line_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    write_newer_schema(tmp_path / "future")
    with pytest.raises(UserError) as e:
        write_report([tmp_path / "empty", tmp_path / "future"], tmp_path / "r.html", log=None)
    assert "\n" not in str(e.value) and "newer seqarena" in str(e.value)
    assert not (tmp_path / "r.html").exists()


def test_cli_with_nothing_valid_prints_one_line_and_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("report", str(tmp_path / "empty"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "nothing to report" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_writes_the_report_and_lists_skips_on_stderr(tmp_path):
    write_run(tmp_path / "runs" / "a", "rnn", 32)
    write_run(tmp_path / "runs" / "b", "lstm", 32, summary=False)
    r = cli("report", str(tmp_path / "runs"), "--out", str(tmp_path / "out" / "r.html"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "r.html").is_file()
    assert [ln for ln in r.stderr.splitlines() if ln] == [
        f"seqarena report: skipped {tmp_path / 'runs' / 'b'}: no summary.json: the run stopped "
        "before its first evaluation"]


def test_a_compare_summary_alone_draws_its_curves(tmp_path):
    # the summary holds every run's history: no run directory (nor metrics.jsonl) is read
    cmp = tmp_path / "moved"
    write_results(cmp / "summary.json", "compare",
                  [run_result(m, 32, run_dir=f"runs/cmp/{m}-L32-s0") for m in ("lstm", "gru")],
                  machine=MACHINE, command=["seqarena", "compare"],
                  held_equal={"task": "adding", "steps": 60})
    found = collect([cmp])
    assert len(found.runs) == 2 and found.skipped == []
    assert all(len(r.metrics) == 60 for r in found.runs)
    assert found.held_equal == ["task adding; steps 60"]
    html, _ = report([cmp], tmp_path)
    assert 'id="fig-curves_adding_L32"' in html


def test_a_run_in_a_compare_dir_is_shown_once_with_the_compare_s_command(tmp_path):
    cmp = write_compare(tmp_path / "cmp", models=["rnn", "gru"], lengths=[32])
    found = collect([cmp])
    assert sorted(r.model for r in found.runs) == ["gru", "rnn"]
    assert all(r.source.kind == "compare" for r in found.runs)


def test_bench_results_are_read_with_the_bench_own_crossover_lines(tmp_path):
    d = write_bench(tmp_path / "b")
    found = collect([d])
    assert len(found.benches) == 1 and len(found.benches[0].results) > 0
    assert any(c["text"].startswith("train: ") and " overtakes " in c["text"]
               for c in found.benches[0].crossovers)
    (d / "bench.json").rename(d / "results.json")  # the name the report also accepts
    assert len(collect([d]).benches) == 1


def test_analyses_are_picked_up_from_inside_run_dirs(tmp_path):
    run = write_run(tmp_path / "r", "lstm", 8)
    hidden = [{"layer": 0, "states": [[0.1 * t, -0.2 * t] for t in range(8)],
               "pca": [[t, 0.0] for t in range(8)], "explained": [1.0, 0.0]}]
    write_results(run / "analysis" / "attention.json", "attention", [], machine=MACHINE,
                  command=["seqarena", "analyze", "attention", str(run)], model="lstm",
                  family="recurrent", task="adding", seq_len=8, run="r", hidden=hidden)
    html, lines = report([run], tmp_path)
    assert lines == []
    assert 'id="fig-attention_lstm_r"' in html
    assert "seqarena analyze attention" in html


def test_out_must_be_an_html_file(tmp_path):
    write_run(tmp_path / "r", "rnn", 8)
    with pytest.raises(UserError, match=r"\.html"):
        write_report([tmp_path / "r"], tmp_path / "report.pdf", log=None)
