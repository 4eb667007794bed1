"""``simulate``: validate → plan → engine → SimResult."""
from __future__ import annotations

import time
import warnings

import numpy as np

from . import _validate as V
from . import theory
from ._version import __version__
from .engines import get_engine, run_engine
from .plan import Plan, make_plan, record_times  # noqa: F401  (re-exported: kdsim.simulate.make_plan)
from .results import SimResult, SimSummary, stability_note


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
        "common_random_numbers": plan.common_random_numbers if len(plan.lams) > 1 else True,
        "svrg_period": plan.svrg_period, "backend": backend, "dtype": plan.dtype,
        "steps_per_epoch": plan.steps_per_epoch, **training_config(plan),
    }


def training_config(plan):
    """The training-setup options of a plan that differ from their defaults (so the configuration,
    and its hash, of a run that uses none of them is what it always was)."""
    out = {}
    if plan.sampling != "iid":
        out["sampling"] = plan.sampling
    if plan.drop_last:
        out["drop_last"] = True
    if plan.momentum:
        out["momentum"] = plan.momentum
    if plan.lam_schedule.kind != "constant":
        out["lam_schedule"] = str(plan.lam_schedule)
    if plan.svrg_warmup:
        out["svrg_warmup"] = plan.svrg_warmup
    if not plan.svrg_correction:
        out["svrg_correction"] = False
    if plan.teacher_l2 is not None:
        out["teacher_l2"] = plan.teacher_l2
    if plan.temperature != 1.0:
        out["temperature"] = plan.temperature
    if plan.full_grad != "exact":
        out["full_grad"] = plan.full_grad
    return out


