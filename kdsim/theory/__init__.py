"""The theory of docs/theory.md §3–§7 as code: constants, bounds, optimal weights, exact dynamics.

* ``constants`` (§3) → ``Constants`` (μ, L, L_max, 𝓛(b), ω(b), σ²_*, the KD noise
  quadratic, ρ, ‖∇f(θ)‖, ‖θ − x*‖, with provenance); ``mu_path``, ``pl_path``.
* ``bounds`` (§4): ``t1``, ``t1_prime``, ``t2``,
  ``sgd_bound`` → ``Bound`` (``curve``, ``neighbourhood``, ``gamma_max``, ``status``).
* ``lambdas`` (§6): ``lambda_hat``, ``lambda_star_t1``,
  ``lambda_star_t2``, ``lambda_star_published``, ``lambda_opt``; ``all_lambdas``
  collects them (``lambda_opt`` when given a least-squares ``problem``); ``lambda_variants``
  gives every variant for (problem, θ, γ, b) in one call, the RR epoch-end optimum included.
* ``exact_ls`` (§5): ``exact_moments``, ``mse_sgd``,
  ``stationary_error``, ``largest_stable_step``, ``spectral_radius``; ``MomentMap``, one step of
  the moment recursion (and its matrix, for horizons of 10⁶ steps by matrix powers).
* ``deep_linear_flow`` (§7): mode curves and predicted maps.
* ``sampling``: the ω(b) identity and exact minibatch expectations.

Note: the name ``kdsim.theory.constants`` is the *function*; import the module's other
names with ``from kdsim.theory.constants import Constants`` (the import system finds the
module).

Layering: this package imports only kdsim.problems, kdsim.estimators and kdsim._validate.
"""
from .bounds import Bound, NotApplicableError, all_bounds, sgd_bound, t1, t1_prime, t2, x_lambda
from .constants import Constants, expected_smoothness, mu_path, pl_path
from .constants import constants as _constants_fn
from .deep_linear_flow import (balanced_aligned_init, kd_mode_targets, mode_strength, predicted_map,
                               predicted_trajectory, whitened_instance)
from .exact_ls import (ExactMoments, MomentMap, exact_moments, largest_stable_step, mse_sgd, spectral_radius, stationary_error,
                       stationary_error_from, step_stability)
from .lambdas import (LambdaVariants, Variant, all_lambdas, lambda_hat, lambda_opt, lambda_opt_from,
                      lambda_star_published, lambda_star_t1, lambda_star_t2, lambda_variants)
from .sampling import batch_inner, batch_outer, batch_sq_norm, inclusion_probabilities, omega

constants = _constants_fn
del _constants_fn

__all__ = [
    "Bound", "Constants", "ExactMoments", "LambdaVariants", "MomentMap", "NotApplicableError", "Variant", "all_bounds", "all_lambdas",
    "balanced_aligned_init", "batch_inner", "batch_outer", "batch_sq_norm", "constants",
    "exact_moments", "expected_smoothness", "inclusion_probabilities", "kd_mode_targets",
    "lambda_hat", "lambda_opt", "lambda_opt_from", "lambda_star_published", "lambda_star_t1", "lambda_star_t2",
    "lambda_variants",
    "largest_stable_step", "mode_strength", "mse_sgd", "mu_path", "omega", "pl_path",
    "predicted_map", "predicted_trajectory", "sgd_bound", "spectral_radius", "stationary_error", "stationary_error_from", "step_stability",
    "t1", "t1_prime", "t2", "whitened_instance", "x_lambda",
]
