"""docs/tasks.md's `seqarena compare` commands, end to end; bad files through the command line."""

import hashlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from seqarena.cli import main

TINY = ["--steps", "4", "--batch-size", "8", "--d-model", "16", "--threads", "1"]
ROOT = Path(__file__).resolve().parents[1]
BASELINE = {"classify": "majority_accuracy", "translate": "copy_chrf",
            "series-classify": "majority_accuracy"}


def documented(command):
    """The `seqarena COMMAND ...` lines of docs/tasks.md's bash blocks, as argument lists."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "tasks.md").read_text(), re.S)
    return [shlex.split(line)[1:] for block in blocks for line in block.splitlines()
            if line.startswith(f"seqarena {command} ")]


def test_the_docs_show_a_comparison_of_each_task_on_files_that_exist():
    tasks = [args[args.index("--task") + 1] for args in documented("compare")]
    assert tasks == ["classify", "translate", "series-classify"]
    for args in documented("compare") + documented("train"):
        assert (ROOT / args[args.index("--data") + 1]).exists()


@pytest.mark.parametrize("args", documented("compare"), ids=lambda a: a[a.index("--task") + 1])
def test_the_documented_compare_runs_end_to_end_at_a_tiny_budget(tmp_path, args):
    out = tmp_path / "cmp"
    # a fixed rate: 4 steps are too few for compare's learning-rate search
    r = subprocess.run([sys.executable, "-m", "seqarena", *args, *TINY, "--lr", "3e-3",
                        "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    task, models = args[args.index("--task") + 1], args[args.index("--models") + 1].split(",")
    assert f"baselines: {BASELINE[task]}" in r.stdout
    doc = json.loads((out / "summary.json").read_text())
    assert [x["model"] for x in doc["results"]] == models
    assert all(x["status"] == "ok" and x["metric"] is not None for x in doc["results"])
    assert all(isinstance(x["truncated"], int) for x in doc["results"])
    if task != "series-classify":
        for x in doc["results"]:
            assert (Path(x["run_dir"]) / "tokenizer.json").exists()


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
