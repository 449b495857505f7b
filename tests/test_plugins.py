"""Plug-in models: entry points, `module:factory` names, and the errors of broken plug-ins."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from seqarena.errors import UserError
from seqarena.models import StepNotSupported, build_model, count_params

PLUGIN_MODULE = textwrap.dedent('''
    import torch
    from torch import nn


    class Mixer(nn.Module):
        """A causal cumulative-mean mixer: (B, L, D) -> (B, L, D)."""

        def __init__(self, d):
            super().__init__()
            self.proj = nn.Linear(d, d)

        def forward(self, x):
            steps = torch.arange(1, x.shape[1] + 1, device=x.device)[None, :, None]
            return self.proj(x.cumsum(1) / steps)


    def factory(config):
        return Mixer(config.d_model)


    def raises(config):
        raise ValueError("no such width")


    def wrong_shape(config):
        return nn.Linear(config.d_model, config.d_model + 1)
''')


@pytest.fixture()
def plugin_path(tmp_path, monkeypatch):
    """A tiny installed package: a module plus dist-info declaring a seqarena.models entry point."""
    (tmp_path / "tinyplug.py").write_text(PLUGIN_MODULE)
    info = tmp_path / "tinyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[seqarena.models]\ntiny-mixer = tinyplug:factory\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def run_cli(plugin_path, *args):
    env = dict(os.environ, PYTHONPATH=str(plugin_path))
    return subprocess.run([sys.executable, "-m", "seqarena", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_module_factory_plain_module_is_wrapped_as_a_backbone(plugin_path):
    model = build_model("tinyplug:factory", d_model=8)
    x = torch.randn(2, 5, 8)
    expected = model.module.proj(x.cumsum(1) / torch.arange(1, 6)[None, :, None])
    torch.testing.assert_close(model(x), expected)
    assert count_params(model) == 8 * 8 + 8
    with pytest.raises(StepNotSupported):
        model.init_state(2)


def test_entry_point_plugin_is_listed_beside_builtins(plugin_path):
    r = run_cli(plugin_path, "models", "--json", "--d-model", "8")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["tiny-mixer"]["params"] == 8 * 8 + 8
    assert "entry point tinyplug:factory" in rows["tiny-mixer"]["summary"]


@pytest.mark.parametrize("name, words", [
    ("tinyplug:raises", "factory raised ValueError: no such width"),
    ("tinyplug:wrong_shape", "maps (2, 3, 8) to (2, 3, 9)"),
    ("no_such_module_xyz:factory", "cannot import 'no_such_module_xyz'"),
    ("tinyplug:missing", "has no callable 'missing'"),
])
def test_broken_plugin_is_one_clear_error(plugin_path, name, words):
    with pytest.raises(UserError, match=None) as e:
        build_model(name, d_model=8)
    assert words in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["tiny-mixer", "tinyplug:factory"])
def test_plugin_trains_and_is_benchmarked(plugin_path, tmp_path, name):
    runs = tmp_path / "runs"
    r = run_cli(plugin_path, "train", "--model", name, "--task", "adding", "--seq-len", "8",
                "--steps", "3", "--d-model", "8", "--eval-every", "0", "--out", str(runs),
                "--name", "plug")
    assert r.returncode == 0, r.stderr
    summary = json.loads((runs / "plug" / "summary.json").read_text())
    embedding, head = 2 * 8 + 8, 8 + 1  # adding: Linear(2 features -> D), Linear(D -> 1)
    assert [(x["model"], x["params"]) for x in summary["results"]] == \
        [(name, 8 * 8 + 8 + embedding + head)]

    out = tmp_path / "bench"
    r = run_cli(plugin_path, "bench", "--models", name, "--seq-lens", "8", "--modes",
                "forward,decode", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "bench.json").read_text())["results"]
    status = {row["mode"]: row["status"] for row in rows if row["model"] == name}
    assert status["forward"] == "ok" and status["decode"] == "unsupported"
    forward = next(row for row in rows if row["mode"] == "forward")
    # the mixer's one Linear(D, D) over B * L tokens, counted, never reported as zero
    assert forward["flops"] == 2 * forward["batch"] * forward["seq_len"] * forward["d_model"] ** 2


@pytest.mark.parametrize("name", ["tinyplug:raises", "tinyplug:wrong_shape", "nope_xyz:f"])
def test_broken_plugin_on_the_command_line_is_one_line_and_status_2(plugin_path, tmp_path, name):
    r = run_cli(plugin_path, "train", "--model", name, "--task", "adding", "--seq-len", "8",
                "--steps", "1", "--d-model", "8", "--out", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert name in r.stderr
