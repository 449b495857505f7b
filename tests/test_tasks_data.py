"""Tasks on real data (text, digits, series) and the seed demos."""

import math

import numpy as np
import pytest
import torch
from test_tasks_backbones import TinyGRU

from seqarena.errors import ConfigError, UserError
from seqarena.tasks import Batch, make_task
from seqarena.tasks.text import read_text

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# --- text-lm -------------------------------------------------------------------------------


def test_text_lm_reads_pythons_docs_and_keeps_their_vocabulary_in_the_config():
    task = make_task("text-lm", seq_len=32)
    text = read_text("")
    assert len(text) > 100_000
    assert task.vocab_size == len(set(text))  # the text is read on first use
    assert task.config.vocab == "".join(sorted(set(text)))
    assert task.describe()["params"]["vocab"] == task.config.vocab
    batch = next(task.batches("train", 4, seed=0))
    assert torch.equal(batch.x[:, 1:], batch.y[:, :-1])  # targets are the next characters
    assert task.decode(batch.x[0].tolist()) in text


def test_text_lm_windows_come_from_their_split_of_the_text(tmp_path):
    path = tmp_path / "t.txt"
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(4000))
    path.write_text(text, encoding="utf-8")
    task = make_task("text-lm", text=str(path), seq_len=16, eval_size=1000)
    val = torch.cat([b.x for b in task.batches("val", 64)])
    region = text[3600:3800]  # 90% to 95%
    assert len(val) == 200 // 17  # non-overlapping windows of seq_len + 1
    for i, row in enumerate(val):
        assert task.decode(row.tolist()) == region[17 * i:17 * i + 16]


def test_text_lm_bad_files_are_one_line_user_errors(tmp_path):
    empty, latin1, short = tmp_path / "empty.txt", tmp_path / "latin1.txt", tmp_path / "s.txt"
    empty.write_text("")
    latin1.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    short.write_text("just a few words")
    for path, message in [(empty, "is empty"), (latin1, r"latin1.txt:1: not UTF-8 \(byte 0xe9\)"),
                          (tmp_path / "missing.txt", "does not exist")]:
        with pytest.raises(UserError, match=message) as e:
            make_task("text-lm", text=str(path)).wrap(TinyGRU(16))
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="at least"):
        next(make_task("text-lm", text=str(short), seq_len=8).batches("train", 2))


def test_text_lm_generates_with_step_and_greedy_matches_full_recomputation():
    torch.manual_seed(0)
    task = make_task("text-lm", seq_len=32)
    model = task.wrap(TinyGRU(16)).eval()
    calls = {"step": 0, "forward": 0}
    step, forward = model.backbone.step, model.backbone.forward

    def counting_step(*a):
        calls["step"] += 1
        return step(*a)

    def counting_forward(*a, **k):
        calls["forward"] += 1
        return forward(*a, **k)

    model.backbone.step, model.backbone.forward = counting_step, counting_forward
    out = task.generate(model, "def ", max_new_tokens=12, temperature=0)
    assert calls == {"step": 4 + 12 - 1, "forward": 0}  # the prefix is never re-run

    # Reference: re-run the whole sequence for every new character and take the argmax.
    ids = task.encode("def ")
    for _ in range(12):
        logits = model(Batch(ids[None], ids[None]))  # (1, L, V)
        ids = torch.cat([ids, logits[0, -1].argmax()[None]])
    assert out == task.decode(ids.tolist())


def test_text_lm_sampling_is_seeded_and_needs_only_the_stored_vocabulary():
    torch.manual_seed(0)
    trained = make_task("text-lm", seq_len=32)
    saved = trained.decode(list(range(trained.vocab_size)))  # its vocabulary, read from the text
    task = make_task("text-lm", seq_len=32, text="/no/such/file.txt", vocab=saved)
    model = task.wrap(TinyGRU(16))
    a = task.generate(model, "x = ", 20, temperature=1.0, seed=1)
    assert a == task.generate(model, "x = ", 20, temperature=1.0, seed=1)
    assert a != task.generate(model, "x = ", 20, temperature=1.0, seed=2)
    assert a.startswith("x = ") and len(a) == 24 and set(a) <= set(saved)
    with pytest.raises(UserError, match="not in the vocabulary"):
        task.generate(model, "\u2603", 3)


def test_text_lm_baselines_are_unigram_and_uniform_bits():
    task = make_task("text-lm", seq_len=32)
    base = task.baselines()
    assert base["uniform_bpc"] == math.log2(len(task.config.vocab))
    counts = np.bincount(task.ids("train").numpy())
    p = counts[counts > 0] / counts.sum()
    assert math.isclose(base["unigram_bpc"], float(-(p * np.log2(p)).sum()), rel_tol=1e-9)


# --- digits-seq ----------------------------------------------------------------------------


