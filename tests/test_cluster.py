"""compare --executor ray: the numbers of --jobs 1, a killed worker retried from its checkpoint,
a failing run recorded while the others go on, and one-line errors (no cluster, no Ray)."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

ray = pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install '.[ray]')")

from seqarena.cli import main  # noqa: E402
from seqarena.experiment.cluster import RayExecutor  # noqa: E402
from seqarena.experiment.compare import compare  # noqa: E402
from seqarena.experiment.executor import RunSpec  # noqa: E402
from test_compare_runs import small_compare, summary_numbers, tiny  # noqa: E402

EXIT_AT = 45  # the killed run's worker dies here, after its checkpoint at step 40 (the other
# tests train 40 steps or fewer)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray instance for the module; its workers carry the test-only exit hook."""
    marker = tmp_path_factory.mktemp("hook") / "exited"
    os.environ["SEQARENA_TEST_EXIT_AT"] = f"{EXIT_AT}:{marker}"
    try:  # the workers inherit the hook from the instance started here; this process does not
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        del os.environ["SEQARENA_TEST_EXIT_AT"]
    yield marker
    ray.shutdown()


def test_ray_gives_the_numbers_of_one_local_job(tmp_path, cluster):
    cfg = dataclasses.replace(small_compare(tmp_path, "local", steps=40, eval_every=20),
                              seeds=(0, 1))  # the lr search's trials run on Ray too
    compare(cfg)
    with RayExecutor() as executor:
        compare(dataclasses.replace(cfg, out=str(tmp_path / "ray")), executor=executor)
    runs, _ = summary_numbers(tmp_path / "ray")
    assert len(runs) == 4 and len(list((tmp_path / "ray" / "lr-search").iterdir())) == 4
    assert summary_numbers(tmp_path / "local") == summary_numbers(tmp_path / "ray")
    assert not list((tmp_path / "ray").glob(".seqarena-probe-*"))  # the --out probe is gone
    assert ray.is_initialized()  # an executor that did not start Ray leaves it running


def test_a_killed_worker_is_retried_from_its_checkpoint_to_the_same_numbers(tmp_path, cluster):
    cfg = dataclasses.replace(small_compare(tmp_path, "whole", steps=60, checkpoint_every=10,
                                            log_every=5),
                              models=("lstm",), lr_auto=False)
    compare(cfg)
    assert not cluster.exists()
    compare(dataclasses.replace(cfg, out=str(tmp_path / "killed")), executor=RayExecutor())
    assert cluster.exists()  # the worker did die at step EXIT_AT

    def losses(name):
        lines = (tmp_path / name / "lstm-L10-s0" / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]

    assert losses("whole") == losses("killed")  # steps 41-45 redone once, not twice
    assert summary_numbers(tmp_path / "whole") == summary_numbers(tmp_path / "killed")


def test_ctrl_c_cancels_the_runs_and_resume_finishes_them_to_the_same_numbers(tmp_path, cluster):
    cfg = dataclasses.replace(small_compare(tmp_path, "whole", steps=20, checkpoint_every=5),
                              lr_auto=False)
    compare(cfg)

    def interrupt(line):
        if line.startswith("[1/"):  # the first run finished, the other is under way
            raise KeyboardInterrupt

    stopped = dataclasses.replace(cfg, out=str(tmp_path / "stopped"))
    with pytest.raises(KeyboardInterrupt):
        compare(stopped, echo=interrupt, executor=RayExecutor())
    assert not (tmp_path / "stopped" / "summary.json").exists()
    compare(stopped, resume=True)
    assert summary_numbers(tmp_path / "whole") == summary_numbers(tmp_path / "stopped")


def test_a_run_that_raises_is_recorded_and_the_others_go_on(tmp_path, cluster):
    good = tiny(tmp_path, steps=10, eval_every=0, name="good")
    bad = dataclasses.replace(good, model_args={"bogus": 1}, name="bad")
    results = RayExecutor().run([RunSpec(dataclasses.asdict(bad)),
                                 RunSpec(dataclasses.asdict(good))])
    assert [r.status for r in results] == ["error", "ok"]
    assert "has no field 'bogus'" in results[0].stopped and results[0].metric is None
    assert results[1].steps == 10


def test_an_unreachable_address_is_one_line_and_exit_2_soon(tmp_path):
    cmd = [sys.executable, "-m", "seqarena", "compare", "--models", "lstm", "--seq-lens", "10",
           "--steps", "20", "--lr", "1e-3", "--out", str(tmp_path / "c"),
           "--executor", "ray", "--address", "127.0.0.1:1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert "--address 127.0.0.1:1: no Ray head answers there" in err
    assert not (tmp_path / "c").exists()


def test_without_ray_the_flag_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(SystemExit) as e:
        main(["compare", "--models", "lstm", "--seq-lens", "10", "--lr", "1e-3",
              "--out", str(tmp_path / "c"), "--executor", "ray"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert 'pip install "seqarena[ray]"' in err


def test_compare_executor_ray_through_the_cli_starts_sizes_and_stops_its_own_ray(tmp_path):
    """`seqarena compare --executor ray --jobs 2` in a fresh process: RayExecutor starts a local
    instance of jobs x threads CPUs itself, runs every run (the lr search's too) and shuts it
    down; the numbers are those of local processes."""
    args = ["compare", "--models", "lstm,gru", "--task", "adding", "--seq-lens", "10",
            "--steps", "40", "--d-model", "8", "--batch-size", "4", "--threads", "1",
            "--lr-grid", "1e-3,1e-2"]

    def cli(*extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        return subprocess.run([sys.executable, "-m", "seqarena", *args, *extra],
                              capture_output=True, text=True, env=env, timeout=600)

    local = cli("--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    on_ray = cli("--executor", "ray", "--jobs", "2", "--out", str(tmp_path / "ray"))
    assert on_ray.returncode == 0, on_ray.stderr
    assert summary_numbers(tmp_path / "local") == summary_numbers(tmp_path / "ray")
    held = next(line for line in on_ray.stdout.splitlines() if line.startswith("held equal:"))
    assert "2 run(s) at once" in held  # the instance it started has jobs x threads = 2 CPUs
