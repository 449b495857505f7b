"""`seqarena compare` with a `module:factory` plug-in: safe, unique run directory names."""

import json
import os
import subprocess
import sys

import pytest
from test_plugins import PLUGIN_MODULE

from seqarena.experiment.compare import run_dir_name


@pytest.fixture()
def plugin_path(tmp_path):
    """A directory holding the tinyplug module, importable as `tinyplug:factory`."""
    (tmp_path / "tinyplug.py").write_text(PLUGIN_MODULE)
    return tmp_path


def run_cli(plugin_path, *args):
    path = os.pathsep.join(p for p in (str(plugin_path), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "seqarena", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": path}, timeout=300)


def test_plugin_names_become_plain_directory_names_that_stay_unique():
    names = {run_dir_name(m, 32, 0) for m in ("mymod:factory", "mymod.factory", "mymod+factory",
                                              "pkg/mod:f", "lstm")}
    assert len(names) == 5
    assert run_dir_name("lstm", 32, 0) == "lstm-L32-s0"
    assert all(":" not in n and "/" not in n for n in names)


def test_compare_runs_a_module_factory_plugin_beside_a_builtin_end_to_end(plugin_path):
    out = plugin_path / "cmp"
    r = run_cli(plugin_path, "compare", "--models", "tinyplug:factory,lstm", "--task", "adding",
                "--seq-lens", "8", "--steps", "3", "--lr", "1e-3", "--d-model", "8", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [(x["model"], x["status"]) for x in summary["results"]] == \
        [("tinyplug:factory", "ok"), ("lstm", "ok")]
    dirs = sorted(p.name for p in out.iterdir() if (p / "config.json").is_file())
    assert len(dirs) == 2 and dirs[0] == "lstm-L8-s0" and dirs[1].startswith("tinyplug+factory")
