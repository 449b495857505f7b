"""ListOps: labels checked by a separate evaluator of LRA's text; LRA's files read and written."""

import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from seqarena.errors import ConfigError, UserError
from seqarena.tasks import make_task
from seqarena.tasks.listops import TOKENS, encode, generate, write_tsv

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

FIXTURE = Path(__file__).parent / "data" / "listops"
OPS = {"[MAX": max, "[MIN": min, "[MED": lambda a: int(statistics.median(a)),
       "[SM": lambda a: sum(a) % 10}


def solve(source: str) -> tuple[int, int, int]:
    """(value, tokens without parentheses, deepest operator nesting) of an LRA expression, by a
    stack machine that shares nothing with the task's code."""
    stack, depth, deepest, tokens = [], 0, 0, 0
    for token in source.split():
        if token in "()":
            continue
        tokens += 1
        if token in OPS:
            stack.append(token)
            depth += 1
            deepest = max(deepest, depth)
        elif token == "]":
            args = []
            while stack[-1] not in OPS:
                args.append(stack.pop())
            stack.append(OPS[stack.pop()](args[::-1]))
            depth -= 1
        else:
            stack.append(int(token))
    assert len(stack) == 1
    return stack[0], tokens, deepest


def test_the_lra_example_reads_as_max_of_2_and_9():
    ids = encode("( ( ( [MAX 2 ) 9 ) ] )")
    assert [TOKENS[i] for i in ids] == ["[MAX", "2", "9", "]"]
    assert solve("( ( ( [MAX 2 ) 9 ) ] )") == (9, 4, 1)


def test_generated_labels_lengths_and_depth_match_an_independent_evaluator():
    rng = np.random.default_rng(0)
    rows = generate(300, rng, min_length=10, max_length=80, max_depth=4, max_args=5)
    for source, target in rows:
        val, tokens, deepest = solve(source)
        assert target == val
        assert 10 < tokens < 80 and deepest <= 3  # LRA: operators only above max_depth
        assert len(encode(source)) == tokens
    assert len({t for _, t in rows}) == 10  # every class occurs


def test_generator_defaults_to_lra_lengths_at_seq_len_2000():
    task = make_task("listops")
    assert task.config.seq_len == 2000 and task.config.length_bounds == (500, 2000)
    assert make_task("listops", seq_len=100).config.length_bounds == (25, 101)


def test_lra_fixture_files_load_with_right_labels_and_masks():
    task = make_task("listops", data_dir=str(FIXTURE), seq_len=32)
    val = next(task.batches("val", 8))
    sources = [line.split("\t")[0] for line in
               (FIXTURE / "basic_val.tsv").read_text().splitlines()[1:]]
    assert val.y.tolist() == [solve(s)[0] for s in sources] == [5, 7, 4]
    assert val.mask.sum(1).tolist() == [solve(s)[1] for s in sources] == [6, 12, 23]
    assert val.x.shape == (3, 32) and not val.x[~val.mask].any()
    train = next(task.batches("train", 4, seed=0))
    assert train.x.shape == (4, 32) and train.x.dtype == torch.long


def test_lra_fixture_tokens_are_read_without_parentheses():
    task = make_task("listops", data_dir=str(FIXTURE), seq_len=32)
    first = task.collate(task.split_data("val").select(slice(0, 1)))
    assert [TOKENS[i] for i in first.x[0, :7]] == ["[MED", "2", "9", "4", "7", "]"] + ["<pad>"]


def test_generated_data_written_as_lra_tsv_reads_back_identically(tmp_path):
    task = make_task("listops", seq_len=64, eval_size=20, seed=5)
    rng = np.random.default_rng(1)
    rows = {split: generate(20, rng, 8, 65) for split in ("train", "val", "test")}
    for split, split_rows in rows.items():
        write_tsv(tmp_path / f"basic_{split}.tsv", split_rows)
    loaded = make_task("listops", data_dir=str(tmp_path), seq_len=64, eval_size=20)
    val = next(loaded.batches("val", 64))
    assert val.y.tolist() == [t for _, t in rows["val"]]
    for row, (source, _) in zip(val.x, rows["val"]):
        ids = encode(source)
        assert row[:len(ids)].tolist() == ids.tolist() and not row[len(ids):].any()
    assert task.config.seq_len == loaded.config.seq_len


def test_expressions_longer_than_seq_len_are_rejected_and_counted():
    task = make_task("listops", data_dir=str(FIXTURE), seq_len=12)
    val = task.split_data("val")
    assert val.y.tolist() == [5, 7]  # the 23-token expression is left out, not cut
    assert task.describe()["rejected_longer_than_seq_len"] == {"val": 1}
    with pytest.raises(ConfigError, match="shortest has 6 tokens"):
        make_task("listops", data_dir=str(FIXTURE), seq_len=5).split_data("val")


def test_lra_dir_missing_a_split_is_a_user_error(tmp_path):
    for name in ("basic_train.tsv", "basic_val.tsv"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    with pytest.raises(UserError, match="lacks basic_test.tsv"):
        make_task("listops", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="not a directory"):
        make_task("listops", data_dir=str(tmp_path / "nowhere"))


def test_malformed_lra_rows_are_user_errors_naming_the_line(tmp_path):
    for name in ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    (tmp_path / "basic_val.tsv").write_text("Source\tTarget\n( [MAX 2 ] )\t2\n( [MAX 12 ] )\t2\n")
    with pytest.raises(UserError, match=r"basic_val.tsv:3: not a ListOps row"):
        make_task("listops", data_dir=str(tmp_path), seq_len=16).split_data("val")
    (tmp_path / "basic_val.tsv").write_text("text\tlabel\n( [MAX 2 ] )\t2\n")
    with pytest.raises(UserError, match="first line must be"):
        make_task("listops", data_dir=str(tmp_path), seq_len=16).split_data("val")
