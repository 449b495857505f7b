"""The Chomsky-hierarchy tasks: every label against an independent solver, the length protocol
(one training length per batch, every test length held out), chance levels and seeding."""

import math

import numpy as np
import pytest
import torch
from test_tasks_backbones import TinyBiGRU, TinyGRU

from seqarena.errors import ConfigError
from seqarena.tasks import TASKS, make_task

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

NAMES = ["parity", "even-pairs", "cycle-navigation", "modular-arithmetic", "reverse-string",
         "stack-manipulation", "duplicate-string", "binary-addition"]
SMALL = {"test_lens": "41-60", "test_per_length": 3, "test_lengths_step": 7}  # 41, 48, 55, 60


# --- independent solvers: plain Python over the decoded strings ------------------------------

def parity(w):
    return w.count(1) % 2


def even_pairs(w):
    pairs = sum(1 for a, b in zip(w, w[1:]) if (a, b) in ((0, 1), (1, 0)))
    return pairs % 2


def cycle_navigation(moves):
    position = 0
    for m in moves:
        position = (position + {0: -1, 1: 0, 2: +1}[m]) % 5
    return position


def modular_arithmetic(tokens):
    text = "".join("01234+-*"[t] for t in tokens)
    return eval(text) % 5  # Python's own parser: * binds tighter, % 5 of a negative is >= 0


def reverse_string(w):
    return w[::-1]


def stack_manipulation(tokens):
    stack, n = [], len(tokens)
    if n == 1:
        return [tokens[0], 2] + [0] * (n + 1 - 2)
    actions_start = next(i for i, t in enumerate(tokens) if t >= 2) if any(
        t >= 2 for t in tokens) else n
    stack = list(tokens[:actions_start])
    for t in tokens[actions_start:]:
        if t == 2:
            if stack:
                del stack[-1]
        else:
            stack += [t - 3]
    out = list(reversed(stack)) + [2]
    return out + [0] * (n + 1 - len(out))


def duplicate_string(w):
    return w + w


def binary_addition(tokens):
    n = len(tokens)
    if n <= 2:  # one number asked back, without its high zeros
        digits = tokens[:]
        while len(digits) > 1 and digits[-1] == 0:
            digits.pop()
        return digits + [2] + [0] * (n - len(digits))
    plus = tokens.index(2)
    a, b = tokens[:plus], tokens[plus + 1:]
    assert a and b and any(a) and any(b)  # each operand has a digit and a nonzero value
    # schoolbook ripple carry, least significant bit first
    out, carry = [], 0
    for i in range(max(len(a), len(b))):
        s = (a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) + carry
        out.append(s % 2)
        carry = s // 2
    if carry:
        out.append(1)
    while len(out) > 1 and out[-1] == 0:
        out.pop()
    return out + [2] + [0] * (n - len(out))


SOLVERS = {"parity": parity, "even-pairs": even_pairs, "cycle-navigation": cycle_navigation,
           "modular-arithmetic": modular_arithmetic, "reverse-string": reverse_string,
           "stack-manipulation": stack_manipulation, "duplicate-string": duplicate_string,
           "binary-addition": binary_addition}


def decoded(task, batch):
    """(input tokens, expected output) of every example, read off the batch's x and y."""
    query = task.input_vocab
    for x, y in zip(batch.x.tolist(), batch.y.tolist()):
        n = sum(1 for t in x if t != query)  # inputs come first, then the query tokens only
        assert all(t == query for t in x[n:])
        yield x[:n], (y if isinstance(y, int) else y[n:])


@pytest.mark.parametrize("name", NAMES)
def test_labels_match_an_independent_solver_at_train_and_test_lengths(name):
    task = make_task(name, **SMALL)
    rng = np.random.default_rng(1)
    batches = [task.sample(16, rng, length) for length in (1, 2, 3, 4, 5, 17, 40)]
    batches += [next(task.batches("test", 1000))]
    checked = 0
    for batch in batches:
        for inputs, expected in decoded(task, batch):
            assert SOLVERS[name](inputs) == expected, (inputs, expected)
            checked += 1
    assert checked == 7 * 16 + 3


