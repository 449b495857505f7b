"""classify: the user's labelled texts in every format, the stratified split, the tokenizers."""

import csv
import json
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score
from test_tasks_backbones import TinyGRU

from seqarena.errors import ConfigError, UserError
from seqarena.tasks import make_task
from seqarena.tasks import tokenizer as tok
from seqarena.tasks.classify import stratified_split
from seqarena.config import TrainConfig
from seqarena.training.inference import load_run
from seqarena.training.train import train

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

WORDS = {"pos": "good great fine lovely", "neg": "bad awful poor dull", "meh": "okay so-so, plain"}


def reviews(n=60, seed=0):
    """n (text, label) rows: quotes, commas and non-ASCII included, three classes."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = ["pos", "neg", "meh"][i % 3]
        words = rng.choice(WORDS[label].split() + ['"the"', "a,", "café"], rng.integers(2, 8))
        rows.append((" ".join(words), label))
    return rows


def write(path, rows, header=("text", "label")):
    """rows as the file's extension says, each format by its own library."""
    if path.suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writerow(header)
            w.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows),
                        encoding="utf-8")
    else:
        pd.DataFrame(rows, columns=list(header)).to_parquet(path)
    return path


def examples(task, split):
    """(text, label) of each example of a split, read back through the model's inputs."""
    batch = task.split_data(split)
    texts = [task.tokenizer.decode(row[m].tolist()) for row, m in zip(batch.x, batch.mask)]
    return [(t, task.classes[int(y)]) for t, y in zip(texts, batch.y)]


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_each_format_gives_the_rows_an_independent_parser_reads(tmp_path, ext):
    path = write(tmp_path / f"reviews{ext}", reviews())
    if ext in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            expected = [(r["text"], r["label"]) for r in
                        csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")]
    elif ext == ".jsonl":
        frame = pd.read_json(path, lines=True)
        expected = list(zip(frame["text"], frame["label"]))
    else:
        frame = pd.read_parquet(path)
        expected = list(zip(frame["text"], frame["label"]))
    task = make_task("classify", data=str(path), seq_len=64)
    got = [ex for split in ("train", "val", "test") for ex in examples(task, split)]
    assert Counter(got) == Counter(expected)
    assert task.classes == ["meh", "neg", "pos"]
    assert sorted(map(len, (examples(task, s) for s in ("train", "val", "test")))) == [6, 6, 48]


def test_integer_labels_and_other_column_names(tmp_path):
    rows = [(f"text {i} " + "xy"[i % 2] * (i % 7), i % 2 * 10) for i in range(30)]
    path = write(tmp_path / "d.jsonl", rows, header=("sentence", "stars"))
    task = make_task("classify", data=str(path), text_column="sentence", label_column="stars")
    assert task.classes == ["0", "10"]
    assert Counter(examples(task, "train") + examples(task, "val") + examples(task, "test")) == \
        Counter((t, str(y)) for t, y in rows)


def test_a_directory_of_split_files_keeps_its_splits(tmp_path):
    rows = reviews(90)
    write(tmp_path / "train.csv", rows[:60])
    write(tmp_path / "val.tsv", rows[60:75])
    write(tmp_path / "test.jsonl", rows[75:])
    task = make_task("classify", data=str(tmp_path), seq_len=64)
    assert Counter(examples(task, "train")) == Counter(rows[:60])
    assert Counter(examples(task, "val")) == Counter(rows[60:75])
    assert Counter(examples(task, "test")) == Counter(rows[75:])
    (tmp_path / "val.tsv").unlink()  # without val: a stratified tenth of train
    task = make_task("classify", data=str(tmp_path), seq_len=64)
    train_, val = examples(task, "train"), examples(task, "val")
    assert Counter(train_ + val) == Counter(rows[:60]) and len(val) == 6
    assert {label for _, label in val} == {"pos", "neg", "meh"}


def test_stratified_split_keeps_every_class_in_every_split_and_follows_the_seed():
    labels = np.repeat(np.arange(5), [3, 4, 10, 31, 200])
    parts = stratified_split(labels, (0.8, 0.1, 0.1), np.random.default_rng(0))
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    for part in parts:
        assert set(labels[part]) == set(range(5))
    for c, n in enumerate([3, 4, 10, 31, 200]):
        val, test = (int((labels[p] == c).sum()) for p in parts[1:])
        assert val == test == max(1, round(0.1 * n))
    again = stratified_split(labels, (0.8, 0.1, 0.1), np.random.default_rng(0))
    other = stratified_split(labels, (0.8, 0.1, 0.1), np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_the_task_seed_decides_the_split(tmp_path):
    path = write(tmp_path / "r.csv", reviews())
    a, b = (make_task("classify", data=str(path), seq_len=64, seed=s) for s in (0, 1))
    assert examples(a, "test") == examples(make_task("classify", data=str(path), seq_len=64),
                                           "test")
    assert Counter(examples(a, "test")) != Counter(examples(b, "test"))


def test_long_texts_are_cut_to_seq_len_padded_masked_and_counted(tmp_path):
    rows = [("x" * n, "ab"[n % 2]) for n in range(1, 31)]
    task = make_task("classify", data=str(write(tmp_path / "r.csv", rows)), seq_len=10)
    assert task.truncated() == 20
    batch = task.split_data("train")
    lengths = batch.mask.sum(1)
    assert batch.x.shape[1] == 10 and lengths.max() == 10
    assert (batch.x[~batch.mask] == tok.PAD).all() and (batch.x[batch.mask] != tok.PAD).all()


def test_metrics_are_accuracy_and_sklearns_macro_f1_and_the_majority_baseline(tmp_path):
    rows = reviews(150) + [("good", "pos")] * 30  # an unbalanced majority
    task = make_task("classify", data=str(write(tmp_path / "r.csv", rows)), seq_len=32)
    torch.manual_seed(0)
    model = task.wrap(TinyGRU(16))
    metrics = task.evaluate(model, "test", batch_size=5)  # several batches
    batch = task.split_data("test")
    with torch.no_grad():
        guess = model(batch).argmax(-1)
    assert metrics["accuracy"] == pytest.approx((guess == batch.y).float().mean().item())
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(batch.y, guess, average="macro", labels=range(3), zero_division=0))
    base = task.baselines()
    train_y = task.split_data("train").y
    majority = int(torch.bincount(train_y).argmax())
    assert task.classes[majority] == "pos"
    assert base["majority_accuracy"] == pytest.approx((batch.y == majority).float().mean().item())
    assert base["majority_macro_f1"] == pytest.approx(
        f1_score(batch.y, [majority] * len(batch.y), average="macro", labels=range(3),
                 zero_division=0))


def test_bpe_round_trips_text_and_reloads_identically_from_the_run_dir(tmp_path):
    texts = [t for t, _ in reviews(200)]
    bpe = tok.train_tokenizer("bpe", texts, 300)
    for text in texts + ["unseen ✓ text, émigré\tand tabs"]:
        assert bpe.decode(bpe.encode(text)) == text
    assert len(bpe.encode(texts[0])) < len(texts[0])  # merges were learnt
    bpe.save(tmp_path)
    again = tok.load_tokenizer(tmp_path)
    assert again.vocab_size == bpe.vocab_size
    assert all(again.encode(t) == bpe.encode(t) for t in texts)
    char = tok.train_tokenizer("char", ["abc", "cd"], 0)
    assert char.encode("dxa") == [7, tok.UNK, 4] and char.decode(char.encode("cab")) == "cab"


def test_a_trained_run_keeps_its_tokenizer_and_classes_when_the_data_changes(tmp_path):
    path = write(tmp_path / "r.csv", reviews(90))
    cfg = TrainConfig(model="gru", task="classify", seq_len=8, steps=3, d_model=16,
                      eval_every=0, out=str(tmp_path / "runs"), name="r",
                      task_args={"data": str(path), "tokenizer": "bpe", "vocab_size": 300},
                      threads=1)
    outcome = train(cfg)
    assert outcome.result.truncated == outcome.task.truncated() > 0
    saved = json.loads((outcome.run_dir / "tokenizer.json").read_text())
    assert saved["kind"] == "bpe"
    prompt = "good lovely film"
    want = outcome.task.generate(outcome.model, prompt)
    write(path, [("zzz qqq", "x"), ("www", "y")] * 10)  # new data: other texts, other classes
    run = load_run(outcome.run_dir)
    task, model = run.task, run.model
    assert task.classes == ["meh", "neg", "pos"]
    assert task.tokenizer.encode(prompt) == outcome.task.tokenizer.encode(prompt)
    assert task.generate(model, prompt) == want
    path.unlink()  # generating needs no data at all
    run = load_run(outcome.run_dir)
    assert run.task.generate(run.model, prompt) == want


def test_bpe_without_the_tokenizers_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    task = make_task("classify", data=str(write(tmp_path / "r.csv", reviews())), tokenizer="bpe")
    with pytest.raises(UserError, match=r"pip install 'seqarena\[bpe\]'"):
        task.wrap(TinyGRU(16))


def test_bad_settings_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="needs data=FILE"):
        make_task("classify")
    with pytest.raises(ConfigError, match="tokenizer must be one of char, bpe"):
        make_task("classify", data="x.csv", tokenizer="words")
    with pytest.raises(ConfigError, match="vocab_size must exceed 260"):
        make_task("classify", data="x.csv", tokenizer="bpe", vocab_size=100)


