"""series-classify: UCR/UEA TSV files, NaN padding and z-normalisation against numpy."""

import math

import numpy as np
import pytest
import torch
from test_tasks_backbones import TinyGRU

from seqarena.errors import UserError
from seqarena.tasks import make_task

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def write_ucr(path, series, labels):
    """One line per series: the label, then the values, NaN after a shorter series' end."""
    width = max(map(len, series))
    lines = ["\t".join([str(y)] + [repr(float(v)) for v in s] + ["NaN"] * (width - len(s)))
             for s, y in zip(series, labels)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def dataset(tmp_path, n_train=40, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    parts = {}
    for part, n in (("TRAIN", n_train), ("TEST", n_test)):
        series = [rng.normal(5 * (i % 2), 1 + i % 3, rng.integers(5, 13)) for i in range(n)]
        labels = [(i % 2) * 2 - 1 for i in range(n)]  # the archive's -1 / 1 labels
        write_ucr(tmp_path / f"Toy_{part}.tsv", series, labels)
        parts[part] = (series, labels)
    return parts


def test_padding_and_z_normalisation_match_numpy(tmp_path):
    parts = dataset(tmp_path)
    task = make_task("series-classify", data=str(tmp_path), seq_len=16)
    batch = task.split_data("test")
    series, labels = parts["TEST"]
    assert task.classes == ["-1", "1"]
    assert [task.classes[int(y)] for y in batch.y] == [str(y) for y in labels]
    for i, s in enumerate(series):
        z = (s - s.mean()) / s.std()
        assert batch.mask[i].sum() == len(s)
        np.testing.assert_allclose(batch.x[i, :len(s), 0].numpy(), z, rtol=1e-5, atol=1e-6)
        assert (batch.x[i, len(s):] == 0).all()
    raw = make_task("series-classify", data=str(tmp_path), seq_len=16, normalize=False)
    np.testing.assert_allclose(raw.split_data("test").x[0, :len(series[0]), 0].numpy(),
                               series[0], rtol=1e-6)


def test_validation_is_a_stratified_tenth_of_train_and_long_series_are_cut(tmp_path):
    parts = dataset(tmp_path)
    task = make_task("series-classify", data=str(tmp_path / "Toy_TRAIN.tsv"), seq_len=8)
    val, train_ = task.split_data("val"), task.split_data("train")
    assert len(val) == 4 and len(train_) == 36 and sorted(val.y.tolist()) == [0, 0, 1, 1]
    lengths = [len(s) for part in parts.values() for s in part[0]]
    assert task.truncated() == sum(n > 8 for n in lengths)
    assert train_.x.shape == (36, 8, 1)


def test_a_missing_value_inside_a_series_is_interpolated_and_a_constant_series_is_zero(tmp_path):
    write_ucr(tmp_path / "M_TRAIN.tsv", [[1, 2, math.nan, 4, 5, 6], [3, 3, 3]] * 10, [1, 2] * 10)
    write_ucr(tmp_path / "M_TEST.tsv", [[1, 2, math.nan, 4, 5, 6], [3, 3, 3]], [1, 2])
    test = make_task("series-classify", data=str(tmp_path), seq_len=6).split_data("test")
    s = np.array([1, 2, 3, 4, 5, 6.0])
    np.testing.assert_allclose(test.x[0, :, 0].numpy(), (s - s.mean()) / s.std(), rtol=1e-6)
    assert (test.x[1] == 0).all() and test.mask[1].tolist() == [True] * 3 + [False] * 3


def test_a_model_trains_on_it(tmp_path):
    dataset(tmp_path)
    task = make_task("series-classify", data=str(tmp_path), seq_len=12)
    model = task.wrap(TinyGRU(8))
    loss = task.loss(model(next(task.batches("train", 8))), next(task.batches("train", 8)))
    assert torch.isfinite(loss)
    metrics = task.evaluate(model, "test")
    assert set(metrics) == {"accuracy", "macro_f1", "cross_entropy"}
    assert task.baselines()["majority_accuracy"] == 0.5
    # the same model's predictions, scored by scikit-learn
    from sklearn.metrics import accuracy_score, f1_score

    test = task.split_data("test")
    model.eval()
    with torch.no_grad():
        predicted = model(test).argmax(-1).numpy()
    truth = test.y.numpy()
    assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert metrics["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))


@pytest.mark.parametrize("train, test, message", [
    ("1\t0.5\t0.7\n2\t0.1\tabc\n", "1\t1\t2\n", r"X_TRAIN.tsv:2: column 3 holds 'abc', not a number"),
    ("1\t1\t2\t3\n2\t1\t2\t3\n", "1\t1\t2\n", r"X_TEST.tsv: series of 2 values, .* has 3"),
    ("1\t1\t2\t3\n2\t1\t2\n", "1\t1\t2\t3\n", r"X_TRAIN.tsv:2: 2 values, line 1 has 3"),
    ("1\t1\t2\n1\t2\t3\n", "1\t1\t2\n", r"holds one class only"),
    ("", "1\t1\n", "is empty"),
])
def test_bad_ucr_files_are_one_line_user_errors(tmp_path, train, test, message):
    (tmp_path / "X_TRAIN.tsv").write_text(train, encoding="utf-8")
    (tmp_path / "X_TEST.tsv").write_text(test, encoding="utf-8")
    with pytest.raises(UserError, match=message) as e:
        make_task("series-classify", data=str(tmp_path)).wrap(TinyGRU(8))
    assert "\n" not in str(e.value)
