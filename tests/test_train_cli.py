"""`seqarena train`, `compare` and `generate` from the command line: results and bad input."""

import json
import subprocess
import sys

import pytest
import torch

from seqarena.cli import main
from seqarena.results import Summary, read_results

TINY = ["--steps", "4", "--d-model", "8", "--batch-size", "4", "--threads", "1", "--device", "cpu"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "seqarena", *args], capture_output=True, text=True)


def cli(capsys, *args):
    """(exit status, stdout, stderr) of `seqarena ARGS` run in this process."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def assert_one_line_error(status, err, *words):
    assert status == 2
    assert err.startswith("seqarena: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err


# --- through a real subprocess: what a user sees -----------------------------------------------

def test_unknown_model_is_one_line_with_a_suggestion(tmp_path):
    r = run("train", "--model", "lstmm", "--out", tmp_path, *TINY)
    assert_one_line_error(r.returncode, r.stderr, "unknown model 'lstmm'", "Did you mean 'lstm'")
    assert not any(tmp_path.iterdir())  # nothing written


def test_malformed_toml_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = = 3\n")
    r = run("train", "--config", bad, "--out", tmp_path)
    assert_one_line_error(r.returncode, r.stderr, "bad.toml: not valid TOML")


def test_nan_loss_exits_2_with_one_line(tmp_path):
    r = run("train", "--model", "lstm", "--task", "adding", "--seq-len", "10", "--lr", "1e30",
            "--clip", "0", "--out", tmp_path, *TINY)
    assert_one_line_error(r.returncode, r.stderr, "loss became inf at step 2", "--lr")
    summary = read_results(tmp_path / "lstm-adding-L10-s0" / "summary.json")
    assert summary["results"][0].status == "nan"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path):
    r = run("train", "--out", tmp_path, *TINY[:-2], "--device", "cuda")
    assert_one_line_error(r.returncode, r.stderr, "no CUDA GPU")


# --- in this process: the same entry point, faster ----------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--task", "addding"], ["unknown task 'addding'"]),
    (["--task", "copy", "--seq-len", "5"], ["needs seq_len >= 21"]),
    (["--task", "adding", "--task-arg", "pairs=3"], ["has no parameter 'pairs'"]),
    (["--task-arg", "pairs"], ["--task-arg expects KEY=VALUE"]),
    (["--steps", "0"], ["steps must be positive"]),
])
def test_bad_settings_are_one_line(capsys, tmp_path, args, words):
    status, _, err = cli(capsys, "train", "--out", tmp_path, *TINY, *args)
    assert_one_line_error(status, err, *words)


def test_bad_data_files_are_one_line(capsys, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    (tmp_path / "series.csv").write_text("month,sales\n1,10\n2,12\n")
    (tmp_path / "lra").mkdir()
    (tmp_path / "lra" / "basic_train.tsv").write_text("Source\tTarget\n( [MAX 1 ] )\t1\n")
    cases = [
        (["--task", "text-lm", "--text", tmp_path / "empty.txt"], ["empty"]),
        (["--task", "text-lm", "--text", tmp_path / "latin1.txt"], ["not UTF-8"]),
        (["--task", "forecast", "--csv", tmp_path / "series.csv", "--column", "price"],
         ["no column 'price'"]),
        (["--task", "listops", "--data-dir", tmp_path / "lra"], ["basic_val.tsv"]),
    ]
    for args, words in cases:
        status, _, err = cli(capsys, "train", "--out", tmp_path / "runs", *TINY, *args)
        assert_one_line_error(status, err, *words)
    assert not (tmp_path / "runs").exists()


def test_missing_tensorboard_is_one_line_naming_the_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    status, _, err = cli(capsys, "train", "--out", tmp_path, "--seq-len", "10", "--tensorboard", *TINY)
    assert_one_line_error(status, err, "pip install seqarena[tensorboard]")


def test_train_then_resume_from_the_command_line_with_a_toml_config(capsys, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('model = "gru"\ntask = "mqar"\nseq_len = 24\nsteps = 8\nlr = 0.01\n'
                    'checkpoint_every = 4\neval_every = 4\nlog_every = 1\n'
                    '[task_args]\npairs = 2\n')
    args = ["--config", toml, "--out", tmp_path, "--name", "r", "--d-model", "8", "--threads", "1",
            "--batch-size", "4", "--device", "cpu"]
    status, out, _ = cli(capsys, "train", *args, "--steps", "4")  # the flag beats the file
    assert status == 0 and "after 4 steps" in out
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (cfg["model"], cfg["steps"], cfg["task_args"]) == ("gru", 4, {"pairs": 2})

    status, _, err = cli(capsys, "train", *args)  # steps=8 from the file: a different schedule
    assert_one_line_error(status, err, "already holds a run")
    status, _, err = cli(capsys, "train", *args, "--resume")
    assert_one_line_error(status, err, "written with steps=4, this run has steps=8")
    status, out, _ = cli(capsys, "train", "--out", tmp_path, "--name", "r", "--resume",
                         "--eval-every", "2")  # settings from the run's own config.json
    assert status == 0 and "after 4 steps" in out


def test_generate_samples_from_a_trained_text_model(capsys, tmp_path):
    text = tmp_path / "abc.txt"
    text.write_text("abcabcabcabc\n" * 40)
    status, _, _ = cli(capsys, "train", "--model", "gru", "--task", "text-lm", "--text", text,
                       "--seq-len", "12", "--out", tmp_path, "--name", "lm", *TINY)
    assert status == 0
    status, out, _ = cli(capsys, "generate", tmp_path / "lm", "--prompt", "ab",
                         "--max-new-tokens", "7", "--temperature", "0")
    assert status == 0
    sample = out.rstrip("\n")
    assert sample.startswith("ab") and len(sample) == 9
    assert set(sample) <= set("abc\n")
    status, _, err = cli(capsys, "generate", tmp_path / "nothing", "--prompt", "x")
    assert_one_line_error(status, err, "no such run directory")


def test_generate_refuses_a_task_that_is_not_text(capsys, tmp_path):
    assert cli(capsys, "train", "--seq-len", "10", "--out", tmp_path, "--name", "a", *TINY)[0] == 0
    status, _, err = cli(capsys, "generate", tmp_path / "a", "--prompt", "x")
    assert_one_line_error(status, err, "does not generate text")


def test_compare_prints_the_table_and_what_was_held_equal(capsys, tmp_path):
    status, out, _ = cli(capsys, "compare", "--models", "gru,transformer", "--seq-lens", "10",
                         "--seeds", "0,1", "--out", tmp_path / "cmp", "--lr", "3e-3", *TINY)
    assert status == 0
    assert "held equal: task adding, 4 steps, batch 4" in out
    assert "lr 0.003, the same for every model" in out
    assert "mse [95 % interval] (lower is better; * named best)" in out and "train tok/s" in out
    assert "peak MiB" in out
    doc = read_results(tmp_path / "cmp" / "summary.json")
    summary = Summary.from_dict(doc["summary"])
    assert_verdicts_follow_their_tests(summary)
    shown = [line for line in out.splitlines() if line.startswith("L=10")]
    assert shown == [d["text"] for d in summary.verdicts]
    assert {(r.model, r.seed) for r in doc["results"]} == {
        (m, s) for m in ("gru", "transformer") for s in (0, 1)}
    params = [r.params for r in doc["results"]]
    assert max(params) / min(params) < 1.2  # both within 10 % of the target


def assert_verdicts_follow_their_tests(summary):
    """Each metric verdict names the best model exactly when its Holm-corrected tests separate it
    from every other model, and its table row carries the star."""
    for d in summary.verdicts:
        if d["question"] not in ("steps", "time"):
            continue
        rows = [r for r in summary.rows if r.seq_len == d["seq_len"]]
        value = (lambda r: r.metric) if d["question"] == "steps" else (lambda r: r.metric_at_time)
        scored = sorted((r for r in rows if value(r) is not None), key=value,
                        reverse=summary.higher_is_better)
        separated = len(d["tests"]) == len(scored) - 1 >= 1 and all(t["separated"]
                                                                    for t in d["tests"])
        assert d["winner"] == (scored[0].model if separated else None), d["text"]
        assert all(t["a"] == scored[0].model for t in d["tests"])


def test_compare_tunes_every_length_by_default(capsys, tmp_path):
    status, out, _ = cli(capsys, "compare", "--models", "gru,lstm", "--seq-lens", "8,12",
                         "--steps", "80", "--d-model", "8", "--batch-size", "4", "--threads",
                         "1", "--out", tmp_path / "cmp")
    assert status == 0
    assert "lr search: each model at L=8, seed 0, scored on the validation split" in out
    assert "lr check at L=12: the finalists again, 4 run(s)" in out
    summary = Summary.from_dict(read_results(tmp_path / "cmp" / "summary.json")["summary"])
    chosen = {(r["model"], r["seq_len"]): r for r in summary.lr_search["runs"]}
    assert set(chosen) == {(m, L) for m in ("gru", "lstm") for L in (8, 12)}
    assert all(r["searched_at"] == 8 for r in chosen.values())
    for row in summary.rows:  # every run trained at the rate chosen for its own length
        assert row.lr_tuned and row.lr == chosen[row.model, row.seq_len]["lr"]
        finalists = [t["lr"] for t in chosen[row.model, 8]["trials"] if len(t["values"]) == 2]
        if row.seq_len == 12:
            assert sorted(t["lr"] for t in chosen[row.model, 12]["trials"]) == sorted(finalists)
    assert summary.held_equal["lr"] == "auto"


def test_compare_bad_lists_are_one_line(capsys, tmp_path):
    status, _, err = cli(capsys, "compare", "--seq-lens", "10,abc", "--out", tmp_path)
    assert_one_line_error(status, err, "--seq-lens expects a comma-separated list of ints")
    status, _, err = cli(capsys, "compare", "--models", "gru,nope", "--seq-lens", "10",
                         "--out", tmp_path, *TINY)
    assert_one_line_error(status, err, "unknown model 'nope'")
