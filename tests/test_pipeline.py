"""After training, data flows one way: a complete RunResult -> the comparison's Summary -> the
renderers. Producers never import the report, and nothing patches a result after train()."""

import ast
import dataclasses
from pathlib import Path

import pytest

from seqarena.config import TrainConfig
from seqarena.experiment.executor import RunSpec, execute
from seqarena.training.train import train

SRC = Path(__file__).resolve().parents[1] / "src" / "seqarena"
PRODUCERS = ("experiment", "training", "bench", "analysis", "tasks", "models")


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("package", PRODUCERS)
def test_no_producer_imports_the_report(package):
    offenders = [str(p.relative_to(SRC)) for p in (SRC / package).rglob("*.py")
                 if any(m == "seqarena.report" or m.startswith("seqarena.report.")
                        for m in imported_modules(p))]
    assert offenders == []


def tiny(tmp_path, **fields):
    return TrainConfig(**{"model": "gru", "task": "seed-demo-classify", "seq_len": 8, "steps": 4,
                          "d_model": 8, "batch_size": 8, "eval_every": 2, "threads": 1,
                          "checkpoint_every": 0, "out": str(tmp_path), "name": "r",
                          "task_args": {"train_size": 32, "eval_size": 16}, **fields})


def test_a_run_result_is_complete_when_train_returns_and_cannot_be_patched(tmp_path):
    result = execute(RunSpec(dataclasses.asdict(tiny(tmp_path, lr_tuned=True, log_every=1))))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.lr_tuned = False  # type: ignore[misc]
    assert result.lr_tuned  # carried by the config, not set by the comparison
    windows = [h["tokens_per_s"] for h in result.history if "tokens_per_s" in h][1:]
    # the figure and its spread come from the same windows, the first one left out
    low, high = result.train_tokens_per_s_spread
    assert low <= result.train_tokens_per_s <= high and len(windows) == 3
    assert len(result.examples["counts"]["accuracy"]) == 16  # every test example's sums
    assert [e["step"] for e in result.eval_examples] == [2, 4]


def test_the_demo_tasks_record_their_training_metrics_beside_the_held_out_ones(tmp_path):
    """Their point is the gap between memorising the training set and the held-out set."""
    result = train(tiny(tmp_path)).result
    assert {"test_train_accuracy", "test_accuracy"} <= set(result.metrics)
    evaluated = [h for h in result.history if "val_accuracy" in h]
    assert evaluated and all("val_train_accuracy" in h for h in evaluated)
