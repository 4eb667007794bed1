"""A user-defined problem: pseudo-Huber regression through kdsim's problem protocol.

    f_i(x) = δ² (sqrt(1 + (r_i/δ)²) − 1),   r_i = a_iᵀx − b_i     (smooth, robust to outliers)

A problem subclasses ``kdsim.Problem`` and implements six hooks (kdsim/problems/base.py):
per-sample losses and gradients, the KD loss and its gradient, a solver for x* and the
Hessian. The base class adds the ridge, argument checks, ``loss``/``grad``/``hessian`` and the
batched primitives the numpy reference engine calls. The compiled engines know only kdsim's
own families, so a new problem runs on ``backend="numpy"``. kdsim's theory constants
(docs/theory.md §3) and the λ curve work on it unchanged. Writes custom_problem.png.

    python examples/custom_problem.py [--out DIR]       # default DIR: kdsim-results/examples
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import numpy as np  # noqa: E402

import kdsim  # noqa: E402
from kdsim import teachers, theory  # noqa: E402


class PseudoHuber(kdsim.Problem):
    """Pseudo-Huber regression on data A (n, d), targets b (n,), scale δ."""

    name = "pseudo_huber"   # used in tables and configuration hashes

    def __init__(self, A, b, delta=1.0, l2=0.0):
        self.A, self.b, self.delta = np.asarray(A, float), np.asarray(b, float), float(delta)
        super().__init__(self.A.shape[0], self.A.shape[1], l2)

    # ψ = ρ', ψ' = ρ'' of ρ(r) = δ²(sqrt(1 + (r/δ)²) − 1)
    def _rho(self, r):
        return self.delta ** 2 * (np.sqrt(1.0 + (r / self.delta) ** 2) - 1.0)

    def _psi(self, r):
        return r / np.sqrt(1.0 + (r / self.delta) ** 2)

    def _dpsi(self, r):
        return (1.0 + (r / self.delta) ** 2) ** -1.5

    # ---- the six hooks of kdsim.Problem
    def _losses(self, x, idx):
        return self._rho(self.A[idx] @ x - self.b[idx])

    def _sample_grads(self, x, idx):
        Ai = self.A[idx]
        return Ai * self._psi(Ai @ x - self.b[idx])[:, None]

    def _kd_losses(self, x, theta, lam, idx, temperature):
        # the teacher's label is its prediction a_iᵀθ
        Ai = self.A[idx]
        z = Ai @ x
        return (1 - lam) * self._rho(z - self.b[idx]) + lam * self._rho(z - Ai @ theta)

    def _kd_grad(self, x, theta, lam, idx, temperature):
        Ai = self.A[idx]
        z = Ai @ x
        w = (1 - lam) * self._psi(z - self.b[idx]) + lam * self._psi(z - Ai @ theta)
        return Ai.T @ w / len(idx)

    def _hessian(self, x, idx):
        Ai = self.A[idx]
        return Ai.T @ (Ai * self._dpsi(Ai @ x - self.b[idx])[:, None]) / len(idx)

    def _solve(self):
        # Newton from the least-squares fit; f is strictly convex when A has full column rank
        x = np.linalg.lstsq(self.A, self.b, rcond=None)[0]
        for _ in range(100):
            g = self.grad(x)
            if np.linalg.norm(g) < 1e-13:
                break
            x = x - np.linalg.solve(self.hessian(x), g)
        return x

    # ---- optional: a vectorised minibatch gradient (the generic fallback loops over trajectories)
    def _batch_grad(self, X, idx):
        Ab = self.A[idx]                                           # (T, b, d)
        r = np.einsum("tbd,td->tb", Ab, X) - self.b[idx]
        return np.einsum("tbd,tb->td", Ab, self._psi(r)) / idx.shape[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="kdsim-results/examples", help="output folder")
    out = Path(parser.parse_args(argv).out)
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(0)
    A = rng.standard_normal((150, 4))
    b = A @ rng.standard_normal(4) + rng.standard_t(df=2, size=150)   # heavy-tailed noise
    problem = PseudoHuber(A, b, delta=1.0)
    teacher = teachers.at_distance(problem, r=0.2, seed=1)
    print(problem, teacher, sep="\n")

    # closed-form gradients against finite differences: the first test a new problem needs
    x = rng.standard_normal(4)
    fd = np.array([(problem.loss(x + 1e-6 * e) - problem.loss(x - 1e-6 * e)) / 2e-6 for e in np.eye(4)])
    print(f"max |grad − finite difference| = {np.abs(problem.grad(x) - fd).max():.2e}")

    c = theory.constants(problem, teacher.theta, batch_size=1)
    step = 0.5 / c.L_max
    print(f"μ = {c.mu:.3g}, L = {c.L:.3g}, L_max = {c.L_max:.3g} ({c.provenance['L_max']}); γ = {step:.3g}")

    curve = kdsim.lambda_curve(problem, teacher, lams=[0.0, 0.25, 0.5, 0.75, 1.0], step=step, steps=600,
                               seeds=64, at="plateau", backend="numpy")
    print(curve)
    ax = curve.plot()
    ax.figure.savefig(out / "custom_problem.png", dpi=150, bbox_inches="tight")
    print(f"wrote {out / 'custom_problem.png'}")


if __name__ == "__main__":
    main()
