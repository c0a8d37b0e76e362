"""``benchmarks/gpu_check.sh``, the script the first GPU machine runs: it parses, and without a CUDA device it says
so in one line and stops (exit status 2) instead of reporting CPU numbers as GPU ones."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run")
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_without_cuda_it_stops_and_says_why(tmp_path):
    out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "report")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert "no CUDA device" in out.stderr
    assert not (tmp_path / "report").exists()
