"""The problem protocol shared by every finite-sum problem.

f(x) = (1/n) Σ_i f_i(x),   f_i(x) = ℓ_i(x) + (α/2)‖x‖²   (α = ``l2``, default 0)

With ``l2_bias=False`` (problems with a bias) the ridge leaves the bias out:
(α/2)‖Dx‖², D the 0/1 diagonal that zeroes the bias coordinates (``l2_weights``).

Parameters are flat float vectors; each problem knows its shapes. Subclasses
implement the data loss ℓ and its closed-form gradients (no autodiff); this
base class adds the ridge, validates every argument, and provides the batched
primitives the engines call (one row per trajectory).

Two KD gradients coexist when α > 0 (docs/theory.md §2):

* ``kd_grad`` — the gradient of ``kd_loss``, the literal KD loss with the ridge
  on the student only: ∇f_B(x) − λ∇ℓ_B(θ) (estimator ``"kd_loss"``);
* the distillation gradient of f, ∇f_B(x) − λ∇f_B(θ) (estimator ``"kd"``).

Without a ridge they coincide.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .. import _validate as V
from ..kernelspec import KernelSpec


@dataclass(frozen=True)
class TeacherTerms:
    """Teacher quantities that do not depend on the student iterate.

    ``sample_grads`` holds ∇ℓ_i(θ) for every sample (n, dim); ``ridge`` is α·θ for
    the distillation gradient of f (term "f") and 0 for the data-loss term.
    """

    sample_grads: np.ndarray
    ridge: np.ndarray
    full: np.ndarray  # (1/n) Σ_i sample_grads[i] + ridge


class Problem(ABC):
    """Finite-sum problem with closed-form per-sample gradients."""

    #: short identifier used in tables and configuration hashes
    name = "problem"

    def __init__(self, n, dim, l2=0.0, l2_bias=True):
        self.n = int(n)
        self.dim = int(dim)
        self.l2 = V.nonnegative_float("l2", l2)
        if not isinstance(l2_bias, (bool, np.bool_)):
            raise TypeError(f"l2_bias must be True or False; got {l2_bias!r}")
        self._l2_bias = bool(l2_bias)
        self._l2_mask = None          # set by _exclude_bias_from_ridge once the data is known

    def _exclude_bias_from_ridge(self):
        """With ``l2_bias=False``: the 0/1 ridge mask that zeroes ``bias_coordinates()`` (subclasses call
        this at the end of ``__init__``); a clear error when the problem has no bias."""
        if self._l2_bias:
            return
        coords = np.asarray(self.bias_coordinates(), dtype=np.int64)
        if coords.size == 0:
            raise ValueError(f"l2_bias=False needs a bias to leave out of the ridge; {type(self).__name__} has "
                             "none here (a column of ones in A, e.g. bias=True, or network biases)")
        mask = np.ones(self.dim)
        mask[coords] = 0.0
        mask.setflags(write=False)
        self._l2_mask = mask

    def bias_coordinates(self):
        """Indices of the bias parameters in x (the coordinates ``l2_bias=False`` leaves out of the
        ridge). Linear models: the weights on columns of A equal to 1 for every sample."""
        A = getattr(self, "A", None)
        if A is None:
            return np.zeros(0, dtype=np.int64)
        ones = np.flatnonzero(np.all(A == 1.0, axis=0))
        per_output = self.dim // A.shape[1]             # softmax: x = vec of (classes, d'), row-major
        return (np.arange(per_output)[:, None] * A.shape[1] + ones[None, :]).ravel()

    @property
    def l2_bias(self):
        """False when the ridge leaves the bias out (``l2_weights`` is then a vector)."""
        return self._l2_bias

    @property
    def l2_mask(self):
        """None (the ridge on every coordinate) or the (dim,) 0/1 mask of the coordinates it covers."""
        return self._l2_mask

    @property
    def l2_weights(self):
        """The ridge per coordinate: α (a float) or, with ``l2_bias=False``, α·mask ((dim,) array)."""
        return self.l2 if self._l2_mask is None else self.l2 * self._l2_mask

    def ridge_term(self, weight, x):
        """weight·x on the coordinates the ridge covers (all, or all but the bias): the gradient of
        (weight/2)‖Dx‖²; ``x`` may hold one row per trajectory."""
        return weight * x if self._l2_mask is None else (weight * self._l2_mask) * x

    def _ridge_value(self, x):
        """(α/2)‖Dx‖² of one vector."""
        return 0.5 * self.l2 * x @ x if self._l2_mask is None else 0.5 * x @ (self.l2_weights * x)

    def ridge_hessian(self):
        """∇² of the ridge: αI, or α·diag(mask) with ``l2_bias=False``."""
        return np.diag(np.broadcast_to(np.asarray(self.l2_weights, dtype=np.float64), (self.dim,)).copy())

    def __repr__(self):
        """Compact: class, sizes and ridge (never the data)."""
        return f"{type(self).__name__}(n={self.n}, dim={self.dim}, l2={self.l2:g}{self._l2_bias_text()})"

    def _l2_bias_text(self):
        return "" if self._l2_bias else ", l2_bias=False"

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def _losses(self, x, idx):
        """Per-sample data losses ℓ_i(x) for i in idx, shape (len(idx),)."""

    @abstractmethod
    def _sample_grads(self, x, idx):
        """Per-sample data gradients ∇ℓ_i(x), shape (len(idx), dim)."""

    @abstractmethod
    def _kd_losses(self, x, theta, lam, idx, temperature):
        """Per-sample KD data losses (1−λ)·loss(x, label) + λ·loss(x, teacher's label)."""

    @abstractmethod
    def _kd_grad(self, x, theta, lam, idx, temperature):
        """Closed-form gradient of the mean KD data loss over idx (no ridge)."""

    @abstractmethod
    def _solve(self):
        """A minimiser x* of f (ridge included) to high accuracy."""

    @abstractmethod
    def _hessian(self, x, idx):
        """Hessian of the mean data loss over idx, shape (dim, dim)."""

    def _batch_grad(self, X, idx):
        """Mean data gradient per trajectory: X (T, dim), idx (T, b) -> (T, dim).

        Generic fallback; problems override it with a vectorised form.
        """
        return np.stack([self._sample_grads(x, i).mean(axis=0) for x, i in zip(X, idx)])

    def _batch_full_grad(self, X):
        """Full-data gradient of ℓ per trajectory, (T, dim)."""
        full = np.arange(self.n)
        return np.stack([self._sample_grads(x, full).mean(axis=0) for x in X])

    def _batch_loss(self, X):
        """Full-data loss ℓ per trajectory, (T,)."""
        full = np.arange(self.n)
        return np.array([self._losses(x, full).mean() for x in X])

    # ----------------------------------------------------------- validation
    def _x(self, x, name="x"):
        return V.as_vector(name, x, self.dim)

    def _idx(self, idx):
        if idx is None:
            return np.arange(self.n)
        return V.index_array("idx", idx, self.n)

    def _teacher(self, theta):
        """Validate a teacher; problems with other teacher forms override this."""
        return V.as_vector("theta", theta, self.dim)

    def check_teacher(self, theta):
        """Return ``theta`` validated as a teacher for this problem."""
        return self._teacher(theta)

    @staticmethod
    def _temperature(temperature):
        return V.positive_float("temperature", temperature)

    # ------------------------------------------------------------ public API
    def loss(self, x, idx=None):
        """f_B(x) = mean over idx of ℓ_i(x) + (α/2)‖x‖² (full data when idx is None)."""
        x = self._x(x)
        return float(self._losses(x, self._idx(idx)).mean() + self._ridge_value(x))

    def data_loss(self, x, idx=None):
        """ℓ_B(x): the mean data loss without the ridge."""
        return float(self._losses(self._x(x), self._idx(idx)).mean())

    def grad(self, x, idx=None):
        """∇f_B(x) (ridge included)."""
        x = self._x(x)
        return self._sample_grads(x, self._idx(idx)).mean(axis=0) + self.ridge_term(self.l2, x)

    def data_grad(self, x, idx=None):
        """∇ℓ_B(x): the data-loss gradient without the ridge."""
        return self._sample_grads(self._x(x), self._idx(idx)).mean(axis=0)

    def sample_grads(self, x, idx=None):
        """∇f_i(x) for i in idx, one row per sample (ridge included)."""
        x = self._x(x)
        return self._sample_grads(x, self._idx(idx)) + self.ridge_term(self.l2, x)

    def kd_loss(self, x, theta, lam, idx=None, temperature=1.0):
        """Literal KD loss: mean of (1−λ)·loss(x, y_i) + λ·loss(x, teacher label) + (α/2)‖x‖².

        Softmax at temperature τ uses the tempered teacher and student probabilities and
        weights the distillation term by τ². The ridge belongs to the student only
        (docs/theory.md §2, estimator "kd_loss").

        The distillation term is the cross-entropy to the teacher's (tempered) soft labels.
        The standard KD loss, (1 − λ)·CE + λτ²·KL(teacher ‖ student) as the authors' code
        computes it, differs from it by the constant λτ²·H(teacher) (the teacher's entropy,
        which does not depend on x): the same gradient, a loss shifted by that constant.
        """
        x = self._x(x)
        theta = self._teacher(theta)
        lam = V.finite_float("lam", lam)
        t = self._temperature(temperature)
        return float(self._kd_losses(x, theta, lam, self._idx(idx), t).mean() + self._ridge_value(x))

    def kd_grad(self, x, theta, lam, idx=None, temperature=1.0):
        """Closed-form gradient of ``kd_loss`` (mixed labels; ridge on the student only).

        At τ = 1 it equals ∇f_B(x) − λ∇ℓ_B(θ), and without a ridge ∇f_B(x) − λ∇f_B(θ)
        (docs/theory.md §2); at τ ≠ 1 (softmax) the identity fails.
        """
        x = self._x(x)
        theta = self._teacher(theta)
        lam = V.finite_float("lam", lam)
        t = self._temperature(temperature)
        return self._kd_grad(x, theta, lam, self._idx(idx), t) + self.ridge_term(self.l2, x)

    def distillation_grad(self, x, theta, lam, idx=None):
        """Distillation gradient of f: ∇f_B(x) − λ∇f_B(θ) (estimator "kd").

        Problems whose teacher term is not a parameter-space gradient (deep linear)
        override this with what their "kd" estimator computes.
        """
        theta = self._teacher(theta)
        lam = V.finite_float("lam", lam)
        return self.grad(x, idx) - lam * self.grad(theta, idx)

    def hessian(self, x, idx=None):
        """∇²f_B(x), dense (dim, dim), ridge included."""
        x = self._x(x)
        return self._hessian(x, self._idx(idx)) + self.ridge_hessian()

    def sample_smoothness(self):
        """Global smoothness constants L_i of each f_i (exact or a stated bound).

        Problems without global constants raise and point to ``local_sample_smoothness``.
        """
        raise ValueError(f"{self.name} has no global per-sample smoothness constant; "
                         "use local_sample_smoothness(x)")

    #: how ``sample_smoothness`` is obtained: "exact", "bound", or "none" (no global constant)
    smoothness_kind = "none"

    def local_sample_smoothness(self, x):
        """λ_max(∇²f_i(x)) for every sample (dense per-sample Hessians)."""
        x = self._x(x)
        out = np.empty(self.n)
        for i in range(self.n):
            h = self._hessian(x, np.array([i]))
            out[i] = (np.linalg.eigvalsh(h)[-1] + self.l2 if self._l2_mask is None
                      else np.linalg.eigvalsh(h + self.ridge_hessian())[-1])
        return out

    def solution(self):
        """x*, computed once to high accuracy and cached."""
        return self._solution.copy()

    @cached_property
    def _solution(self):
        x = np.asarray(self._solve(), dtype=np.float64)
        x.setflags(write=False)
        return x

    @property
    def f_star(self):
        """f(x*), computed once."""
        return self._f_star

    @cached_property
    def _f_star(self):
        return self.loss(self._solution)

    def canonical(self, x):
        """The identifiable part of x in which distances are measured (x itself here).

        Accepts (dim,) or (T, dim); softmax and deep linear override it.
        """
        return np.asarray(x, dtype=np.float64)

    def canonical_teacher(self, theta):
        """Canonical form of a (validated) teacher."""
        return self.canonical(theta)

    def fingerprint(self):
        """Hash of the problem's data and settings (keys cached results)."""
        parts = [self.name]
        for key in sorted(vars(self)):
            if key.startswith("_"):
                continue
            val = vars(self)[key]
            parts.append(f"{key}={V.array_digest(val) if isinstance(val, np.ndarray) else val!r}")
        if not self._l2_bias:                              # (True, the default, keeps earlier keys)
            parts.append("l2_bias=False")
        import hashlib
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def default_x0(self):
        """The start used when ``simulate`` gets x0=None: the origin."""
        return np.zeros(self.dim)

    # ------------------------------------------------------------ held-out split
    def with_test(self, test):
        """A copy of this problem that carries a held-out split: ``test`` is a problem of the same
        class and parameter space built on the test data (``kdsim.datasets.train_test_split``).

        Runs of the copy add the records ``test_loss`` (the data loss on the test split, no
        ridge) and, for classifiers (softmax, logistic, deep linear with softmax), ``test_accuracy``.
        The copy's fingerprint includes the test split's.
        """
        if type(test) is not type(self):
            raise TypeError(f"test must be a {type(self).__name__} on the test data; got {type(test).__name__}")
        if test.dim != self.dim:
            raise ValueError(f"test has dim {test.dim}; the problem has dim {self.dim} (same parameter space needed)")
        import copy
        out = copy.copy(self)
        out.__dict__.pop("_record_refs", None)
        out._test = test
        out.test_fingerprint = test.fingerprint()
        return out

    @property
    def test(self):
        """The held-out split (a problem of the same class), or None."""
        return getattr(self, "_test", None)

    def heldout_names(self):
        """Names of the held-out records runs of this problem add: () without a test split."""
        if self.test is None:
            return ()
        link = self._spec_structure()[0] if self.exports_kernel_spec() else None
        return ("test_loss", "test_accuracy") if link in ("softmax", "logistic") else ("test_loss",)

    def heldout_records(self, X):
        """Held-out records of iterates X (N, dim): {"test_loss": (N,), ["test_accuracy": (N,)]}.

        Rows that are not finite give NaN. Computed in row blocks.
        """
        test = self.test
        if test is None:
            raise ValueError("this problem carries no test split (use problem.with_test(test))")
        names = self.heldout_names()
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        out = {name: np.full(len(X), np.nan) for name in names}
        ok = np.flatnonzero(np.isfinite(X).all(axis=1))
        if not len(ok):
            return out
        if "test_accuracy" in names:
            link, Y, shapes = test._spec_structure()
            from ..kernelspec import _offsets, end_to_end
            offsets = _offsets(shapes)
        step = max(1, (1 << 24) // (8 * max(1, test.n) * max(1, Y.shape[1] if "test_accuracy" in names else 1)))
        for b0 in range(0, len(ok), step):
            rows = ok[b0:b0 + step]
            Xb = X[rows]
            with np.errstate(over="ignore", invalid="ignore"):
                out["test_loss"][rows] = test._batch_loss(Xb)
                if "test_accuracy" in names:
                    Z = end_to_end(Xb, shapes, offsets) @ test.A.T                     # (rows, d_out, n_test)
                    if link == "softmax":
                        pred, truth = Z.argmax(axis=1), Y.argmax(axis=1)[None, :]
                    else:
                        pred, truth = (Z[:, 0, :] > 0.0), (Y[:, 0] > 0.5)[None, :]
                    out["test_accuracy"][rows] = (pred == truth).mean(axis=1)
        return out

    # ------------------------------------------------------------ kernel spec
    #: family name of the kernel spec (None: the engines have no kernels for this problem)
    spec_family = None

    @classmethod
    def exports_kernel_spec(cls):
        """True when this exact class declares its kernel spec (a subclass may change the math,
        so it inherits no spec: it runs on the reference engine until it declares one)."""
        return cls.__dict__.get("spec_family") is not None

    def kernel_spec(self, theta, estimator, teacher_l2=None, temperature=1.0, full_weights=None):
        """The ``KernelSpec`` of this problem with teacher ``theta`` for ``estimator`` (an Estimator).

        Engines read only this. The teacher quantities are those of the estimator's
        anchor term: ∇f_B(θ) (term "f", with the ridge αθ) or ∇ℓ_B(θ) (term "data"), or
        ∇ℓ_B(θ) + wθ with ``teacher_l2`` = w (``teacher_terms``); zeros for estimators
        without a teacher. ``temperature`` τ ≠ 1 (softmax links) adds the teacher's tempered
        probabilities for the literal tempered KD loss. ``full_weights`` (n,): the per-sample weights of
        the teacher's full gradient (default 1/n; ``kdsim.rng.batch_mean_weights``).
        """
        if not self.exports_kernel_spec():
            raise NotImplementedError(f"{type(self).__name__} exports no kernel spec; use backend='numpy'")
        theta = self._teacher(theta)
        link, Y, shapes = self._spec_structure()
        d_out, d_in = shapes[-1][0], shapes[0][1]
        if estimator.uses_teacher:
            R, G, ridge = self._spec_teacher(theta, estimator.teacher_term, teacher_l2, full_weights)
        else:
            R, G, ridge = np.zeros((self.n, d_out)), np.zeros((d_out, d_in)), np.zeros(self.dim)
        probs = None if temperature == 1.0 else self.tempered_teacher_probs(theta, temperature)
        return KernelSpec(self.spec_family, link, self.A, Y, tuple(shapes), self.l2, R, G, ridge,
                          self.canonical(self.solution()), self.canonical_teacher(theta), self._spec_refs(),
                          self.record_row_bytes(), float(temperature), probs, self._l2_mask, **self._spec_layers())

    def supports_temperature(self):
        """True when the loss has a softmax to temper (softmax regression, deep linear with softmax)."""
        return False

    def tempered_teacher_probs(self, theta, temperature):
        """softmax(z^θ_i / τ) of every sample, (n, classes): the soft labels of the tempered KD loss."""
        raise ValueError(f"temperature applies to softmax losses; {type(self).__name__} has none "
                         f"(temperature must be 1; got {temperature!r})")

    def _spec_structure(self):
        """(link, targets (n, d_out), layer shapes) of the kernel spec."""
        raise NotImplementedError

    def _spec_teacher(self, theta, term, teacher_l2=None, weights=None):
        """(teacher residuals (n, d_out), their mean map (d_out, d_in), ridge (dim,)) for a term."""
        R = self._teacher_residuals(theta)
        G = R.T @ self.A / self.n if weights is None else (R * weights[:, None]).T @ self.A
        return R, G, self.ridge_term(self.teacher_weight_decay(term, teacher_l2), theta)

    def teacher_weight_decay(self, term="f", teacher_l2=None):
        """The weight decay w of the teacher's term ∇ℓ_B(θ) + wθ: ``teacher_l2`` when given, else α
        for term "f" (the distillation gradient of f) and 0 for term "data" (the literal KD loss).

        The authors' ``--teacher_wd w`` is ``teacher_l2=w`` (any w >= 0, not only the student's α).
        """
        V.choice("term", term, ("f", "data"))
        if teacher_l2 is not None:
            return V.nonnegative_float("teacher_l2", teacher_l2)
        return self.l2 if term == "f" else 0.0

    def _spec_layers(self):
        """Extra layer structure of the kernel spec (MLPs: ``activation`` and ``biases``); none by default."""
        return {}

    def _spec_refs(self):
        """The family's constants of the cancellation-free f − f* (``kdsim.kernelspec.suboptimality``)."""
        raise NotImplementedError

    @cached_property
    def _record_refs(self):
        """numpy record references of this problem (teacher-free: ``theta`` is x*), cached like x*."""
        xs = self.canonical(self.solution())
        link, Y, shapes = self._spec_structure()
        return KernelSpec(self.spec_family, link, self.A, Y, tuple(shapes), self.l2,
                          np.zeros((self.n, shapes[-1][0])), np.zeros((shapes[-1][0], shapes[0][1])),
                          np.zeros(self.dim), xs, xs, self._spec_refs(), l2_mask=self._l2_mask,
                          **self._spec_layers()).record_refs(np)

    # ------------------------------------------- batched primitives (engines)
    def batch_grad(self, X, idx):
        """∇f_B(x) for each trajectory: X (T, dim), idx (T, b) -> (T, dim)."""
        return self._batch_grad(X, idx) + self.ridge_term(self.l2, X)

    def batch_full_grad(self, X):
        """∇f(x) for each trajectory, (T, dim)."""
        return self._batch_full_grad(X) + self.ridge_term(self.l2, X)

    def batch_loss(self, X):
        """f(x) for each trajectory, (T,)."""
        if self._l2_mask is not None:
            return self._batch_loss(X) + 0.5 * np.einsum("td,td->t", X, self.l2_weights * X)
        return self._batch_loss(X) + 0.5 * self.l2 * np.einsum("td,td->t", X, X)

    def record_row_bytes(self):
        """Bytes of temporaries per row of ``suboptimality`` (it runs in blocks of rows of this cost)."""
        return 8 * 4 * self.dim

    def suboptimality(self, X):
        """f(x) − f* for each trajectory, (T,). Problems override with a cancellation-free form."""
        return self.batch_loss(np.atleast_2d(X)) - self.f_star

    def teacher_terms(self, theta, term="f", teacher_l2=None, weights=None):
        """Precompute the teacher's per-sample gradients (they do not depend on x).

        ``term="f"``: ∇f_i(θ) = ∇ℓ_i(θ) + αθ (distillation gradient of f);
        ``term="data"``: ∇ℓ_i(θ) (literal KD loss, ridge on the student only);
        ``teacher_l2=w`` (either term): ∇ℓ_i(θ) + wθ (``teacher_weight_decay``). ``weights`` (n,):
        the full term is Σ_i w_i ∇ℓ_i(θ) + ridge instead of the mean (``kdsim.rng.batch_mean_weights``).
        """
        wd = self.teacher_weight_decay(term, teacher_l2)
        theta = self._teacher(theta)
        rows = self._sample_grads(theta, np.arange(self.n))
        ridge = self.ridge_term(wd, theta)
        full = rows.mean(axis=0) if weights is None else weights @ rows
        return TeacherTerms(rows, ridge, full + ridge)

    def batch_teacher_grad(self, X, terms, idx):
        """Teacher minibatch term T_B for each trajectory, (T, dim)."""
        return terms.sample_grads[idx].mean(axis=1) + terms.ridge

    def full_teacher_grad(self, X, terms):
        """Teacher full-data term T for each trajectory (broadcastable to (T, dim))."""
        return terms.full