def simulate(problem, theta, lams, step, steps=None, seeds=None, batch_size=1, estimator="kd",
             record_every=1, backend="auto", seed=0, x0=None, common_random_numbers=True,
             svrg_period=None, dtype="float64", reduce=False, memory_budget=None, *, sampling="iid",
             drop_last=False, momentum=0.0, lam_schedule=None, svrg_warmup=0, svrg_correction=True,
             epochs=None, record_every_epoch=None, teacher_l2=None, keep_iterates=False, temperature=1.0,
             full_grad="exact"):
    """Run ``seeds`` trajectories of a stochastic method for each KD weight in ``lams``.

    Parameters
    ----------
    problem : Problem
        A kdsim problem (``LeastSquares``, ``SoftmaxRegression``, …).
    theta : array_like
        The teacher in the student's parameter space (deep linear: also an end-to-end map).
    lams : float or sequence of float
        KD weight λ, or a grid of them.
    step : float
        Constant step size γ > 0.
    steps : int, optional
        Number of iterations (or give ``epochs``).
    seeds : int
        Number of independent trajectories per λ.
    batch_size : int, default 1
        Minibatch size b in [1, n], drawn without replacement.
    estimator : {"sgd", "kd", "kd_loss", "corrected", "svrg"}, default "kd"
        The control-variate estimator (``kdsim.estimators``).
    record_every : int, default 1
        Record every k steps (step 0 and the last step are always recorded).
    backend : {"auto", "numpy", "numba", "cupy"}, default "auto"
        "auto" is numba when it is available and the problem exports a kernel spec, else numpy
        (the readable reference); every backend draws the same minibatches.
    seed : int, default 0
        Master seed of the counter-based index generator.
    x0 : array_like, optional
        Start (default ``problem.default_x0()``).
    common_random_numbers : bool, default True
        All λ share each seed's index stream.
    svrg_period : int, optional
        SVRG snapshot period m in steps (default n // b); the authors' "every 2 epochs" is
        ``svrg_period=2 * K``.
    dtype : {"float64", "float32"}, default "float64"
        Iterate precision (float32 needs a compiled engine).
    reduce : bool, default False
        Return only per-(λ, record) means and variances over the seeds (``SimSummary``).
    memory_budget : int, optional
        Bytes the run may use (default half the available memory); every backend runs seeds in
        chunks that fit, planned before anything is allocated.
    sampling : {"iid", "reshuffle", "shuffle_once"}, default "iid"
        How minibatches are drawn (``kdsim.rng``): a fresh b-subset each step; a new random
        permutation each epoch cut into batches (random reshuffling, as a shuffled data loader);
        or one permutation reused every epoch.
    drop_last : bool, default False
        Under reshuffling, drop the partial last batch of each epoch instead of taking it.
    momentum : float, default 0
        Heavy-ball momentum μ in [0, 1), torch's convention (w ← μw + g, x ← x − γw, w₀ = 0).
        On least squares the update stays linear in (x, w), so iterates stay affine in λ and
        the affine form (docs/theory.md §5.1) still serves every λ from one pair per seed.
    lam_schedule : str, dict or LambdaSchedule, optional
        Per-epoch KD weight: "constant" (default), "decay[:factor]" (λ·0.9^e), or
        "increase[:factor[:cap]]" (min(λ·1.047^e, 1)); see ``kdsim.schedules``.
    svrg_warmup : int, default 0
        SVRG only: epochs of plain SGD before the first snapshot (the authors' ``start_svrg``);
        refreshes then follow every ``svrg_period`` steps.
    svrg_correction : bool, default True
        SVRG only: add the snapshot's full gradient (False: the authors' SVRG without
        ``--teacher_full_grad``, a biased KD step toward a moving teacher).
    teacher_l2 : float, optional
        Weight decay w >= 0 added to the teacher's term, ∇ℓ_B(θ) + wθ (the authors'
        ``--teacher_wd``). Estimators "kd" and "kd_loss" are its cases w = α and w = 0; with
        ``teacher_l2`` given the two coincide.
    temperature : float, default 1
        τ > 0 of the literal KD loss for softmax losses (softmax regression, deep linear with
        softmax) and estimators "kd" and "kd_loss": the step follows the gradient of
        (1 − λ)·CE(y, softmax(z)) + λτ²·CE(softmax(z^θ/τ), softmax(z/τ)) (plus the teacher's weight
        decay for "kd" or ``teacher_l2``); at τ ≠ 1 it is no longer ∇f_B(x) − λ∇f_B(θ) (docs/theory.md §2).
    full_grad : {"exact", "batch_means"}, default "exact"
        The full gradients of corrected KD (the teacher's, T) and SVRG (the snapshot's): exact, or
        the authors' mean of a data loader's batch means over 0 .. n−1 cut into batches of b
        (``kdsim.rng.batch_mean_weights``), which weighs a partial last batch's samples more and is
        then inexact.
    keep_iterates : bool, default False
        Also return the iterates at every record step (``SimResult.iterates``, (λ, seed, record,
        dim); not with ``reduce``). A problem with a held-out split (``Problem.with_test``) adds
        the records ``test_loss`` and, for classifiers, ``test_accuracy``, computed from them.
    epochs : int, optional
        Run ``epochs · K`` steps instead of ``steps``, with K = ⌈n/b⌉ steps per epoch (⌊n/b⌋
        with ``drop_last``): an epoch is one pass over the data whatever the sampling scheme,
        the last batch of a reshuffled epoch having n − (K − 1)·b samples.
    record_every_epoch : int, optional
        Record every k epochs (k·K steps), i.e. at epoch ends, instead of ``record_every``.

    Returns
    -------
    SimResult or SimSummary
        Arrays (λ, seed, record) of ‖x_t − x*‖², f(x_t) − f*, ‖x_t − θ‖², or their moments
        with ``reduce``.

    Warns
    -----
    StabilityWarning
        Before the run, when the step exceeds a known stability limit (least squares).
    DivergenceWarning
        After the run, when trajectories diverged: how many, and the limit when known.
    """
    if not isinstance(reduce, (bool, np.bool_)):
        raise TypeError(f"reduce must be True or False; got {reduce!r}")
    if memory_budget is not None:
        memory_budget = V.int_in_range("memory_budget", memory_budget, 1)
    if seeds is None:
        raise TypeError("simulate() needs seeds (the number of trajectories per λ)")
    steps, record_every = epoch_steps(problem, batch_size, drop_last, steps, record_every, epochs,
                                      record_every_epoch)
    plan = make_plan(problem, theta, lams, step, steps, seeds, batch_size, estimator,
                     record_every, seed, x0, common_random_numbers, svrg_period, dtype, memory_budget,
                     sampling, drop_last, momentum, lam_schedule, svrg_warmup, svrg_correction, teacher_l2,
                     bool(keep_iterates) and not reduce, temperature, full_grad)
    engine = get_engine(backend, problem)
    config = plan_config(problem, plan, backend)
    # the mean-square limit is that of i.i.d. sampling without momentum; no limit is claimed otherwise
    stability = (theory.step_stability(problem, plan.step, plan.batch_size, plan.estimator.name)
                 if plan.sampling == "iid" and not plan.momentum else {})
    if stability.get("ratio") is not None and stability["ratio"] > 1.0:
        warnings.warn(StabilityWarning(stability_note(plan.step, stability)), stacklevel=2)
    out = run_engine(problem, plan, engine, reduce=bool(reduce), memory_budget=memory_budget)
    if reduce:
        red = out.arrays
        result = SimSummary(lams=plan.lams, steps=plan.record_steps, means=red["mean"], variances=red["var"],
                            count=red["count"], diverged_step=red["diverged_step"], config=config,
                            timing=out.timing, stability=stability)
    else:
        arrays = dict(out.arrays)
        heldout = {name: arrays.pop(name) for name in plan.heldout}
        iterates = arrays.pop("iterates", None)
        result = SimResult(lams=plan.lams, steps=plan.record_steps, config=config, timing=out.timing,
                           stability=stability, heldout=heldout, iterates=iterates, **arrays)
    diverged = result.diverged
    if diverged.any():
        limit = stability.get("limit")
        known = (f"; the largest mean-square stable step is {limit:.6g}" if limit is not None
                 else "; reduce the step" if not stability
                 else " below least squares' mean-square stability limit (the growth rule flagged them)")
        warnings.warn(DivergenceWarning(
            f"{int(diverged.sum())} of {diverged.size} trajectories diverged (first at step "
            f"{int(result.diverged_step[diverged].min())}) with step {plan.step:.6g}{known}; their records are "
            "left out of means (divergence_summary() per λ)"), stacklevel=2)
    return result


