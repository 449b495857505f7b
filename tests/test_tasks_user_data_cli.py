"""`seqarena compare` on the user's own files, end to end; bad files through the command line."""

import hashlib
import json
import subprocess
import sys

import pytest
from test_tasks_classify import reviews, write
from test_tasks_series import dataset
from test_tasks_translate import write_pairs

from seqarena.cli import main

TINY = ["--steps", "4", "--batch-size", "8", "--d-model", "16", "--threads", "1"]


def compare(*args):
    return subprocess.run([sys.executable, "-m", "seqarena", "compare", *args, *TINY],
                          capture_output=True, text=True)


@pytest.mark.parametrize("task, make, models, seq_len, baseline", [
    ("classify", lambda p: write(p / "reviews.csv", reviews()), "lstm,transformer", 16,
     "majority_accuracy"),
    ("translate", lambda p: write_pairs(p / "pairs.tsv", n=60), "rnn-ed,transformer-ed", 8,
     "copy_chrf"),
    ("series-classify", lambda p: (dataset(p), p)[1], "lstm,transformer", 8, "majority_accuracy"),
])
def test_compare_runs_end_to_end_on_a_small_file(tmp_path, task, make, models, seq_len, baseline):
    data = make(tmp_path)
    out = tmp_path / "cmp"
    r = compare("--task", task, "--data", str(data), "--models", models, "--seq-lens",
                str(seq_len), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"baselines: {baseline}" in r.stdout
    doc = json.loads((out / "summary.json").read_text())
    assert [x["model"] for x in doc["results"]] == models.split(",")
    assert all(x["status"] == "ok" and x["metric"] is not None for x in doc["results"])
    assert all(isinstance(x["truncated"], int) for x in doc["results"])
    if task != "series-classify":
        for x in doc["results"]:
            assert (out / x["run_dir"].split("/")[-1] / "tokenizer.json").exists()


def _fingerprint(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("task, files, message", [
    ("classify", {"d.csv": b"sentence,label\nhi,a\n"},
     "has no column 'text'; its columns are: sentence, label"),
    ("classify", {"d.csv": b""}, "is empty"),
    ("classify", {"d.csv": b"text,label\n" + b"hi,a\n" * 9}, "holds one class only"),
    ("classify", {"d.csv": b"text,label\nhi,a\nho,b\n\xff\xfe,a\n"}, "d.csv:4: not UTF-8"),
    ("translate", {"d.tsv": b"hi\tsalut\nhello\tbonjour\nthanks merci\n"}, "d.tsv:3: no tab"),
    ("series-classify", {"d/X_TRAIN.tsv": b"1\t0.1\t0.2\n2\t0.3\t1,5\n",
                         "d/X_TEST.tsv": b"1\t0.1\t0.2\n"}, "X_TRAIN.tsv:2: column 3 holds '1,5'"),
    ("series-classify", {"d/X_TRAIN.tsv": b"1\t0.1\t0.2\t0.3\n2\t0.3\t0.1\t0.2\n",
                         "d/X_TEST.tsv": b"1\t0.1\t0.2\n"}, "series of 2 values"),
])
def test_bad_files_are_one_line_exit_2_and_leave_earlier_runs_alone(tmp_path, capsys, task, files,
                                                                    message):
    earlier = tmp_path / "runs"
    (earlier / "r").mkdir(parents=True)
    (earlier / "r" / "summary.json").write_text('{"kept": true}\n')
    (earlier / "r" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    before = _fingerprint(earlier)
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(content)
    data = tmp_path / next(iter(files)).split("/")[0]
    model = "rnn-ed" if task == "translate" else "lstm"
    with pytest.raises(SystemExit) as e:
        main(["train", "--task", task, "--data", str(data), "--model", model, "--out",
              str(earlier), "--name", "r", "--steps", "2", "--threads", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert message in err and err.strip().count("\n") == 0 and "Traceback" not in err
    assert _fingerprint(earlier) == before
