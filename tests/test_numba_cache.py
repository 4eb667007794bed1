"""numba keys a cached kernel by its own source file only; ``kdsim.engines._numba_cache.forget_if_stale``
deletes a kernel module's cache files when a source it depends on changed (and keeps them otherwise)."""
import ast
import importlib.util
import os
import subprocess
import sys

import pytest

from kdsim.engines._numba_cache import forget_if_stale


def _module(tmp_path):
    src = tmp_path / "kern.py"
    src.write_text("def f(x):\n    return x + 1\n")
    spec = importlib.util.spec_from_file_location("kern", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cache_files_go_when_a_dependency_changes_and_stay_otherwise(tmp_path, monkeypatch):
    from numba.core import config
    monkeypatch.setattr(config, "CACHE_DIR", "")           # the in-tree cache, also where NUMBA_CACHE_DIR is set
    mod = _module(tmp_path)
    dep = tmp_path / "dep.py"
    dep.write_text("A = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    files = [cache / "kern.f-1.py311.nbi", cache / "kern.f-1.py311.1.nbc"]
    other = cache / "other.g-1.py311.nbi"                  # another module's cache is never touched

    def populate():
        for f in files + [other]:
            f.write_text("x")

    populate()
    forget_if_stale(mod.f, [str(dep)])                     # no stamp yet: unknown provenance, forgotten
    assert not any(f.exists() for f in files) and other.exists()
    populate()
    forget_if_stale(mod.f, [str(dep)])                     # same sources: kept
    assert all(f.exists() for f in files)
    dep.write_text("A = 2\n")
    forget_if_stale(mod.f, [str(dep)])                     # a dependency changed: forgotten
    assert not any(f.exists() for f in files) and other.exists()
    forget_if_stale(mod.f, [str(tmp_path / "missing.py")])  # never raises
    assert os.path.exists(cache / "kern.kdsim-sources")


def test_the_kernel_modules_carry_their_stamps():
    from kdsim.engines import _kernels_layered, _numba_cache
    cache_dir, _ = _numba_cache._cache_dir(_kernels_layered.layered_traj.py_func)
    assert os.path.exists(os.path.join(cache_dir, "_kernels_layered.kdsim-sources"))


_COMPILE_ONCE = r"""
import kdsim
from kdsim.engines import _kernels_layered as K
from kdsim.problems import synthetic
p = synthetic.poisson(n=60, d=5, l2=0.01)
kdsim.simulate(p, kdsim.teachers.at_distance(p, 0.3, seed=1).theta, [0.0, 0.5], 0.01, 5, 2, backend="numba")
q = synthetic.softmax(n=60, d=4, n_classes=3, seed=0)      # its teacher's probabilities are read-only
kdsim.simulate(q, kdsim.teachers.at_distance(q, 0.3, seed=1).theta, [0.5], 0.01, 5, 2, estimator="kd_loss",
               temperature=2.0, backend="numba")
print({f: len(getattr(K, f).signatures) for f in ("layered_traj", "_layered_traj_one", "_backward_step", "_step_range")})
"""


@pytest.mark.slow
def test_layered_kernel_compiles_each_big_function_once(tmp_path):
    # a flag first typed as a literal (flag = True ... flag = False) compiled every callee once more for
    # that literal: a third of the layered kernel's compile time; a read-only input (teacher probabilities),
    # the whole kernel once more. A fresh cache, so that all is compiled.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _COMPILE_ONCE], env=env, capture_output=True, text=True, check=True)
    counts = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert counts == {"layered_traj": 1, "_layered_traj_one": 1, "_backward_step": 1, "_step_range": 1}