@pytest.mark.parametrize("content, message", [
    (b"text,label\nfine,pos\n", "has no column 'tag'; its columns are: text, label"),
    (b"", "is empty"),
    (b"text,tag\n", "has a header but no rows"),
    (b"text,tag\n" + b"a,x\n" * 20, r"holds one class only \('x'\)"),
    (b"text,tag\nok,a\nok,b\nok,a\ncaf\xe9,b\n", r"r.csv:5: not UTF-8 \(byte 0xe9\)"),
    (b"text,tag\n" + b"a,x\n" * 5 + b"b,y\n" * 2, "class 'y' has 2 example"),
    (b"text,tag\n" + b"a,x\nb,y\n" * 5 + b"c, \n", r"r.csv:12: no label in column 'tag'"),
])
def test_bad_files_are_one_line_user_errors(tmp_path, content, message):
    path = tmp_path / "r.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as e:
        make_task("classify", data=str(path), label_column="tag").wrap(TinyGRU(16))
    assert "\n" not in str(e.value)


def test_bad_json_lines_name_their_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"r.jsonl:2: not JSON"):
        make_task("classify", data=str(path)).wrap(TinyGRU(16))


def test_resume_reads_the_saved_tokenizer_not_one_learnt_from_the_changed_file(tmp_path):
    from seqarena.training import checkpoint

    path = write(tmp_path / "r.csv", reviews(90))
    cfg = TrainConfig(model="gru", task="classify", seq_len=16, steps=4, d_model=16,
                      eval_every=0, checkpoint_every=2, keep_checkpoints=2,
                      out=str(tmp_path / "runs"), name="r", task_args={"data": str(path)},
                      threads=1)
    first = train(cfg)
    last = checkpoint.latest(first.run_dir / "checkpoints")
    last.state.unlink()
    last.weights.unlink()
    # new characters: a tokenizer learnt again would have another vocabulary, and the
    # checkpoint's embedding would not fit it
    write(path, reviews(90) + [("ÿ zebra quixotic", "pos")] * 3)
    resumed = train(cfg, resume=True)
    assert resumed.result.steps == 4
    assert resumed.task.tokenizer.vocab_size == first.task.tokenizer.vocab_size
    assert resumed.task.tokenizer.encode("ÿ z")[0] == tok.UNK
