"""The one driver of every engine: memory plan, seed chunks, the unsafe-seed fallback, timing.

An engine is a module (or object) with

* ``NAME``: its backend name;
* ``TAKES``: "spec" (it reads the problem's ``KernelSpec``) or "problem" (the numpy
  reference, which runs the problem's own public protocol as ground truth);
* ``prepare(source, plan, **options) -> runner``.

A runner has ``kernel`` (the path it runs), ``dtype`` (its working precision),
``bytes_per_seed`` and ``fixed_bytes`` (its part of the memory model), ``timers`` (``Timer``
objects whose seconds the driver reports),
``run_chunk(s0, s1) -> (arrays, unsafe)`` for the plan's seeds s0 .. s1 − 1 — arrays
``dist2_opt``, ``subopt``, ``dist2_teacher`` (L, s, R), ``diverged_step`` (L, s), ``x_final``
(L, s, dim) and a boolean mask of seeds its fast path could not decide, or None — and
``run_trajectories(seeds)``, the per-trajectory path the driver reruns those seeds on.

Chunks keep each seed's global stream number, so chunking never changes a number where
the engine controls the arithmetic (see docs/architecture.md for where a BLAS call may
round differently).

Divergence is decided here for every engine alike. A trajectory has diverged at the first
step where its engine's guard fired (‖x‖² beyond ``kdsim.plan.guard_limit``, or not finite)
or at the first record that is not finite or whose ‖x_t − x*‖² exceeds ``GROWTH_LIMIT`` times its
scale: the largest of ‖x*‖², max(1, λ²)·‖θ − x*‖² (the offset of KD's fixed point) and the
trajectory's own ‖x_t − x*‖² and ‖x_t − θ‖² at its first two records (its start, and the noise
it gathered over one record interval), in canonical coordinates. A stable run's plateau stays far
below it; a run beyond its stability limit grows geometrically past it. Records from that step on are NaN
and the final iterate is NaN. ``coefficients`` (the affine form's λ-quadratics) uses only the
engines' guard.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import _validate as V
from .. import memory
from ..moments import RunningMoments, array_module, to_host
from ..plan import RECORDS


#: a trajectory whose ‖x_t − x*‖² exceeds this multiple of its scale (module docstring) has diverged
GROWTH_LIMIT = 1e6


@dataclass
class Timer:
    """Seconds spent in one kind of work of a run (``compile_s`` for JIT compilation or cache loads)."""

    run_s: float = 0.0
    compile_s: float = 0.0


@dataclass
class RunOutput:
    """What a run returns: record arrays (or moments with ``reduce``) and its timing."""

    arrays: dict
    timing: dict = field(default_factory=dict)


def _source(engine, problem, plan):
    if engine.TAKES != "spec":
        return problem
    return problem.kernel_spec(plan.theta, plan.estimator, plan.teacher_l2, plan.temperature, plan.full_weights)


def prepare(problem, plan, engine, **options):
    """The engine's runner for ``problem`` and ``plan`` (its kernel spec, or the problem itself)."""
    return engine.prepare(_source(engine, problem, plan), plan, **options)


def affine_path(spec, plan, path):
    """Whether least squares runs in the affine form x_t(λ) = u_t + λv_t (docs/theory.md §5.1) on a kernel
    spec: ``path`` "auto" (when it applies), "affine" (required: a clear error when it does not apply) or
    "trajectory" (never). It applies to least squares under common random numbers, a ridge on every
    coordinate and an estimator affine in λ without a snapshot (sgd, kd, kd_loss, corrected)."""
    V.choice("path", path, ("auto", "affine", "trajectory"))
    est = plan.estimator
    ok = (spec.family == "least_squares" and plan.common_random_numbers and not est.snapshot
          and plan.lambda_scales is not None and spec.l2_mask is None)
    if path == "affine" and not ok:
        raise ValueError("the affine form needs least squares, common random numbers, a ridge on every "
                         "coordinate (l2_bias=True) and an estimator among sgd, kd, kd_loss, corrected; got "
                         f"{spec.family}, estimator {est.name!r}, common_random_numbers={plan.common_random_numbers}, "
                         f"l2_bias={spec.l2_mask is None}")
    return ok and path != "trajectory"


def _chunk(runner, s0, s1, divergence, heldout=None, device=False):
    """One chunk with the unsafe seeds rerun per trajectory, divergence decided and the held-out records
    added (``heldout``: the problem, when the plan has held-out records); (arrays, seeds rerun).
    ``device``: the arrays stay where the engine computed them (``runner.run_chunk(…, device=True)``)."""
    res, unsafe = runner.run_chunk(s0, s1, device=True) if device else runner.run_chunk(s0, s1)
    nf = 0
    if unsafe is not None and unsafe.any():
        sel = np.flatnonzero(unsafe)
        redo = runner.run_trajectories(s0 + sel)
        xp = array_module(res["dist2_opt"])
        for k in res:
            res[k][:, xp.asarray(sel)] = xp.asarray(redo[k])
        nf = len(sel)
    divergence.apply(res)
    if heldout is not None:
        it = res["iterates"]
        for name, v in heldout.heldout_records(it.reshape(-1, it.shape[-1])).items():
            res[name] = v.reshape(it.shape[:-1])
        if not divergence.return_iterates:
            del res["iterates"]
    return res, nf


