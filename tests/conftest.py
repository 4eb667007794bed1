"""Shared fixtures and tolerances.

Statistical tolerances: a Monte Carlo mean is compared with an exact value as
|mean − exact| ≤ z·SE, with z chosen for a stated false-failure probability p
over m comparisons (Bonferroni): z = Φ⁻¹(1 − p/(2m)). Seeds are fixed, so a
test either always passes or always fails; no statistical test is retried.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

import kdsim

#: the test that runs the ``cudasim`` tests in their own process (tests/test_engine_cuda.py)
CUDASIM_TEST = "test_cudasim_tests_pass_in_their_own_process"
_BACKGROUND = {}


def cudasim_command():
    """The pytest command of the ``cudasim`` tests, with numba-cuda's simulator set before numba is imported."""
    return ([sys.executable, "-m", "pytest", "-q", "-m", "cudasim", "-p", "no:cacheprovider",
             str(Path(__file__).parent / "test_engine_cuda.py")], {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"})


def pytest_collection_finish(session):
    """Start the ``cudasim`` process as soon as its test is selected: it runs on the second core while this
    process runs the other tests, and its test waits for it (``background_cudasim``). The simulator runs
    every CUDA thread in Python on one core, for about a minute and a half."""
    if any(item.name == CUDASIM_TEST for item in session.items) and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        import importlib.util
        if importlib.util.find_spec("numba_cuda") is not None:
            cmd, env = cudasim_command()
            out = tempfile.TemporaryFile(mode="w+")
            _BACKGROUND["cudasim"] = (subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True),
                                      out)


def background_cudasim(timeout):
    """(return code, output) of the ``cudasim`` process started at collection (or started now)."""
    if "cudasim" not in _BACKGROUND:
        cmd, env = cudasim_command()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr
    proc, out = _BACKGROUND.pop("cudasim")
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.seek(0)
    text = out.read()
    out.close()
    return proc.returncode, text


def pytest_sessionfinish(session):
    """A ``cudasim`` process whose test did not run (a stop on the first failure) ends with the session."""
    for proc, out in _BACKGROUND.values():
        proc.kill()
        proc.wait()
        out.close()
    _BACKGROUND.clear()


def z_threshold(false_failure=1e-6, comparisons=1):
    """Two-sided z for a family-wise false-failure probability (Bonferroni)."""
    return float(norm.ppf(1 - false_failure / (2 * comparisons)))


@pytest.fixture
def ls_problem():
    """A small well-conditioned least-squares instance (n=40, d=4) with noise."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((40, 4))
    b = A @ rng.standard_normal(4) + 0.5 * rng.standard_normal(40)
    return kdsim.LeastSquares(A, b)


# ======================================================================================
# Shared theory-check results (tests/test_checks.py, tests/test_check_claim*.py).
# Each quick check runs once per session; perturbation tests re-judge its simulations
# (kdsim.checks.base.reuse_simulations) instead of running them again.
# ======================================================================================
@pytest.fixture(scope="session")
def check_runs():
    """The simulations of the unperturbed checks of this session, by call (``reuse_simulations``)."""
    return {}


@pytest.fixture(scope="session")
def quick_check_result(check_runs):
    """``quick_check_result(name, backend=None, **kwargs)``: ``check(quick=True, ...)``, run once per session.

    ``backend=None`` runs the check on its own default backend (the ``backend`` default of its
    ``check``: numpy for the first release's checks, numba for the Monte Carlo-heavy new ones).

    The result is shared: read it, never change it. Call it before monkeypatching anything: the
    first call of a session runs the check, and its simulations enter ``check_runs``.
    """
    from kdsim import checks
    from kdsim.checks.base import reuse_simulations

    results, calls = {}, {}

    def get(name, backend=None, **kwargs):
        import inspect
        check = checks.get_check(checks.resolve(name))
        if backend is None:
            backend = inspect.signature(check).parameters["backend"].default
        key = (checks.resolve(name), backend, tuple(sorted(kwargs.items())))
        if key not in results:
            with reuse_simulations(check_runs):
                results[key] = checks.get_check(key[0])(quick=True, backend=backend, **kwargs)
            calls[id(results[key])] = key
        return results[key]

    get.call_of = calls
    return get


@pytest.fixture(scope="session")
def rejudge(check_runs, quick_check_result):
    """``rejudge(base)``: the check of ``base`` (a ``quick_check_result``) run again as the code now reads.

    Its simulations are ``base``'s: by default every one must be (``LookupError`` otherwise), so a
    perturbation of the theory side re-judges them and simulates nothing. With
    ``new_simulations=True`` (a perturbation that changes what is simulated: other arguments of
    ``simulate``) the calls that differ run, and are kept out of ``check_runs``. Do not use it to
    perturb problems or engines: a simulation is looked up by its arguments, not by that code.
    """
    import collections

    from kdsim import checks
    from kdsim.checks.base import reuse_simulations

    def run(base, new_simulations=False):
        name, backend, kwargs = quick_check_result.call_of[id(base)]
        runs = collections.ChainMap({}, check_runs) if new_simulations else check_runs
        with reuse_simulations(runs, strict=not new_simulations):
            return checks.get_check(name)(quick=True, backend=backend, **dict(kwargs))

    return run
