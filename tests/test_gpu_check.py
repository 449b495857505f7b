"""benchmarks/gpu_check.py refuses cleanly where there is no GPU (it cannot run here)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_check_without_cuda_is_one_line_and_status_2():
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no CUDA GPU" in r.stderr
    assert "Traceback" not in r.stderr and not r.stdout
