"""Teachers: a parameter θ (or, for deep linear networks, an end-to-end map) and how it was made.

Every constructor returns a ``Teacher(theta, kind, provenance, distance)``; ``provenance``
records the parameters so that a table can say which teacher a row used, and ``distance``
is ‖θ − x*‖ measured when the teacher was made.
Distances are measured in the problem's canonical space (``problem.canonical``):
class-centred weights for softmax, end-to-end maps for deep linear networks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _validate as V
from .problems.base import Problem


@dataclass(frozen=True, repr=False)
class Teacher:
    """A teacher θ with a record of how it was made.

    Attributes
    ----------
    theta : ndarray
        The teacher (student parameters; deep linear: an end-to-end map).
    kind : str
        The constructor that made it ("optimum", "at_distance", "top_k", …).
    provenance : dict
        The constructor's defining parameters.
    distance : float or None
        ‖θ − x*‖ in the problem's canonical space, measured when the constructor made it
        (None when it was built by hand, or x* could not be computed);
        ``distance_to_optimum(problem)`` measures it for any problem.
    """

    theta: np.ndarray
    kind: str
    provenance: dict = field(default_factory=dict)
    distance: float | None = None

    def __repr__(self):
        args = "".join(f", {k}={v!r}" for k, v in self.provenance.items() if k != "note")
        dist = "" if self.distance is None else f", distance={self.distance:.4g}"
        return f"Teacher(kind={self.kind!r}{args}{dist}, theta=<array of shape {np.shape(self.theta)}>)"

    def distance_to_optimum(self, problem):
        """‖θ − x*‖ in the problem's canonical space."""
        diff = problem.canonical_teacher(self.theta) - problem.canonical(problem.solution())
        return float(np.linalg.norm(diff))

    def describe(self):
        """Short label for tables: kind and its defining parameters."""
        args = ", ".join(f"{k}={v}" for k, v in self.provenance.items() if k != "note")
        return f"{self.kind}({args})" if args else self.kind


def _problem(problem):
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a kdsim problem; got {type(problem).__name__}")
    return problem


def _made(problem, theta, kind, provenance):
    """A Teacher with its distance to x* measured now (None when x* cannot be computed)."""
    t = Teacher(theta, kind, provenance)
    try:
        dist = t.distance_to_optimum(problem)
    except (ValueError, ArithmeticError, RuntimeError, np.linalg.LinAlgError):   # e.g. separable data: no finite x*
        return t
    return Teacher(theta, kind, provenance, dist)


def _is_deep_linear(problem):
    return hasattr(problem, "end_to_end") and hasattr(problem, "solution_map")


def _is_network(problem):
    return getattr(problem, "spec_family", None) == "mlp"


def from_model(problem, model, theta):
    """A teacher of any architecture for an MLP student: ``model`` (a kdsim problem on the same inputs —
    a wider or deeper ``MLP``, ``SoftmaxRegression``, ``DeepLinear`` …) with parameters ``theta``, given
    to the student by its outputs z_i(θ) on the n training samples, (n, d_out) (the literal KD loss sees
    nothing else). Estimators: "kd_loss" (and "kd"/"corrected" with ``teacher_l2=0``): the teacher's
    weight decay w·θ needs θ in the student's parameters. Distances are between functions (``MLP.canonical``)."""
    p, m = _problem(problem), _problem(model)
    if not _is_network(p):
        raise TypeError(f"from_model gives an MLP student a teacher by its outputs; got a {type(p).__name__} student")
    A = getattr(m, "A", None)
    if A is None or A.shape != p.A.shape or not np.array_equal(A, p.A):
        raise ValueError("model must be built on the student's inputs A (the same samples in the same order)")
    Z = _model_outputs(m, m.check_teacher(theta))
    if Z.shape != (p.n, p.d_out):
        raise ValueError(f"the model's outputs have shape {Z.shape}; the student needs (n, d_out) = ({p.n}, {p.d_out})")
    return _made(p, Z, "from_model", {"model": repr(m)})


def _model_outputs(model, theta):
    """z_i(θ) of a kdsim model on its own inputs, (n, d_out): logits for softmax losses."""
    if hasattr(model, "outputs"):
        return model.outputs(theta)
    if _is_deep_linear(model):
        return model.A @ model.end_to_end(theta).T
    if hasattr(model, "n_classes") and hasattr(model, "n_features"):        # softmax regression
        return model.A @ theta.reshape(model.n_classes, model.n_features).T
    return (model.A @ theta)[:, None]                                       # least squares, GLM predictors