class Divergence:
    """The driver's divergence rule (module docstring), applied to each chunk's arrays in place."""

    def __init__(self, problem, plan, growth_limit=GROWTH_LIMIT):
        self.growth_limit = np.inf if growth_limit is None else float(growth_limit)
        x_star = problem.canonical(problem.solution())
        theta = problem.canonical_teacher(plan.theta)
        D2 = float(np.sum((theta - x_star) ** 2))
        # per λ: the teacher's offset of KD's fixed point (λ²D² on least squares) joins the scale
        with np.errstate(over="ignore"):
            lam2 = np.maximum(1.0, np.asarray(plan.lams, dtype=float) ** 2)
        self.scale = np.maximum(max(float(x_star @ x_star), np.finfo(float).tiny), lam2 * D2)      # (L,)
        self.rec_steps = np.asarray(plan.record_steps)
        # the trajectory's first two records (its start, and its noise after one record interval)
        self.window = 2
        self.return_iterates = plan.return_iterates

    def apply(self, res):
        """Decide divergence in place in the chunk's arrays (numpy, or all of another array module: CuPy)."""
        xp = array_module(res["dist2_opt"])
        div = res["diverged_step"]
        d2o = res["dist2_opt"]
        with np.errstate(invalid="ignore", over="ignore"):
            if (d2o.size == 0 or (float(d2o.max()) <= self.growth_limit * self.scale.min()
                                  and bool(xp.isfinite(res["subopt"].sum()))
                                  and bool(xp.isfinite(res["dist2_teacher"].sum())))):
                return                                   # every record finite and within the limit (fast path)
        rec_steps = xp.asarray(self.rec_steps)
        alive = (div[:, :, None] < 0) | (rec_steps < div[:, :, None])
        with np.errstate(invalid="ignore", over="ignore"):
            first_two = xp.fmax(d2o[:, :, :self.window], res["dist2_teacher"][:, :, :self.window])
            early = xp.fmax(xp.where(xp.isnan(first_two), -xp.inf, first_two).max(axis=2), 0.0)
            scale = xp.maximum(early, xp.asarray(self.scale)[:, None])                                # (L, S)
            bad = ~xp.isfinite(d2o) | (d2o > self.growth_limit * scale[:, :, None])
        for name in RECORDS[1:]:
            bad |= ~xp.isfinite(res[name])
        bad &= alive
        hit = bad.any(axis=2)
        if not bool(hit.any()):
            return
        first = rec_steps[xp.argmax(bad, axis=2)]
        div[hit] = first[hit]
        dead = (div[:, :, None] >= 0) & (rec_steps >= div[:, :, None])
        for name in RECORDS:
            res[name][dead] = np.nan
        if "iterates" in res:
            res["iterates"][dead] = np.nan
        res["x_final"][div >= 0] = np.nan


def bytes_per_seed(runner, plan):
    """Working bytes of one seed in a chunk: the engine's, and the divergence rule's boolean masks."""
    return runner.bytes_per_seed + 4 * plan.n_lams * plan.n_records


def chunk_plan(runner, plan, *, reduce=False, memory_budget=None, chunk_seeds=None):
    """The run's memory plan: the driver's outputs and the engine's fixed bytes, the engine's bytes per seed."""
    fixed = runner.fixed_bytes + memory.output_bytes(plan.n_lams, plan.n_seeds, plan.n_records,
                                                     len(plan.x0), reduce=reduce,
                                                     n_quantities=len(plan.record_names))
    if plan.return_iterates and not reduce:
        fixed += plan.n_lams * plan.n_seeds * plan.n_records * len(plan.x0) * 8
    return memory.plan_chunks(plan.n_seeds, bytes_per_seed(runner, plan), fixed_bytes=fixed,
                              budget=_budget(runner, memory_budget), chunk_seeds=chunk_seeds,
                              advice=memory.ADVICE_REDUCED if reduce else memory.ADVICE_FULL)


def _budget(runner, memory_budget):
    """The budget given, else the runner's default (a GPU's free memory), else half the host's."""
    if memory_budget is not None:
        return memory_budget
    default = getattr(runner, "default_budget", None)
    return default() if default is not None else None


