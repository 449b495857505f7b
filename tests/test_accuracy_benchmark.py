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
            word = cell.split("] ")[1].split(" ")[0]
            assert word == ("no" if (high < 0.9 if entry == "mqar" else low >= 0.01) else
                            "solved" if (low >= 0.9 if entry == "mqar" else high < 0.01) else
                            "unclear")


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


@pytest.mark.parametrize("higher, metric, ci, word", [
    (True, 0.95, [0.91, 0.98], "solved"), (True, 0.95, [0.85, 0.98], "unclear"),
    (True, 0.5, [0.4, 0.6], "no"), (True, 0.9, None, "solved"),
    (False, 0.004, [0.002, 0.008], "solved"), (False, 0.004, [1e-4, 0.05], "unclear"),
    (False, 0.05, [0.01, 0.09], "no"), (False, None, None, "no")])
def test_solved_only_when_the_whole_interval_clears_the_bar(higher, metric, ci, word):
    entry = accuracy.Entry("mqar" if higher else "adding", 64, 10, 1, 0.9 if higher else 0.01)
    assert accuracy.solved(entry, metric, ci, higher) == word
