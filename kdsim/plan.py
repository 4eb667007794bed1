"""What every engine receives: the validated ``Plan`` of a run, and the constants engines share.

``make_plan`` validates every argument of ``kdsim.simulate``; engines and the driver read
the plan and never re-validate. Stream numbers of the index generator are derived per
seed range (``Plan.stream_ids``), so nothing proportional to the number of seeds is
allocated before the memory plan.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate as V
from . import memory
from .estimators import Estimator, get_estimator
from .problems.base import Problem
from .rng import SAMPLING_CODES, SAMPLINGS, batch_mean_weights, stream_ids, streams_of_seeds
from .schedules import LambdaSchedule, coefficient_table

#: the per-trajectory quantities every engine records, in this order
RECORDS = ("dist2_opt", "subopt", "dist2_teacher")
#: squared norm beyond which an iterate counts as diverged (float64; see ``guard_limit``)
DIVERGENCE_LIMIT = 1e100
#: working precisions of the iterate arithmetic
DTYPES = ("float64", "float32")


def resolve_dtype(dtype, plan=None):
    """The working dtype: ``dtype`` if given, else ``plan.dtype``, else float64 (a numpy dtype)."""
    if dtype is None:
        dtype = getattr(plan, "dtype", None) or "float64"
    try:
        name = np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}") from None
    return np.dtype(V.choice("dtype", name, DTYPES))


def guard_limit(dtype):
    """The divergence limit in a working dtype: 1e100, or the dtype's largest value if smaller (a float)."""
    return min(DIVERGENCE_LIMIT, float(np.finfo(np.dtype(dtype)).max))


def record_times(steps, record_every):
    """Iterations at which records are taken: 0, k, 2k, … and always the last step."""
    times = np.arange(0, steps + 1, record_every)
    if times[-1] != steps:
        times = np.append(times, steps)
    return times