def test_even_pairs_is_first_bit_differs_from_last():
    task = make_task("even-pairs", **SMALL)
    for inputs, label in decoded(task, task.sample(200, np.random.default_rng(0), 30)):
        assert label == int(inputs[0] != inputs[-1])


def test_output_lengths_follow_the_repo():
    n = 12
    want = {"parity": 1, "even-pairs": 1, "cycle-navigation": 1, "modular-arithmetic": 1,
            "reverse-string": n, "stack-manipulation": n + 1, "duplicate-string": 2 * n,
            "binary-addition": n + 1}
    for name in NAMES:
        task = make_task(name, **SMALL)
        batch = task.sample(2, np.random.default_rng(0), n)
        n_in = n - 1 if name == "modular-arithmetic" else n  # an even length loses a token
        assert batch.x.shape[1] == n_in + want[name], name
        assert (batch.extra["length"] == n).all()  # the length asked for, the curve's x axis


@pytest.mark.parametrize("name", ["parity", "reverse-string", "binary-addition"])
def test_each_training_batch_has_one_length_drawn_from_the_train_range(name):
    task = make_task(name, train_lens="3-6", **SMALL)
    stream = task.batches("train", 4, seed=0)
    seen = set()
    for _ in range(80):
        batch = next(stream)
        lengths = set(batch.extra["length"].tolist())
        assert len(lengths) == 1 and batch.mask is None  # one length: no padding
        seen |= lengths
    assert seen == {3, 4, 5, 6}


@pytest.mark.parametrize("name", ["cycle-navigation", "duplicate-string"])
def test_held_out_splits_cover_every_stated_test_length_in_order(name):
    task = make_task(name, **SMALL)
    assert task.config.test_lengths() == [41, 48, 55, 60]  # every 7th, and the range's end
    for split in ("val", "test"):
        lengths = task.example_lengths(split)
        assert lengths.tolist() == [n for n in (41, 48, 55, 60) for _ in range(3)]
        served = torch.cat([b.extra["length"] for b in task.batches(split, 2)])
        assert served.tolist() == lengths.tolist()  # the order evaluate_examples scores them
        whole = task.heldout(split)
        assert whole.extra["length"].tolist() == lengths.tolist()
        assert whole.mask.sum(1).tolist() == [n + task.config.output_length(n) for n in lengths]
    assert not torch.equal(task.heldout("val").x, task.heldout("test").x)


def test_per_example_scores_line_up_with_example_lengths():
    torch.manual_seed(0)
    for name in ("parity", "stack-manipulation"):
        task = make_task(name, **SMALL)
        scores = task.evaluate_examples(task.wrap(TinyGRU(16)), "test", batch_size=5)
        assert len(scores) == len(task.example_lengths("test")) == 12
        assert 0.0 <= scores.metrics()["accuracy"] <= 1.0


def test_accuracy_stops_at_the_termination_token_and_loss_covers_every_output():
    task = make_task("stack-manipulation", **SMALL)
    batch = task.sample(64, np.random.default_rng(0), 10)
    keep = task.scored(batch.y)
    for y, k in zip(batch.y.tolist(), keep.tolist()):
        out = [t for t in y if t != -100]
        scored = [t for t, use in zip(y, k) if use]
        assert scored == out[:out.index(2) + 1]  # up to and including the first END