def test_digits_are_64_step_pixel_sequences_in_a_fixed_disjoint_split():
    from sklearn.datasets import load_digits

    digits = load_digits()
    a, b = make_task("digits-seq", seed=0), make_task("digits-seq", seed=7)
    sizes = {s: len(a.split_data(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 1197, "val": 300, "test": 300}
    for split in ("train", "val", "test"):
        assert torch.equal(a.split_data(split).x, b.split_data(split).x)  # seed-independent
    rows = torch.cat([a.split_data(s).x[..., 0] for s in ("train", "val", "test")]) * 16
    images = {tuple(r) for r in digits.data.tolist()}
    assert {tuple(r) for r in rows.round().tolist()} == images  # every image, once per split
    train = {tuple(r) for r in a.split_data("train").x[..., 0].tolist()}
    assert not train & {tuple(r) for r in a.split_data("test").x[..., 0].tolist()}


def test_digits_longer_seq_len_pads_with_a_mask():
    batch = next(make_task("digits-seq", seq_len=70).batches("val", 5))
    assert batch.x.shape == (5, 70, 1) and batch.mask[:, :64].all() and not batch.mask[:, 64:].any()


# --- forecast ------------------------------------------------------------------------------


def test_co2_gaps_are_interpolated_and_windows_are_normalised_with_train_statistics():
    from statsmodels.datasets import co2

    raw = co2.load_pandas().data["co2"]
    task = make_task("forecast", series="co2", seq_len=60, horizon=3)
    filled = raw.interpolate(method="linear").bfill().to_numpy()
    np.testing.assert_allclose(task.values, filled)
    n_train = int(0.7 * len(raw))
    assert math.isclose(task.mean, filled[:n_train].mean()) and not np.isnan(task.values).any()
    val = task.split_data("val")
    first = n_train  # the first val window's first target
    np.testing.assert_allclose(val.x[0, :, 0].numpy() * task.std + task.mean,
                               filled[first - 60:first], rtol=1e-5)
    np.testing.assert_allclose(val.y[0].numpy() * task.std + task.mean,
                               filled[first:first + 3], rtol=1e-5)


def test_forecast_seasonal_naive_baseline_matches_a_direct_computation():
    task = make_task("forecast", series="sunspots", seq_len=20, horizon=13)
    values, m = task.values, 11
    first, end = task.bounds["val"]
    errors = [values[t + j - m * math.ceil((j + 1) / m)] - values[t + j]
              for t in range(first, end - 13 + 1) for j in range(13)]
    base = task.baselines()
    assert math.isclose(base["seasonal_naive_mae"], np.mean(np.abs(errors)), rel_tol=1e-5)
    assert math.isclose(base["seasonal_naive_rmse"], math.sqrt(np.mean(np.square(errors))),
                        rel_tol=1e-5)
    metrics = task.evaluate(task.wrap(TinyGRU(16)), "val")
    assert set(metrics) == {"mae", "rmse", "seasonal_naive_mae", "seasonal_naive_rmse"}
    assert math.isclose(metrics["seasonal_naive_mae"], base["seasonal_naive_mae"], rel_tol=1e-5)


def test_forecast_reads_a_csv_column_and_explains_a_missing_one(tmp_path):
    path = tmp_path / "sales.csv"
    rows = ["day,units,price"] + [f"{i},{'' if i == 5 else 10 + i % 7},{i}" for i in range(300)]
    path.write_text("\n".join(rows) + "\n")
    task = make_task("forecast", csv=str(path), column="units", seq_len=14)
    assert task.values[5] == (10 + 4 + 10 + 6) / 2  # the blank, interpolated
    assert task.config.season_length == 1
    with pytest.raises(UserError, match="no column .sales.; its columns are: day, units, price"):
        make_task("forecast", csv=str(path), column="sales")
    path.write_text("day,units\n1,3\n2,many\n")
    with pytest.raises(UserError, match=r"sales.csv:3: column 'units' holds 'many'"):
        make_task("forecast", csv=str(path), column="units")


def test_forecast_rejects_unknown_series_and_windows_that_do_not_fit():
    with pytest.raises(ConfigError, match="co2, sunspots"):
        make_task("forecast", series="tides")
    with pytest.raises(ConfigError, match="holds no window"):
        make_task("forecast", series="sunspots", seq_len=250)


# --- seed demos ----------------------------------------------------------------------------


def test_seed_demos_report_train_and_held_out_metrics_beside_chance():
    task = make_task("seed-demo-classify", train_size=60, eval_size=60)
    metrics = task.evaluate(task.wrap(TinyGRU(16)), "val")
    assert {"accuracy", "train_accuracy", "cross_entropy", "train_cross_entropy"} <= set(metrics)
    assert task.baselines() == {"chance_accuracy": 0.2, "chance_cross_entropy": math.log(5)}
    x = task.split_data("train").x
    assert x.shape == (60, 20) and x.min() >= 0 and x.max() < 10
    regress = make_task("seed-demo-regress", train_size=60, eval_size=60)
    assert regress.split_data("val").x.shape == (60, 4, 10)
    assert {"mse", "train_mse"} <= set(regress.evaluate(regress.wrap(TinyGRU(16)), "test"))


def test_seed_demo_training_memorises_without_generalising():
    torch.manual_seed(0)
    task = make_task("seed-demo-classify", train_size=64, eval_size=400)
    model = task.wrap(TinyGRU(32))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = task.batches("train", 64, seed=0)
    for _ in range(150):
        batch = next(batches)
        loss = task.loss(model(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    metrics = task.evaluate(model, "val")
    assert metrics["train_accuracy"] > 0.9  # the training labels are learnt by heart ...
    assert metrics["accuracy"] < 0.3  # ... and held-out labels stay at chance (0.2)
