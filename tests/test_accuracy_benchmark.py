"""benchmarks/accuracy.py end to end at a tiny budget: its table and its recall-against-state
rows come from the comparison's summary, and the state axis is each model's decoding state."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import accuracy  # noqa: E402


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("accuracy")
    suite = (accuracy.Entry("adding", 16, 8, 1, 0.01),
             accuracy.Entry("mqar", 16, 8, 2, 0.9, {"pairs": 2, "vocab": 16}))
    accuracy.run(suite, ("gru", "transformer"), (0,), out, threads=1, lr="3e-3")
    return out, json.loads((out / "accuracy.json").read_text())


def test_every_cell_is_the_summarys_metric_with_its_interval_and_rate(finished):
    out, doc = finished
    for entry in ("adding", "mqar"):
        summary = json.loads((out / f"{entry}-L16" / "summary.json").read_text())
        rows = summary["summary"]["rows"]
        assert {r["model"] for r in rows} == {"gru", "transformer"}
        for row in rows:
            cell = next(c for c in doc["table"] if c["model"] == row["model"])[f"{entry} L=16"]
            low, high = row["metric_ci"]
            assert cell.startswith(f"{row['metric']:.3g} [{low:.3g}, {high:.3g}] ")
            assert cell.endswith("(lr 0.003)")
            bar_cleared = row["metric"] >= 0.9 if entry == "mqar" else row["metric"] < 0.01
            assert ("solved" in cell.split("]")[1]) is bar_cleared


def test_the_recall_rows_carry_each_models_state_at_its_matched_width(finished):
    out, doc = finished
    recall = {r["model"]: r for r in doc["recall"]}
    runs = {r["model"]: r for r in doc["results"] if r["task"] == "mqar"}
    # the GRU carries its hidden vector per layer; the Transformer keys and values of 16 tokens
    assert recall["gru"]["state"] == 2 * runs["gru"]["d_model"]
    assert recall["transformer"]["state"] == 2 * 2 * 16 * runs["transformer"]["d_model"]
    for model, row in recall.items():
        assert row["accuracy"] == runs[model]["metric"] and row["d_model"] == runs[model]["d_model"]
    assert (out / "mqar_state.png").stat().st_size > 10_000
