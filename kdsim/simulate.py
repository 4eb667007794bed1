"""``simulate``: validate → plan → engine → SimResult."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import __version__
from . import _validate as V
from .engines import get_engine
from .estimators import Estimator, get_estimator
from .problems.base import Problem
from .results import SimResult
from .rng import stream_ids


@dataclass(frozen=True)
class Plan:
    """A validated simulation request (what every engine receives)."""

    theta: np.ndarray
    lams: np.ndarray
    step: float
    steps: int
    n_seeds: int
    batch_size: int
    estimator: Estimator
    record_steps: np.ndarray
    seed: int
    x0: np.ndarray
    streams: np.ndarray          # (λ, seed) stream numbers of the index generator
    svrg_period: int
    dtype: str = "float64"       # iterate precision of compiled engines: "float64" or "float32"


def record_times(steps, record_every):
    """Iterations at which records are taken: 0, k, 2k, … and always the last step."""
    times = np.arange(0, steps + 1, record_every)
    if times[-1] != steps:
        times = np.append(times, steps)
    return times


def make_plan(problem, theta, lams, step, steps, seeds, batch_size=1, estimator="kd",
              record_every=1, seed=0, x0=None, common_random_numbers=True, svrg_period=None,
              dtype="float64"):
    """Validate every argument of ``simulate`` and return a Plan."""
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a kdsim problem (e.g. kdsim.LeastSquares); got {type(problem).__name__}")
    est = get_estimator(estimator)
    theta = problem.check_teacher(theta)
    lams = V.lambda_grid(lams)
    step = V.positive_float("step", step)
    steps = V.int_in_range("steps", steps, 1)
    n_seeds = V.int_in_range("seeds", seeds, 1)
    batch_size = V.int_in_range("batch_size", batch_size, 1, problem.n)
    record_every = V.int_in_range("record_every", record_every, 1, steps)
    seed = V.int_in_range("seed", seed, 0, 2**63 - 1)
    x0 = problem.default_x0() if x0 is None else V.as_vector("x0", x0, problem.dim)
    if svrg_period is None:
        svrg_period = max(1, problem.n // batch_size)
    svrg_period = V.int_in_range("svrg_period", svrg_period, 1)
    if not isinstance(common_random_numbers, (bool, np.bool_)):
        raise TypeError(f"common_random_numbers must be True or False; got {common_random_numbers!r}")
    streams = stream_ids(n_seeds, len(lams), bool(common_random_numbers))
    try:
        dtype = np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"dtype must be 'float64' or 'float32'; got {dtype!r}") from None
    dtype = V.choice("dtype", dtype, ("float64", "float32"))
    return Plan(theta, lams, step, steps, n_seeds, batch_size, est,
                record_times(steps, record_every), seed, x0, streams, svrg_period, dtype)


def plan_config(problem, plan, backend):
    """JSON-serialisable configuration of a run (hashed into the result)."""
    return {
        "kdsim_version": __version__,
        "problem": problem.name, "problem_fingerprint": problem.fingerprint(),
        "teacher_sha": V.array_digest(plan.theta),
        "lams": plan.lams.tolist(), "step": plan.step, "steps": plan.steps,
        "seeds": plan.n_seeds, "batch_size": plan.batch_size,
        "estimator": plan.estimator.name, "record_steps": [int(plan.record_steps[0]), int(plan.record_steps[-1]), len(plan.record_steps)],
        "seed": plan.seed, "x0_sha": V.array_digest(plan.x0),
        "common_random_numbers": bool(np.all(plan.streams == plan.streams[0])) if len(plan.lams) > 1 else True,
        "svrg_period": plan.svrg_period, "backend": backend, "dtype": plan.dtype,
    }


def simulate(problem, theta, lams, step, steps, seeds, batch_size=1, estimator="kd",
             record_every=1, backend="auto", seed=0, x0=None, common_random_numbers=True,
             svrg_period=None, dtype="float64", reduce=False, memory_budget=None):
    """Run ``seeds`` trajectories of a stochastic method for each KD weight in ``lams``.

    Parameters
    ----------
    problem : a kdsim problem (``LeastSquares``, ``SoftmaxRegression``, …)
    theta : teacher in the student's parameter space (deep linear: also an end-to-end map)
    lams : KD weight λ or a sequence of them
    step : constant step size γ > 0
    steps : number of iterations
    seeds : number of independent trajectories per λ
    batch_size : minibatch size b in [1, n], drawn without replacement
    estimator : "sgd", "kd", "kd_loss", "corrected" or "svrg" (see ``kdsim.estimators``)
    record_every : record every k steps (0 and the last step always included)
    backend : "auto" (numba when available and it has kernels for the problem, else numpy),
        "numpy" (the readable reference) or "numba"; every backend draws the same minibatches
    seed : master seed of the counter-based index generator
    x0 : start (default: ``problem.default_x0()``)
    common_random_numbers : all λ share each seed's index stream (default True)
    svrg_period : SVRG snapshot period m (default n // b)
    dtype : iterate precision, "float64" or "float32" (float32 needs a compiled engine)
    reduce : return only per-(λ, record) means and variances over seeds (``SimSummary``)
    memory_budget : bytes the numba engine may use for records (it runs seeds in chunks)

    Returns
    -------
    SimResult with arrays (λ, seed, record) of ‖x_t − x*‖², f(x_t) − f*, ‖x_t − θ‖²
    (or a SimSummary when ``reduce``).
    """
    from .engines import numba_cpu, reference
    from .results import SimSummary

    engine = get_engine(backend)
    plan = make_plan(problem, theta, lams, step, steps, seeds, batch_size, estimator,
                     record_every, seed, x0, common_random_numbers, svrg_period, dtype)
    resolved = engine.select(problem) if hasattr(engine, "select") else engine
    if plan.dtype != "float64" and resolved is reference:
        raise ValueError("dtype='float32' needs a compiled engine (backend='numba'); "
                         "the numpy reference engine is float64 only")
    config = plan_config(problem, plan, backend)
    kw = {} if memory_budget is None or resolved is not numba_cpu else {"memory_budget": memory_budget}
    if reduce:
        if resolved is numba_cpu:
            red = numba_cpu.run_reduced(problem, plan, **kw)
        else:
            red = SimSummary.reduce_arrays(resolved.run(problem, plan))
        return SimSummary(lams=plan.lams, steps=plan.record_steps, means=red["mean"], variances=red["var"],
                          count=red["count"], diverged_step=red["diverged_step"], config=config,
                          timing=_timing(resolved))
    arrays = resolved.run(problem, plan, **kw)
    return SimResult(lams=plan.lams, steps=plan.record_steps, config=config, timing=_timing(resolved), **arrays)


def _timing(engine):
    return engine.last_timing() if hasattr(engine, "last_timing") else {}
