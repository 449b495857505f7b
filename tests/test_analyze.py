import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from seqarena.analysis.analyze import (GradientConfig, attention_maps, gradient_flow,
                              input_gradient_norms)
from seqarena.config import TrainConfig
from seqarena.errors import ConfigError, UserError
from seqarena.training.inference import load_run
from seqarena.report import write_analysis_charts, write_report
from seqarena.results import SCHEMA_VERSION
from seqarena.training.train import build, train


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny(model, tmp_path, **kw):
    fields = dict(model=model, task="adding", seq_len=12, steps=3, batch_size=4, d_model=8,
                  eval_every=0, log_every=1, out=str(tmp_path / "runs"), threads=1)
    if model == "transformer":
        fields["model_args"] = {"heads": 2}
    return TrainConfig(**{**fields, **kw})


def test_input_gradient_norms_match_autograd_on_the_embedded_input(tmp_path):
    task, model = build(tiny("gru", tmp_path))
    batch = next(iter(task.batches("val", 4)))
    got = input_gradient_norms(model, task, batch)
    # reference: the embedded input as a leaf tensor, differentiated directly
    x = model.embedding(batch.x).detach().requires_grad_(True)  # (B, L, D)
    loss = task.loss(model.head(model.backbone(x), None), batch) * len(batch)
    (grad,) = torch.autograd.grad(loss, x)
    want = grad.norm(dim=-1).mean(0).double().numpy()  # (L,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)
    assert all(p.grad is None for p in model.parameters())  # leaves the model as it found it


def test_elman_rnn_gradient_vanishes_with_distance_at_initialisation(tmp_path):
    task, model = build(tiny("rnn", tmp_path, seq_len=48))
    norms = input_gradient_norms(model, task, next(iter(task.batches("val", 16))))
    # the last position is distance 0 from the output; the first is 47 Jacobians away
    assert norms[-1] > 1e6 * norms[0]


def test_gradient_flow_writes_every_model_and_condition_and_the_report_shows_it(tmp_path):
    cfg = GradientConfig(models=("rnn", "transformer"), seq_len=10, steps=3, batch_size=4,
                         d_model=8)
    path = gradient_flow(cfg, tmp_path / "g")
    doc = json.loads(path.read_text())
    assert doc["kind"] == "gradients" and doc["schema_version"] == SCHEMA_VERSION and doc["machine"]["cpu"]
    assert doc["command"][:3] == ["seqarena", "analyze", "gradients"]
    conditions = [(r["model"], r["condition"]) for r in doc["results"]]
    assert conditions == [(m, c) for m in ("rnn", "transformer") for c in (
        "at initialisation", "trained, no clipping", "trained, clipped at 1")]
    for r in doc["results"]:
        assert r["distance"] == list(range(9, -1, -1)) and len(r["grad_norm"]) == 10
        assert r["status"] == "ok"
        assert bool(r["train"]) == r["trained"]
    # training moved the weights, so the measured gradients changed
    rnn = [r["grad_norm"] for r in doc["results"] if r["model"] == "rnn"]
    assert rnn[0] != rnn[1]
    written = write_analysis_charts(path)  # what `seqarena analyze gradients` does next
    for name in ("gradient_flow", "gradient_norm_training"):
        assert (tmp_path / "g" / f"{name}.png") in written
        assert (tmp_path / "g" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    html = write_report([tmp_path / "g"], tmp_path / "r.html", log=None).read_text()
    assert 'id="fig-gradient_flow"' in html and 'id="fig-gradient_norm_training"' in html


def test_gradient_flow_refuses_a_per_token_task_before_training(tmp_path):
    with pytest.raises(UserError, match="one output per sequence"):
        gradient_flow(GradientConfig(models=("rnn",), task="copy", seq_len=32), tmp_path)
    with pytest.raises(UserError, match="unknown model"):
        gradient_flow(GradientConfig(models=("no-such-model",)), tmp_path)
    with pytest.raises(ConfigError, match="steps"):
        GradientConfig(steps=0)


def test_attention_maps_are_causal_probability_rows_per_layer_and_head(tmp_path):
    run = train(tiny("transformer", tmp_path, layers=2)).run_dir
    path = attention_maps(run, max_positions=8)
    write_analysis_charts(path)  # what `seqarena analyze attention` does next
    doc = json.loads(path.read_text())
    assert doc["kind"] == "attention" and doc["model"] == "transformer" and doc["hidden"] == []
    assert sorted((m["layer"], m["head"]) for m in doc["results"]) == [
        (0, 0), (0, 1), (1, 0), (1, 1)]
    for m in doc["results"]:
        w = np.array(m["weights"])
        assert w.shape == (8, 8)
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-4)  # each query's weights sum to 1
        assert np.all(np.triu(w, 1) == 0)  # a causal model never looks ahead
    assert (run / "analysis" / "attention.png").read_bytes().startswith(b"\x89PNG")


