"""benchmarks/gpu.py keeps working where no GPU is lent: its ``--simulate`` mode runs the same code
paths (kdsim's CUDA engine on numba-cuda's simulator, JAX if installed, W1's agreement with the exact
recursion, the JSON and Markdown reports) at tiny sizes, in its own process with
``NUMBA_ENABLE_CUDASIM=1`` (it must be set before numba is imported)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow                  # about a minute (the simulator runs every thread in Python; JAX compiles)
@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None, reason="needs numba-cuda (the test extra)")
def test_gpu_benchmark_runs_on_the_simulator(tmp_path):
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--simulate", "--workloads", "W1",
                          "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-simulator.json").read_text())
    rows = [r for r in report["rows"] if r["implementation"].startswith("kdsim cuda")]   # affine, per trajectory
    assert len(rows) == 4 and all("error" not in r for r in rows)
    assert {r["dtype"] for r in rows} == {"float64", "float32"}
    # W1 at its last record agrees with the exact recursion of docs/theory.md §5 within Monte Carlo error
    assert all(0.0 <= r["max_z_vs_exact"] < 5.0 for r in rows)
    assert "| W1 | float64 | kdsim cuda |" in (tmp_path / "gpu-simulator.md").read_text()


@pytest.mark.slow                  # about 20 s: the simulator's W1 at a tenth of its size and the cudasim tests
@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None, reason="needs numba-cuda (the test extra)")
def test_gpu_session_script_runs_the_benchmark_and_the_gpu_tests(tmp_path):
    """benchmarks/gpu_session.sh, the one command of a lent GPU session, on the simulator: the benchmark's
    report is written, the `gpu or cudasim` tests run (on the simulator here) and pass, and the exit status
    and the last line of the log say so."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), str(tmp_path), "--simulate", "--quick",
                          "--workloads", "W1"], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    log = (tmp_path / "gpu-session.log").read_text()
    assert out.returncode == 0, log[-3000:] + out.stderr[-2000:]
    assert (tmp_path / "gpu-simulator.json").exists() and "| W1 | float64 | kdsim cuda |" in log
    assert " passed" in log and " failed" not in log
    assert log.rstrip().splitlines()[-1] == "gpu_session: benchmark rc=0, tests rc=0 (124: the time limit)"