def epoch_steps(problem, batch_size, drop_last, steps, record_every, epochs, record_every_epoch):
    """(steps, record_every) from either steps or ``epochs``, and ``record_every`` or ``record_every_epoch``."""
    if (steps is None) == (epochs is None):
        raise TypeError("give exactly one of steps and epochs" if steps is not None
                        else "simulate() needs steps or epochs")
    if epochs is None and record_every_epoch is None:
        return steps, record_every
    b = V.int_in_range("batch_size", batch_size, 1, problem.n)
    K = problem.n // b if drop_last else -(-problem.n // b)
    if epochs is not None:
        steps = V.int_in_range("epochs", epochs, 1) * K
    if record_every_epoch is not None:
        if record_every != 1:
            raise TypeError("give record_every or record_every_epoch, not both")
        record_every = V.int_in_range("record_every_epoch", record_every_epoch, 1) * K
        if isinstance(steps, int) and record_every > steps:
            raise ValueError(f"record_every_epoch={record_every_epoch} is {record_every} steps, beyond the run's "
                             f"{steps} steps ({steps / K:g} epochs of {K} steps)")
    return steps, record_every


class StabilityWarning(UserWarning):
    """A run's step size is beyond the known stability limit (its trajectories will diverge)."""


class DivergenceWarning(UserWarning):
    """Some trajectories of a run diverged: how many, and the largest stable step when it is known."""


def warmup(family="least_squares", dtype="float64", backend="numba"):
    """Compile (or load from numba's cache) the kernels of one problem family; return seconds.

    ``family``: "least_squares", "softmax", "logistic", "poisson" or "deep_linear".
    """
    from .problems import DeepLinear, LeastSquares, LogisticRegression, PoissonRegression, SoftmaxRegression
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 3))
    makers = {
        "least_squares": lambda: LeastSquares(A, rng.standard_normal(6)),
        "softmax": lambda: SoftmaxRegression(A, np.arange(6) % 3, 3, l2=0.1),
        "logistic": lambda: LogisticRegression(A, (np.arange(6) % 2).astype(float), l2=0.1),
        "poisson": lambda: PoissonRegression(0.3 * A, (np.arange(6) % 3).astype(float), l2=0.1),
        "deep_linear": lambda: DeepLinear(A, rng.standard_normal((6, 2)), hidden=(2,), l2=0.1),
    }
    problem = makers[V.choice("family", family, tuple(makers))]()
    t0 = time.perf_counter()
    theta = problem.default_x0() + 0.1
    for est in ("kd", "svrg"):
        simulate(problem, theta, [0.0, 0.5], 0.01, 2, 2, estimator=est, backend=backend, dtype=dtype)
    return time.perf_counter() - t0