@dataclass(frozen=True)
class Plan:
    """A validated simulation request (what every engine receives).

    Seeds are numbered ``first_seed .. first_seed + n_seeds − 1``; a plan of a seed
    subrange (``seed_range``) draws exactly the minibatches the whole plan draws there.
    """

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
    common_random_numbers: bool
    svrg_period: int
    dtype: str = "float64"       # iterate precision of compiled engines: "float64" or "float32"
    first_seed: int = 0
    sampling: str = "iid"        # kdsim.rng.SAMPLINGS
    drop_last: bool = False
    momentum: float = 0.0        # heavy ball, torch's convention: w ← μw + g, x ← x − γw
    lam_schedule: LambdaSchedule = LambdaSchedule()
    svrg_warmup: int = 0         # epochs of plain SGD before SVRG's first snapshot
    svrg_correction: bool = True
    steps_per_epoch: int = 1
    teacher_l2: float | None = None   # weight decay w of the teacher's term ∇ℓ_B(θ) + wθ (None: the estimator's)
    heldout: tuple = ()          # held-out records the driver adds (the problem's test split)
    temperature: float = 1.0     # τ of the literal tempered KD loss (softmax losses, "kd" and "kd_loss")
    full_grad: str = "exact"     # "exact" or "batch_means" (the authors' mean of a loader's batch means)
    n_samples: int = 0           # n of the problem

    @property
    def full_weights(self):
        """Per-sample weights of every full gradient (corrected KD's T, SVRG's ∇f(y)), or None for 1/n.

        ``full_grad="batch_means"``: ``kdsim.rng.batch_mean_weights`` (inexact with a partial batch).
        """
        if self.full_grad == "exact":
            return None
        return batch_mean_weights(self.n_samples, self.batch_size, self.drop_last)
    return_iterates: bool = False

    @property
    def keep_iterates(self):
        """Engines save the iterate at every record step (held-out records, or returned to the user)."""
        return self.return_iterates or bool(self.heldout)

    @property
    def record_names(self):
        """Every record of the run: ``RECORDS`` and the held-out ones."""
        return RECORDS + tuple(self.heldout)

    @property
    def sampling_code(self):
        return SAMPLING_CODES[self.sampling]

    @property
    def n_epochs(self):
        """Epochs the run's steps touch, ⌈steps / K⌉ (at least 1)."""
        return max(1, -(-self.steps // self.steps_per_epoch))

    @property
    def coefficient_table(self):
        """(λ, epoch, 2) coefficients (a, c) of every λ per epoch (``kdsim.schedules.coefficient_table``)."""
        epochs = self.n_epochs if (self.lam_schedule.kind != "constant" or self.svrg_warmup) else 1
        return coefficient_table(self.estimator, self.lams, self.lam_schedule, epochs,
                                 self.svrg_warmup, self.svrg_correction)

    @property
    def lambda_scales(self):
        """s_e with a_e = λ·s_e and c_e = c(λ)·s_e for every λ of the grid, or None (the affine form's premise).

        True for the constant schedule, for decay, and for increase while no λ of the grid reaches
        the cap within the run; not for SVRG's warm-up (SVRG is not affine anyway).
        """
        table = self.coefficient_table
        if table.shape[1] == 1:
            return np.ones(1)
        s = self.lam_schedule.scales(table.shape[1])
        base = table[:, :1, :]
        with np.errstate(over="ignore", invalid="ignore"):
            ok = np.array_equal(table, base * s[None, :, None])
        return s if ok else None

    @property
    def snapshot_start(self):
        """First step of SVRG's refreshes after the warm-up (a snapshot is also taken at step 0)."""
        return self.svrg_warmup * self.steps_per_epoch

    @property
    def n_lams(self):
        return len(self.lams)

    @property
    def n_records(self):
        return len(self.record_steps)

    def stream_ids(self, s0=0, s1=None):
        """(λ, seed) stream numbers of the plan's seeds s0 .. s1 − 1 (local indices)."""
        s1 = self.n_seeds if s1 is None else s1
        return stream_ids(s1 - s0, self.n_lams, self.common_random_numbers, start=self.first_seed + s0)

    def streams_of(self, seeds):
        """(λ, seed) stream numbers of the plan's seeds with local indices ``seeds`` (an int array)."""
        return streams_of_seeds(self.first_seed + np.asarray(seeds, dtype=np.int64), self.n_lams,
                                self.common_random_numbers)

    @property
    def streams(self):
        """(λ, seed) stream numbers of every seed of the plan."""
        return self.stream_ids()

    def seed_range(self, s0, s1):
        """The plan of seeds s0 .. s1 − 1 only (same streams for those seeds)."""
        from dataclasses import replace
        return replace(self, n_seeds=s1 - s0, first_seed=self.first_seed + s0)


def make_plan(problem, theta, lams, step, steps, seeds, batch_size=1, estimator="kd",
              record_every=1, seed=0, x0=None, common_random_numbers=True, svrg_period=None,
              dtype="float64", memory_budget=None, sampling="iid", drop_last=False, momentum=0.0,
              lam_schedule=None, svrg_warmup=0, svrg_correction=True, teacher_l2=None, keep_iterates=False,
              temperature=1.0, full_grad="exact"):
    """Validate every argument of ``simulate`` and return a Plan.

    The record axis is checked against ``memory_budget`` (default half the available memory)
    before it is allocated: one seed's records must fit.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a kdsim problem (e.g. kdsim.LeastSquares); got {type(problem).__name__}")
    est = get_estimator(estimator)
    sampling = V.choice("sampling", sampling, SAMPLINGS)
    if not isinstance(drop_last, (bool, np.bool_)):
        raise TypeError(f"drop_last must be True or False; got {drop_last!r}")
    momentum = V.nonnegative_float("momentum", momentum)
    if not momentum < 1.0:
        raise ValueError(f"momentum must satisfy 0 <= momentum < 1; got {momentum}")
    schedule = LambdaSchedule.parse(lam_schedule)
    svrg_warmup = V.int_in_range("svrg_warmup", svrg_warmup, 0)
    if not isinstance(svrg_correction, (bool, np.bool_)):
        raise TypeError(f"svrg_correction must be True or False; got {svrg_correction!r}")
    if (svrg_warmup or not svrg_correction) and not est.snapshot:
        raise ValueError("svrg_warmup and svrg_correction apply to estimator 'svrg' only; "
                         f"got estimator {est.name!r}")
    if teacher_l2 is not None:
        teacher_l2 = V.nonnegative_float("teacher_l2", teacher_l2)
        if not est.uses_teacher:
            raise ValueError(f"teacher_l2 applies to the teacher estimators kd, kd_loss and corrected; "
                             f"got estimator {est.name!r}")
    full_grad = V.choice("full_grad", full_grad, ("exact", "batch_means"))
    if full_grad != "exact" and not (est.corrected or est.snapshot):
        raise ValueError(f"full_grad applies to the estimators with a full gradient, corrected and svrg; "
                         f"got estimator {est.name!r}")
    temperature = V.positive_float("temperature", temperature)
    if temperature != 1.0:
        if est.name not in ("kd", "kd_loss"):
            raise ValueError(f"temperature applies to the literal KD loss, estimators 'kd' and 'kd_loss'; got "
                             f"estimator {est.name!r} (temperature must be 1 there)")
        if not problem.supports_temperature():
            raise ValueError(f"temperature applies to softmax losses; {type(problem).__name__} has none "
                             f"(temperature must be 1; got {temperature:g})")
    theta = problem.check_teacher(theta)
    lams = V.lambda_grid(lams)
    step = V.positive_float("step", step)
    steps = V.int_in_range("steps", steps, 1)
    n_seeds = V.int_in_range("seeds", seeds, 1)
    if drop_last and isinstance(batch_size, int) and batch_size > problem.n:
        raise ValueError(f"drop_last=True with batch_size {batch_size} > n = {problem.n} leaves no batch; "
                         f"batch_size must satisfy 1 <= batch_size <= {problem.n}")
    batch_size = V.int_in_range("batch_size", batch_size, 1, problem.n)
    record_every = V.int_in_range("record_every", record_every, 1, steps)
    n_records = steps // record_every + 1 + (steps % record_every != 0)
    budget = memory.default_budget() if memory_budget is None else V.int_in_range("memory_budget", memory_budget, 1)
    if not isinstance(keep_iterates, (bool, np.bool_)):
        raise TypeError(f"keep_iterates must be True or False; got {keep_iterates!r}")
    heldout = problem.heldout_names()
    one_seed = (memory.output_bytes(len(lams), 1, n_records, problem.dim, n_quantities=3 + len(heldout))
                + 8 * n_records + (len(lams) * n_records * problem.dim * 8 if keep_iterates else 0))
    if one_seed > budget:
        raise MemoryError(f"{n_records} records (steps={steps}, record_every={record_every}) need {one_seed} bytes "
                          f"for one seed; memory_budget is {budget} bytes. Record less often (raise record_every)")
    seed = V.int_in_range("seed", seed, 0, 2**63 - 1)
    x0 = problem.default_x0() if x0 is None else V.as_vector("x0", x0, problem.dim)
    if svrg_period is None:
        svrg_period = max(1, problem.n // batch_size)
    svrg_period = V.int_in_range("svrg_period", svrg_period, 1)
    if not isinstance(common_random_numbers, (bool, np.bool_)):
        raise TypeError(f"common_random_numbers must be True or False; got {common_random_numbers!r}")
    dtype = resolve_dtype(dtype).name
    K = problem.n // batch_size if drop_last else -(-problem.n // batch_size)
    plan = Plan(theta, lams, step, steps, n_seeds, batch_size, est, record_times(steps, record_every),
                seed, x0, bool(common_random_numbers), svrg_period, dtype, 0, sampling, bool(drop_last), momentum,
                schedule, svrg_warmup, bool(svrg_correction), K, teacher_l2, heldout=tuple(heldout),
                return_iterates=bool(keep_iterates), temperature=temperature, full_grad=full_grad,
                n_samples=problem.n)
    plan.coefficient_table          # a schedule that makes λ non-finite fails here, before any work
    return plan
