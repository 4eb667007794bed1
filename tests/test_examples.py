"""Every script in examples/ runs to completion and writes its output where it is told (never the repo)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: script -> the files it must write into --out
OUTPUTS = {
    "lambda_curve.py": ["lambda_curve.png", "lambda_curve.csv"],
    "kd_vs_sgd_diabetes.py": ["kd_vs_sgd_diabetes.csv", "kd_vs_sgd_diabetes.png"],
    "custom_problem.py": ["custom_problem.png"],
    "sweep_from_python.py": ["sweep_summary.csv"],
    "paper_figure.py": ["paper_figure.pdf"],
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(OUTPUTS)


@pytest.mark.parametrize("script", sorted(OUTPUTS))
def test_example_runs(script, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, MPLBACKEND="Agg")
    # run from an empty folder: a script that wrote to its working directory would show up there
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p.name for p in tmp_path.iterdir()} <= {"out"}, list(tmp_path.iterdir())
    if script == "sweep_from_python.py" and importlib.util.find_spec("pyarrow") is None:
        assert "skipped" in proc.stdout
        return
    for name in OUTPUTS[script]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, (name, proc.stdout[-2000:])