def optimum(problem):
    """θ = x*, the perfect teacher."""
    p = _problem(problem)
    return _made(p, p.solution(), "optimum", {})


def at_distance(problem, r, seed=0):
    """θ at canonical distance exactly ``r`` from x*, in a seeded random direction.

    Softmax: the direction is class-centred, so the distance is not spent on the
    invariant direction. Deep linear: θ is an end-to-end map M* + r·U, ‖U‖_F = 1. MLP: θ is
    given by its outputs, Z(x*) + r·√n·U with ‖U‖_F = 1 (distances are between functions).
    """
    p = _problem(problem)
    r = V.nonnegative_float("r", r)
    seed = V.int_in_range("seed", seed, 0)
    rng = np.random.default_rng(seed)
    if _is_deep_linear(p):
        M = p.solution_map()
        U = rng.standard_normal(M.shape)
        return _made(p, M + r * U / np.linalg.norm(U), "at_distance", {"r": r, "seed": seed})
    if _is_network(p):
        Z = p.outputs(p.solution())
        U = rng.standard_normal(Z.shape)
        return _made(p, Z + r * np.sqrt(p.n) * U / np.linalg.norm(U), "at_distance", {"r": r, "seed": seed})
    u = p.canonical(rng.standard_normal(p.dim))
    theta = p.solution() + r * u / np.linalg.norm(u)
    return _made(p, theta, "at_distance", {"r": r, "seed": seed})


def early_stopped(problem, steps, step, batch_size=1, seed=0, x0=None, sampling="iid"):
    """The SGD iterate after ``steps`` steps from x0 (one trajectory; ``sampling`` as ``simulate``'s,
    e.g. "reshuffle" for a teacher trained as a shuffled data loader trains it)."""
    from .simulate import simulate  # teachers sit above the engine in the data flow

    p = _problem(problem)
    res = simulate(p, p.solution() if not _is_deep_linear(p) else p.solution_map(), [0.0], step, steps, 1,
                   batch_size=batch_size, estimator="sgd", record_every=steps, seed=seed, x0=x0, sampling=sampling)
    if res.diverged.any():
        raise ValueError(f"step={step} makes SGD diverge; the early-stopped teacher needs a stable step")
    return _made(p, res.x_final[0, 0].copy(), "early_stopped",
                   {"steps": int(steps), "step": float(step), "batch_size": int(batch_size), "seed": int(seed),
                    **({"sampling": sampling} if sampling != "iid" else {})})


def top_k(problem, theta, k):
    """Keep the ``k`` largest-magnitude entries of θ, zero the rest."""
    p = _problem(problem)
    theta = np.asarray(p.check_teacher(theta), dtype=np.float64)
    k = V.int_in_range("k", k, 0, theta.size)
    flat = theta.ravel().copy()
    if k < flat.size:
        drop = np.argsort(np.abs(flat), kind="stable")[: flat.size - k]
        flat[drop] = 0.0
    return _made(p, flat.reshape(theta.shape), "top_k", {"k": k})


def quantized(problem, theta, bits):
    """Uniform quantisation of θ to 2**bits levels over [min θ, max θ]."""
    p = _problem(problem)
    theta = np.asarray(p.check_teacher(theta), dtype=np.float64)
    bits = V.int_in_range("bits", bits, 1, 32)
    lo, hi = float(theta.min()), float(theta.max())
    if hi == lo:
        return _made(p, theta.copy(), "quantized", {"bits": bits})
    levels = 2 ** bits - 1
    q = np.round((theta - lo) / (hi - lo) * levels) / levels * (hi - lo) + lo
    return _made(p, q, "quantized", {"bits": bits})


def rank_truncated(problem, rank):
    """Deep linear: the end-to-end optimum truncated to its top ``rank`` singular values."""
    p = _problem(problem)
    if not _is_deep_linear(p):
        raise TypeError("rank_truncated needs a DeepLinear problem")
    M = p.solution_map()
    rank = V.int_in_range("rank", rank, 0, min(M.shape))
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    return _made(p, (U[:, :rank] * s[:rank]) @ Vt[:rank], "rank_truncated", {"rank": rank})


def other_architecture(problem, hidden):
    """Deep linear: the end-to-end optimum of a network with other hidden widths.

    Only the teacher's end-to-end map enters KD, so it is returned as a matrix.
    """
    p = _problem(problem)
    if not _is_deep_linear(p):
        raise TypeError("other_architecture needs a DeepLinear problem")
    other = p.with_hidden(hidden)
    return _made(p, other.solution_map(), "other_architecture", {"hidden": tuple(int(h) for h in hidden)})