def test_recurrent_run_gets_its_hidden_state_and_pca_matches_sklearn(tmp_path):
    from sklearn.decomposition import PCA

    outcome = train(tiny("lstm", tmp_path))
    doc = json.loads(attention_maps(outcome.run_dir, tmp_path / "a", sample=3).read_text())
    assert doc["results"] == [] and len(doc["hidden"]) == 1
    states = np.array(doc["hidden"][0]["states"])
    # reference: the trained backbone run directly on held-out example 3
    run = load_run(outcome.run_dir)
    task, model = run.task, run.model
    batch = next(iter(task.batches("test", 64))).select(slice(3, 4))
    with torch.no_grad():
        want = model.backbone(model.embedding(batch.x))[0].double().numpy()  # (L, D)
    np.testing.assert_allclose(states, want, rtol=1e-4, atol=1e-5)
    pca = PCA(n_components=2).fit(want)
    got = np.array(doc["hidden"][0]["pca"])
    ref = pca.transform(want)
    for k in range(2):  # a principal component is defined up to its sign
        sign = np.sign(got[:, k] @ ref[:, k])
        np.testing.assert_allclose(got[:, k], sign * ref[:, k], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(doc["hidden"][0]["explained"], pca.explained_variance_ratio_,
                               rtol=1e-4)


def test_attention_on_a_run_without_checkpoint_or_dir_is_one_line_exit_2(tmp_path):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "lstm", "task": "adding"}))
    with pytest.raises(UserError, match="no checkpoint"):
        attention_maps(run)
    r = subprocess.run([sys.executable, "-m", "seqarena", "analyze", "attention",
                        str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "no such run directory" in r.stderr and "Traceback" not in r.stderr


def test_analyze_gradients_measures_the_growth_a_spectral_radius_predicts(tmp_path, capsys):
    """`seqarena analyze gradients` on Elman RNNs whose W_hh has spectral radius 1.2 or 0.8: with
    the identity activation, ‖d loss / d x_t‖ grows or shrinks by the radius per step of
    distance at initialisation (within 10 %); with tanh (tanh' <= 1) it lies below the radius."""
    from seqarena.cli import main

    variants = [f"rnn@spectral_radius={rho};nonlinearity={act};impl=scratch"
                for rho in (1.2, 0.8) for act in ("identity", "tanh")]
    with pytest.raises(SystemExit) as e:
        main(["analyze", "gradients", "--models", ",".join(variants), "--seq-len", "40",
              "--steps", "2", "--batch-size", "8", "--d-model", "32", "--out", str(tmp_path)])
    assert e.value.code == 0
    doc = json.loads((tmp_path / "gradients.json").read_text())
    rate = {r["model"]: r["rate"] for r in doc["results"] if r["condition"] == "at initialisation"}
    for rho in (1.2, 0.8):
        identity = rate[f"rnn@spectral_radius={rho};nonlinearity=identity;impl=scratch"]
        assert identity == pytest.approx(rho, rel=0.10)
        assert rate[f"rnn@spectral_radius={rho};nonlinearity=tanh;impl=scratch"] < identity
    assert rate[variants[0]] > 1 > rate[variants[2]]  # one explodes, the other vanishes
