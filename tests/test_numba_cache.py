"""numba keys a cached kernel by its own source file only; ``kdsim.engines._numba_cache.forget_if_stale``
deletes a kernel module's cache files when a source it depends on changed (and keeps them otherwise)."""
import importlib.util
import os

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
