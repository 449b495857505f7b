"""The runs of a comparison on a Ray cluster: `RayExecutor`, the Executor seam's second class.

Each RunSpec becomes one Ray task asking for the spec's CPU threads (and one GPU when the run's
device is cuda), so Ray places as many runs side by side as the nodes hold. Without an address a
local Ray instance is started and stopped with the executor; with one (`auto`, or the head's
HOST:PORT) an existing cluster is joined, as Ray documents:

    head$   ray start --head --port 6379
    other$  ray start --address HEAD:6379
    head$   seqarena compare ... --executor ray --address auto --out /shared/path

The run directories live under --out, which every node must reach (a shared path): before the
first run, one tiny task per node writes a probe file there and the driver looks for it.

Faults: a task whose worker process dies is retried (MAX_RETRIES), and every attempt continues
its run directory from the newest checkpoint (resume semantics), so a retried run ends with the
numbers of an uninterrupted one. A run that raises (its model, its task) comes back as a RunResult
with status "error" and the message in `stopped`; the other runs go on. Ctrl-C cancels the
outstanding tasks; their checkpoints stay, and `compare --resume` continues them.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from pathlib import Path
from typing import Sequence

from seqarena.config import TrainConfig
from seqarena.errors import UserError, first_line
from seqarena.experiment.executor import Done, RunSpec, execute, failed_result
from seqarena.results import RunResult

MAX_RETRIES = 2  # attempts after a worker dies; a run that raises is not retried
CANCEL_WAIT_S = 30.0  # how long Ctrl-C waits for the cancelled runs' workers to end
CONNECT_TIMEOUT_S = 5.0  # how long a HOST:PORT may take to accept a connection
INSTALL = 'the Ray executor needs Ray: pip install "seqarena[ray]" (or pip install "ray>=2.9")'


def _ray():
    """The ray module, or a one-line UserError saying what to install."""
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL) from None
    return ray


def run_task(spec: RunSpec) -> RunResult:
    """One spec on a worker: a retry after a dead worker continues what the last attempt left."""
    try:
        return execute(dataclasses.replace(spec, resume=True))
    except Exception as e:  # the run's own failure is its result, not the comparison's end
        cfg = TrainConfig(**spec.config)
        return failed_result(cfg, "error", f"{type(e).__name__}: {first_line(e)}")


def probe(out: str, name: str) -> str:
    """Write the probe file `name` under `out`; the node's hostname."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / name).write_text("seqarena probe\n", encoding="utf-8")
    return socket.gethostname()


def check_reachable(address: str) -> None:
    """UserError unless HOST:PORT accepts a TCP connection within CONNECT_TIMEOUT_S (Ray itself
    would keep retrying for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address expects auto or HOST:PORT (the head's GCS port, e.g. "
                        f"10.0.0.1:6379), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise UserError(f"--address {address}: no Ray head answers there ({e.strerror or e}); "
                        f"start one with `ray start --head --port {port}` or give its address")


class RayExecutor:
    """Runs specs as Ray tasks: on a local instance of `num_cpus` CPUs (default: every core),
    or on the cluster at `address`. Use as a context manager, or call close()."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        self.address = address
        self.num_cpus = num_cpus
        self.jobs = num_cpus or os.cpu_count() or 1  # CPUs for runs; the cluster's once joined
        self._owned = False  # this executor started the Ray instance, so it stops it
        self._task = None
        self._probed: set[str] = set()

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Join the cluster, or start the local instance (once; an initialised Ray is reused)."""
        ray = _ray()
        if self._task is not None:
            return
        if not ray.is_initialized():
            if self.address and self.address != "auto":
                check_reachable(self.address)
            try:
                if self.address:
                    ray.init(address=self.address, include_dashboard=False,
                             log_to_driver=False)
                else:
                    ray.init(num_cpus=self.jobs, include_dashboard=False, log_to_driver=False)
            except ConnectionError as e:
                raise UserError(f"--address {self.address}: {first_line(e)}") from None
            self._owned = True
        self.jobs = int(ray.cluster_resources().get("CPU", self.jobs))
        self._task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(run_task)

    def close(self) -> None:
        """Stop the local instance this executor started; a joined cluster keeps running."""
        if self._owned:
            _ray().shutdown()
        self._owned, self._task = False, None

    def check_out(self, out: str) -> None:
        """UserError unless a task on every node can write under `out` and the driver sees it."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = _ray()
        task = ray.remote(num_cpus=0, max_retries=0)(probe)
        probes = []
        for node in ray.nodes():
            if node["Alive"]:
                name = f".seqarena-probe-{uuid.uuid4().hex}"
                strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                probes.append((name, task.options(scheduling_strategy=strategy).remote(out, name)))
        for name, ref in probes:
            try:
                host = ray.get(ref)
            except Exception as e:
                cause = getattr(e, "cause", None) or e
                raise UserError(f"--out {out}: a Ray worker cannot write there ({cause}); give "
                                f"a path every node can write (a shared file system)") from None
            path = Path(out) / name
            if not path.exists():
                raise UserError(f"--out {out}: a file written there on {host} is not visible "
                                f"here; on several nodes --out must be a shared path")
            path.unlink()

    @staticmethod
    def _options(spec: RunSpec, cluster_gpus: float) -> dict:
        """The resources a spec's task asks for: its threads, and a GPU for a cuda run ("auto"
        is cuda where the cluster has GPUs)."""
        device = str(spec.config.get("device") or "auto")
        gpus = device.startswith("cuda") or (device == "auto" and cluster_gpus > 0)
        return {"num_cpus": spec.threads, "num_gpus": int(gpus)}

    def _check_fits(self, cpus: int, gpus: int) -> None:
        """UserError when no node has the CPUs and GPUs a run asks for (Ray would wait forever)."""
        nodes = [n["Resources"] for n in _ray().nodes() if n["Alive"]]
        if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
            raise UserError(f"no Ray node has {cpus} CPU(s) and {gpus} GPU(s) for one run; "
                            f"lower --threads, or add such a node")

    def run(self, specs: Sequence[RunSpec], done: Done | None = None) -> list[RunResult]:
        ray = _ray()
        self.start()
        done = done or (lambda i, result: None)
        for out in sorted({str(spec.config["out"]) for spec in specs} - self._probed):
            self.check_out(out)
            self._probed.add(out)
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        options = [self._options(spec, cluster_gpus) for spec in specs]
        for cpus, gpus in {(o["num_cpus"], o["num_gpus"]) for o in options}:
            self._check_fits(cpus, gpus)
        pending = {self._task.options(**o).remote(spec): i
                   for i, (spec, o) in enumerate(zip(specs, options))}
        results: list[RunResult | None] = [None] * len(specs)
        try:
            while pending:
                finished, _ = ray.wait(list(pending), num_returns=1)
                for ref in finished:
                    i = pending.pop(ref)
                    try:
                        results[i] = ray.get(ref)
                    except ray.exceptions.RayError as e:  # its worker died on every attempt
                        cfg = TrainConfig(**specs[i].config)
                        results[i] = failed_result(cfg, "error", f"{MAX_RETRIES + 1} attempts: "
                                                   f"{first_line(e)}")
                    done(i, results[i])
        except BaseException:
            for ref in pending:  # Ctrl-C: their checkpoints stay for --resume
                ray.cancel(ref, force=True)
            # until their workers are gone, so no write lands after the driver has stopped
            ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
            raise
        return results  # type: ignore[return-value]
