import csv
import json

import pytest
import torch

from seqarena.cli import main

ISSUE_RESULT_KEYS = {"model", "impl", "mode", "seq_len", "batch", "d_model", "layers", "threads",
                     "device", "dtype", "tokens_per_s", "latency_s", "flops", "mfu",
                     "peak_mem_bytes", "status", "round_s", "bytes_moved", "mbu", "intensity"}
TINY = ["--seq-lens", "8,16", "--batch-size", "2", "--d-model", "8", "--threads", "1",
        "--min-run-time", "0.001"]


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize("args, words", [
    (["--models", "lstmm"], ["unknown model", "lstm"]),
    (["--models", "lstm", "--peers", "torch-lsmt"], ["unknown peer", "torch-lstm"]),
    (["--models", "lstm", "--seq-lens", "0"], ["--seq-lens", "positive"]),
    (["--models", "lstm", "--seq-lens", "-8,16"], ["--seq-lens", "positive"]),
    (["--models", "lstm", "--seq-lens", "many"], ["--seq-lens", "int"]),
    (["--models", "lstm", "--modes", "sprint"], ["unknown mode", "decode"]),
    (["--models", "lstm", "--dtype", "float8"], ["unknown dtype", "bfloat16"]),
])
def test_bad_input_is_one_line_and_status_2(capsys, tmp_path, args, words):
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "never"))
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    for word in words:
        assert word in err
    assert not (tmp_path / "never").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line_and_status_2(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--models", "lstm", "--device", "cuda", "--out", str(tmp_path))
    assert code == 2 and err.strip().count("\n") == 0 and "cpu" in err


def test_json_and_csv_carry_every_key_the_issue_names(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "--models", "lstm,transformer", *TINY, "--json",
                           "--out", str(tmp_path))
    assert code == 0
    doc = json.loads(out)
    assert doc == json.loads((tmp_path / "bench.json").read_text())
    assert doc["schema_version"] >= 1 and doc["kind"] == "bench"
    assert {"cpu", "cores", "threads", "gpu", "torch"} <= set(doc["machine"])
    assert doc["peak_flops"]["cpu/float32/1t"] > 0 and doc["peak_bandwidth"]["cpu/float32/1t"] > 0
    assert isinstance(doc["machine"]["flush_denormal"], bool)
    assert {r["mode"] for r in doc["results"]} == {"train", "forward", "prefill", "decode"}
    for r in doc["results"]:
        assert ISSUE_RESULT_KEYS <= set(r)
        assert r["status"] == "ok" and r["impl"] == "seqarena"
    assert any(c["text"].startswith("train: ") and c["mode"] == "train" and c["leader"]
               for c in doc["crossovers"])
    ok = [r for r in doc["results"] if r["mode"] != "decode"]
    assert all(r["bytes_moved"] > 0 and r["mbu"] > 0 and r["intensity"] > 0 for r in ok)
    with open(tmp_path / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(doc["results"]) and ISSUE_RESULT_KEYS <= set(rows[0])


def test_a_missing_peer_package_is_a_note_not_a_failure(capsys, tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mambapy" else real_find_spec(name, *a))
    code, out, _ = run_cli(capsys, "--models", "mingru", "--peers", "mambapy,torch-gru", *TINY,
                           "--modes", "prefill", "--out", str(tmp_path))
    assert code == 0
    assert "mambapy package, not installed" in out and "torch.nn.GRU" in out


def test_help_names_every_peer(capsys):
    from seqarena.bench.peers import PEERS

    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    unwrapped = "".join(out.split())  # click wraps lines, possibly inside a hyphenated name
    assert all(name in unwrapped for name in PEERS.names())


def test_a_baseline_run_prints_each_point_as_a_ratio_with_its_interval(capsys, tmp_path):
    args = ["--models", "lstm", *TINY, "--modes", "prefill"]
    assert run_cli(capsys, *args, "--out", str(tmp_path / "old"))[0] == 0
    code, out, _ = run_cli(capsys, *args, "--out", str(tmp_path / "new"),
                           "--baseline", str(tmp_path / "old" / "bench.json"))
    assert code == 0
    assert "against the baseline" in out and "lstm prefill L=8:" in out and "of the baseline" in out
    doc = json.loads((tmp_path / "new" / "bench.json").read_text())
    points = doc["baseline"]["points"]
    assert {p["seq_len"] for p in points} == {8, 16}
    assert all(p["low"] <= p["ratio"] <= p["high"] for p in points)


def test_a_baseline_that_is_not_a_bench_file_is_one_line(capsys, tmp_path):
    (tmp_path / "x.json").write_text("{}")
    code, _, err = run_cli(capsys, "--models", "lstm", *TINY, "--baseline",
                           str(tmp_path / "x.json"), "--out", str(tmp_path / "o"))
    assert code == 2 and "not a seqarena results file" in err


def test_the_cli_loads_without_torch_so_bench_can_choose_how_openmp_waits():
    # OpenMP reads OMP_WAIT_POLICY once, when torch loads it: the bench sets it first
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "import sys, seqarena.cli; "
                        "print('torch' in sys.modules)"], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip() == "False", r.stderr


def test_a_toml_file_sets_the_sweep_and_flags_override_it(capsys, tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text('models = ["gru"]\nseq_lens = [8]\nmodes = ["forward"]\nbatch_sizes = [2]\n'
                      'd_models = [8]\nthreads = [1]\nmin_run_time_s = 0.001\n')
    code, _, err = run_cli(capsys, "--config", str(config), "--seq-lens", "16", "--out",
                           str(tmp_path / "b"), "--json")
    assert code == 0, err
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())["results"]
    assert {(r["model"], r["mode"], r["seq_len"], r["d_model"]) for r in rows} == {
        ("gru", "forward", 16, 8)}
    bad = tmp_path / "bad.toml"
    bad.write_text("seq_lenz = [8]\n")
    code, _, err = run_cli(capsys, "--config", str(bad), "--out", str(tmp_path / "never"))
    assert code == 2 and "unknown key 'seq_lenz'" in err and "seq_lens" in err
