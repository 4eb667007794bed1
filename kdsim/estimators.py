"""The gradient estimators, defined once for every engine (docs/theory.md §2).

Each estimator is one control-variate form evaluated on a single minibatch B
shared by the student and the teacher:

    g = ∇f_B(x) − a · T_B + c · T

where T_B is the anchor's minibatch term, T its full-data mean, and the
coefficients (a, c) depend on the KD weight λ:

| name | a | c | anchor term T_B | refresh |
|---|---|---|---|---|
| ``sgd`` | 0 | 0 | — | — |
| ``kd`` | λ | 0 | ∇f_B(θ) (distillation gradient) | — |
| ``kd_loss`` | λ | 0 | ∇ℓ_B(θ) (data loss only: the literal KD loss, ridge on the student only) | — |
| ``corrected`` | λ | λ | ∇f_B(θ) | — |
| ``svrg`` | λ | λ | ∇f_B(y), y = snapshot | every m steps |

SVRG is the λ = 1 row of the last line (partial weights λ < 1 are allowed).
For problems whose KD identity is exact (least squares, softmax at τ = 1, the
canonical GLMs) T_B does not depend on x. For deep linear networks the teacher
term is the function-space one pulled back by the student's Jacobian,
J(x)ᵀ ∇g_B(Θ̄), which makes ``kd`` the exact KD-loss gradient (docs/theory.md §2).
"""
from __future__ import annotations

from dataclasses import dataclass

from ._validate import choice


@dataclass(frozen=True)
class Estimator:
    """Data of one control-variate estimator; see the module docstring."""

    name: str
    uses_teacher: bool        # anchor is the teacher θ (else a snapshot, or nothing)
    teacher_term: str         # "f": ∇f_B(θ) (with ridge); "data": ∇ℓ_B(θ) (no ridge); "" for none
    corrected: bool           # adds c · T with c = a (unbiased control variate)
    snapshot: bool            # anchor refreshed to the iterate every m steps (SVRG)
    description: str

    def coefficients(self, lam):
        """(a, c) of ``g = ∇f_B(x) − a·T_B + c·T`` at KD weight ``lam``."""
        if self.name == "sgd":
            return 0.0, 0.0
        a = float(lam)
        return a, (a if self.corrected else 0.0)

    @property
    def biased(self):
        """True when E g ≠ ∇f(x) for a generic teacher."""
        return self.uses_teacher and not self.corrected


ESTIMATORS = {
    "sgd": Estimator("sgd", False, "", False, False, "SGD: ∇f_B(x)"),
    "kd": Estimator("kd", True, "f", False, False,
                    "KD, distillation gradient of f: ∇f_B(x) − λ∇f_B(θ)"),
    "kd_loss": Estimator("kd_loss", True, "data", False, False,
                         "literal KD loss, ridge on the student only: ∇f_B(x) − λ∇ℓ_B(θ)"),
    "corrected": Estimator("corrected", True, "f", True, False,
                           "corrected KD: ∇f_B(x) − λ(∇f_B(θ) − ∇f(θ))"),
    "svrg": Estimator("svrg", False, "f", True, True,
                      "SVRG: ∇f_B(x) − λ(∇f_B(y) − ∇f(y)), y refreshed every m steps"),
}


def get_estimator(name):
    """Look up an estimator by name, with a clear error for unknown names."""
    return ESTIMATORS[choice("estimator", name, tuple(ESTIMATORS))]


def direction(grad_student, anchor_batch, anchor_full, a, c):
    """The control-variate direction g = ∇f_B(x) − a·T_B + c·T (arrays broadcast).

    ``a`` and ``c`` may be scalars or per-trajectory column vectors.
    """
    g = grad_student
    if anchor_batch is not None:
        g = g - a * anchor_batch
    if anchor_full is not None:
        g = g + c * anchor_full
    return g