def run(problem, plan, engine, *, reduce=False, memory_budget=None, chunk_seeds=None, growth_limit=GROWTH_LIMIT,
        **options):
    """Run a validated plan on ``engine``; a ``RunOutput``.

    Full records: ``arrays`` as described in the module docstring, for every seed.
    ``reduce``: ``{"mean": {record: (L, R)}, "var": {record: (L, R)}, "count": (L,),
    "diverged_step": (L, S)}`` over the seeds that never diverged, streamed chunk by chunk
    through running moments, so the (λ, seed, record) arrays are never allocated. A runner with
    ``reduces_on_device`` (the CUDA engine) keeps each chunk's records on the device, where the
    divergence rule and the chunk's moments are computed; only (λ, record) moments and the
    divergence steps come back.
    ``memory_budget``: bytes the run may use (default half the available memory);
    ``chunk_seeds`` forces a chunk size. ``growth_limit``: the divergence rule's growth factor
    (None: only the engine's guard and non-finite records, as the engines' own tests use).
    ``options`` go to the engine's ``prepare``.
    """
    t_start = time.perf_counter()
    runner = prepare(problem, plan, engine, **options)
    cplan = chunk_plan(runner, plan, reduce=reduce, memory_budget=memory_budget, chunk_seeds=chunk_seeds)
    divergence = Divergence(problem, plan, growth_limit)
    heldout = problem if plan.heldout else None
    names = plan.record_names
    L, S, R = plan.n_lams, plan.n_seeds, plan.n_records
    fallback = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if reduce:
            moments = {name: RunningMoments(L, R) for name in names}
            div = np.full((L, S), -1, dtype=np.int64)
            device = getattr(runner, "reduces_on_device", False) and heldout is None
            for s0, s1 in cplan.chunks:
                res, nf = _chunk(runner, s0, s1, divergence, heldout, device)
                fallback += nf
                div[:, s0:s1] = to_host(res["diverged_step"])
                keep = res["diverged_step"] < 0
                for name in names:
                    moments[name].add(res[name], keep, consume=True)
                del res, keep                                # one chunk in memory at a time
            out = {"mean": {}, "var": {}, "diverged_step": div}
            for name in names:
                out["mean"][name], out["var"][name], out["count"] = moments[name].result()
        elif len(cplan.chunks) == 1:                     # one chunk: its arrays are the result
            out, fallback = _chunk(runner, 0, S, divergence, heldout)
        else:
            out = None
            for s0, s1 in cplan.chunks:
                res, nf = _chunk(runner, s0, s1, divergence, heldout)
                fallback += nf
                if out is None:                          # shapes and dtypes of the first chunk's arrays
                    out = {k: np.full((L, S) + v.shape[2:], -1 if v.dtype.kind == "i" else np.nan, dtype=v.dtype)
                           for k, v in res.items()}
                for k, v in res.items():
                    out[k][:, s0:s1] = v
                del res
    return RunOutput(out, timing(runner, engine, plan, cplan, t_start, fallback))


def coefficients(problem, plan, engine, *, memory_budget=None, chunk_seeds=None, **options):
    """Per-seed quadratics in λ of the records (least squares' affine form, docs/theory.md §5.1).

    ``arrays``: ``{record: (S, R, 3)}`` (c0, c1, c2 of c0 + c1·λ + c2·λ²) and ``diverged_step``
    (L, S) for the plan's own λ grid. Coefficients are NaN once every λ of the plan diverged
    for a seed, and for every record of a seed the affine form could not decide (its
    ``diverged_step`` then comes from the per-trajectory path).
    """
    t_start = time.perf_counter()
    runner = prepare(problem, plan, engine, path="affine", **options)
    per_seed = 9 * plan.n_records * 8
    cplan = memory.plan_chunks(plan.n_seeds, runner.bytes_per_seed + per_seed,
                               fixed_bytes=runner.fixed_bytes + plan.n_seeds * per_seed + plan.n_lams * plan.n_seeds * 8,
                               budget=_budget(runner, memory_budget), chunk_seeds=chunk_seeds)
    coeffs = np.full((plan.n_seeds, plan.n_records, 3, 3), np.nan)
    div = np.full((plan.n_lams, plan.n_seeds), -1, dtype=np.int64)
    fallback = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for s0, s1 in cplan.chunks:
            d, unsafe, c = runner.run_coefficients(s0, s1)
            if unsafe.any():
                sel = np.flatnonzero(unsafe)
                c[sel] = np.nan
                d[:, sel] = runner.run_trajectories(s0 + sel)["diverged_step"]
                fallback += len(sel)
            coeffs[s0:s1] = c
            div[:, s0:s1] = d
    out = {**{name: coeffs[:, :, q, :] for q, name in enumerate(RECORDS)}, "diverged_step": div}
    return RunOutput(out, timing(runner, engine, plan, cplan, t_start, fallback))


def timing(runner, engine, plan, cplan, t_start, fallback):
    """The timing dict of a run (see ``SimResult.timing``)."""
    timers = runner.timers
    run_s = timers["kernel"].run_s
    steps = plan.n_lams * plan.n_seeds * plan.steps
    return {
        "engine": engine.NAME, "kernel": runner.kernel, "dtype": runner.dtype,
        **getattr(runner, "timing_extra", {}),
        "chunks": len(cplan.chunks), "chunk_seeds": cplan.chunk_seeds, "fallback_seeds": fallback,
        "compile_s": sum(t.compile_s for t in timers.values()), "run_s": run_s,
        "records_s": timers["records"].run_s if "records" in timers else 0.0,
        "total_s": time.perf_counter() - t_start, "trajectory_steps": steps,
        "throughput": steps / run_s if run_s > 0 else float("inf"),
        "peak_plan_bytes": cplan.peak_bytes, "memory_budget": cplan.budget,
    }