def test_chance_levels_and_chomsky_levels_are_declared():
    want = {"parity": ("regular", 1 / 2), "even-pairs": ("regular", 1 / 2),
            "cycle-navigation": ("regular", 1 / 5), "modular-arithmetic": ("regular", 1 / 5),
            "reverse-string": ("context-free", 1 / 2),
            "stack-manipulation": ("context-free", 1 / 3),
            "duplicate-string": ("context-sensitive", 1 / 2),
            "binary-addition": ("context-sensitive", 1 / 3)}
    for name, (level, chance) in want.items():
        cls = TASKS.get(name)
        assert (cls.chomsky, cls.chance_accuracy) == (level, chance)
        assert cls.chance_accuracy == 1 / cls.n_classes
        assert make_task(name, **SMALL).baselines() == {"chance_accuracy": chance}
    # the classes of the regular tasks are balanced at long lengths, so chance is the floor
    for name in ("parity", "even-pairs", "cycle-navigation"):
        task = make_task(name, **SMALL)
        y = task.sample(4000, np.random.default_rng(0), 100).y
        freq = torch.bincount(y).double() / len(y)
        assert (freq - task.chance_accuracy).abs().max() < 0.03, (name, freq)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_data_other_seed_other_data(name):
    a, b = make_task(name, seed=3, **SMALL), make_task(name, seed=3, **SMALL)
    for _ in range(3):
        ba, bb = next(a.batches("train", 8, seed=1)), next(b.batches("train", 8, seed=1))
        assert torch.equal(ba.x, bb.x) and torch.equal(ba.y, bb.y)
    assert torch.equal(a.heldout("test").x, b.heldout("test").x)
    other = make_task(name, seed=4, **SMALL)
    assert not torch.equal(a.heldout("test").x, other.heldout("test").x)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_models_train_a_step_and_score_every_length(name):
    torch.manual_seed(0)
    task = make_task(name, **SMALL)
    for backbone in (TinyGRU(16), TinyBiGRU(16)):
        model = task.wrap(backbone)
        batch = next(task.batches("train", 8))
        loss = task.loss(model(batch), batch)
        loss.backward()
        assert torch.isfinite(loss)
        metrics = task.evaluate(model, "val", batch_size=4)
        assert all(math.isfinite(v) for v in metrics.values()), metrics


def test_seq_len_is_derived_from_the_longest_example_and_checked():
    assert make_task("parity").config.seq_len == 501  # 500 inputs and the query
    assert make_task("duplicate-string").config.seq_len == 1500  # 500 inputs, 1000 queries
    assert make_task("binary-addition", test_lens="5-20").config.seq_len == 40 + 41
    assert make_task("reverse-string", seq_len=2000).config.seq_len == 2000
    with pytest.raises(ConfigError, match="seq_len=1000") as e:
        make_task("reverse-string", seq_len=64)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fields, field", [({"train_lens": "40-1"}, "train_lens"),
                                           ({"test_lens": "0-5"}, "test_lens"),
                                           ({"test_lens": "long"}, "test_lens"),
                                           ({"test_per_length": 0}, "test_per_length")])
def test_bad_length_fields_are_one_line_config_errors_naming_the_field(fields, field):
    with pytest.raises(ConfigError, match=field) as e:
        make_task("parity", **fields)
    assert "\n" not in str(e.value)


def test_trained_short_and_scored_long_through_seqarena_compare(tmp_path):
    """The documented command: train on lengths 1-8, score every test length 9-30 and say each
    length's accuracy; variants of one model (model@key=value) stand side by side."""
    from seqarena.cli import main
    from seqarena.results import Summary, read_results

    out = tmp_path / "cmp"
    with pytest.raises(SystemExit) as e:
        main(["compare", "--task", "parity", "--models", "mingru,mingru@negative_eigen=true",
              "--seq-lens", "31", "--steps", "20", "--lr", "3e-3", "--d-model", "8",
              "--batch-size", "8", "--threads", "1", "--task-arg", "train_lens=1-8",
              "--task-arg", "test_lens=9-30", "--task-arg", "test_lengths_step=7",
              "--task-arg", "test_per_length=4", "--out", str(out)])
    assert e.value.code == 0
    doc = read_results(out / "summary.json")
    summary = Summary.from_dict(doc["summary"])
    assert summary.trained_lengths == [1, 8]
    assert [r.model for r in summary.rows] == ["mingru", "mingru@negative_eigen=true"]
    assert {r.model_args.get("negative_eigen") for r in doc["results"]} == {None, True}
    for row, result in zip(summary.rows, doc["results"]):
        assert [n for n, *_ in row.by_length] == [9, 16, 23, 30]
        assert result.example_lengths == [n for n in (9, 16, 23, 30) for _ in range(4)]
        # each length's accuracy is its 4 examples' mean; the score is the mean over lengths
        right = np.asarray(result.examples["totals"]["accuracy"])
        for n, value, low, high in row.by_length:
            at = [i for i, m in enumerate(result.example_lengths) if m == n]
            assert value == pytest.approx(right[at].mean()) and low <= value <= high
        assert row.metric == pytest.approx(np.mean([v for _, v, _, _ in row.by_length]))
    page = (out / "report.html").read_text()
    assert 'id="fig-compare_parity_by_length"' in page
