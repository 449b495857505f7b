"""Generated tasks: reproducible under a seed, and labelled right by an independent solver."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqarena.errors import ConfigError
from seqarena.tasks import make_task
from seqarena.tasks.base import IGNORE

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

GENERATED = {"copy": {"seq_len": 30}, "adding": {"seq_len": 20},
             "selective-copy": {"seq_len": 24, "copy_len": 4},
             "mqar": {"seq_len": 24, "pairs": 4, "vocab": 32},
             "listops": {"seq_len": 48}, "dates": {}}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generator_is_deterministic_under_its_seed(name):
    def data(seed):
        task = make_task(name, seed=seed, eval_size=32, **GENERATED[name])
        return task.split_data("val") if name == "listops" else task.heldout("val")

    a, b, c = data(0), data(0), data(1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    task = make_task(name, eval_size=32, **GENERATED[name])
    val = task.split_data("val") if name == "listops" else task.heldout("val")
    test = task.split_data("test") if name == "listops" else task.heldout("test")
    assert not torch.equal(val.x, test.x)


def batch_of(name, n=200, **fields):
    task = make_task(name, **fields)
    return task, next(task.batches("train", n, seed=3))


def test_copy_targets_are_the_first_symbols_recalled_after_the_delimiter():
    task, b = batch_of("copy", seq_len=35)
    x, y, c, L = b.x.numpy(), b.y.numpy(), 10, 35
    delimiter = task.config.alphabet + 1
    for row_x, row_y in zip(x, y):
        (where,) = np.nonzero(row_x == delimiter)
        assert list(where) == [L - c - 1]  # Arjovsky's T = L - 2c blanks-and-delimiter
        assert row_x[:c].min() >= 1 and row_x[:c].max() <= task.config.alphabet
        assert not row_x[c:where[0]].any() and not row_x[where[0] + 1:].any()
        assert list(row_y[where[0] + 1:]) == list(row_x[:c])
        assert not row_y[:where[0] + 1].any()


def test_copy_delay_sets_the_length_and_must_agree_with_seq_len():
    assert make_task("copy", delay=100, seq_len=120).config.delay == 100
    with pytest.raises(ConfigError, match="set seq_len=120"):
        make_task("copy", delay=100, seq_len=64)


def test_copy_memoryless_baseline_is_the_cross_entropy_of_guessing():
    task, b = batch_of("copy", seq_len=40)
    L, c, a = 40, 10, task.config.alphabet
    # No memory: sure of the blanks; uniform over the symbols where a recall is due.
    logits = torch.full((len(b), L, a + 2), -1e9)
    logits[:, :L - c, 0] = 0.0
    logits[:, L - c:, 1:a + 1] = 0.0
    ce = F.cross_entropy(logits.flatten(0, 1), b.y.flatten()).item()
    base = task.baselines()
    assert math.isclose(base["memoryless_cross_entropy"], ce, rel_tol=1e-6)
    assert base["memoryless_accuracy"] == 1 / a


def test_adding_target_is_the_sum_of_the_two_marked_values():
    task, b = batch_of("adding", n=4000, seq_len=30)
    x, y = b.x.numpy(), b.y.numpy()
    values, markers = x[..., 0], x[..., 1]
    assert np.all(markers.sum(1) == 2) and set(np.unique(markers)) == {0.0, 1.0}
    assert np.all(markers[:, :15].sum(1) == 1)  # one marker in each half
    np.testing.assert_allclose(y, (values * markers).sum(1), rtol=1e-6)
    # Always answering 1 scores Var(U1 + U2) = 1/6.
    assert abs(np.mean((y - 1) ** 2) - task.baselines()["predict_one_mse"]) < 0.01


def test_selective_copy_targets_are_the_scattered_tokens_in_order():
    task, b = batch_of("selective-copy", seq_len=40, copy_len=6)
    cue = task.config.alphabet + 1
    for row_x, row_y in zip(b.x.tolist(), b.y.tolist()):
        memory, recall = row_x[:34], row_x[34:]
        assert recall == [cue] * 6
        tokens = [t for t in memory if t != 0]
        assert len(tokens) == 6 and row_y[34:] == tokens
        assert all(t == IGNORE for t in row_y[:34])
    positions = [tuple(np.nonzero(np.array(r[:34]))[0]) for r in b.x.tolist()]
    assert len(set(positions)) > 1  # the spacing varies: that is what makes it selective


def test_mqar_answers_match_a_brute_force_lookup_in_the_context():
    task, b = batch_of("mqar", seq_len=40, pairs=6, vocab=64)
    P = 6
    for row_x, row_y in zip(b.x.tolist(), b.y.tolist()):
        context = row_x[:2 * P]
        keys = context[0::2]
        assert len(set(keys)) == P and all(1 <= k < 32 for k in keys)
        assert all(32 <= v < 64 for v in context[1::2])
        queries = [t for t, target in enumerate(row_y) if target != IGNORE]
        assert len(queries) == P and min(queries) >= 2 * P
        assert sorted(row_x[t] for t in queries) == sorted(keys)  # each key asked once
        for t in queries:
            i = next(i for i in range(0, 2 * P, 2) if context[i] == row_x[t])
            assert row_y[t] == context[i + 1]
        rest = [row_x[t] for t in range(2 * P, 40) if t not in queries]
        assert not any(rest)  # everything else is noise


def test_mqar_needs_enough_keys_in_its_vocabulary():
    with pytest.raises(ConfigError, match="raise vocab to at least 34"):
        make_task("mqar", pairs=16, vocab=32, seq_len=64)
