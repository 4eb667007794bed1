"""docs/theory.md §5.2: exact least-squares dynamics under any sampling scheme, with momentum.

``kdsim.theory.schemes`` is checked four ways: ``run_path`` against hand-written loops (plain
SGD/KD and torch's heavy-ball rule), the path identity on random paths, the "iid" enumeration
against ``exact_ls.exact_moments``, and the "reshuffle" / "shuffle_once" enumerations against a
brute-force average of ``run_path`` over every permutation of every epoch. Then the qualitative
facts of §5.2 on one small instance, and the input checks.
"""
import itertools

import numpy as np
import pytest

import kdsim
from kdsim.theory import exact_ls, schemes


def make_ls(n, d, l2=0.0, seed=0, noise=0.7):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    b = A @ rng.standard_normal(d) + noise * rng.standard_normal(n)
    return kdsim.LeastSquares(A, b, l2=l2)


def teacher(p, dist, seed=1):
    u = np.random.default_rng(seed).standard_normal(p.dim)
    return p.solution() + dist * u / np.linalg.norm(u)


def iid_batches(n, b, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=b, replace=False) for _ in range(steps)]


def rr_batches(n, b, epochs, seed=0, drop_last=False):
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(n) for _ in range(epochs)])
    K = -(-n // b) if not drop_last else n // b
    return schemes.batch_sequence(perms, n, b, epochs * K, drop_last=drop_last)


# ------------------------------------------------------------------ batch_sequence
def test_batch_sequence_cuts_permutations_like_the_rng():
    perms = np.array([[4, 0, 3, 1, 2], [2, 1, 0, 4, 3]])
    seq = schemes.batch_sequence(perms, 5, 2, 6)
    assert [B.tolist() for B in seq] == [[4, 0], [3, 1], [2], [2, 1], [0, 4], [3]]
    seq = schemes.batch_sequence(perms, 5, 2, 4, drop_last=True)
    assert [B.tolist() for B in seq] == [[4, 0], [3, 1], [2, 1], [0, 4]]
    once = schemes.batch_sequence(perms[0], 5, 2, 6)          # one permutation: reused (shuffle-once)
    assert [B.tolist() for B in once] == [[4, 0], [3, 1], [2]] * 2
    # the permutations kdsim.rng draws, cut by batch_sequence, are the engines' minibatches
    from kdsim import rng as R
    perms = np.stack([R.epoch_permutation(7, [3], e, 5)[0] for e in range(3)])
    seq = schemes.batch_sequence(perms, 5, 2, 9)
    for t in range(9):
        assert seq[t].tolist() == R.minibatch(7, [3], t, 5, 2, sampling="reshuffle")[0].tolist()


# ------------------------------------------------------------------ run_path
@pytest.mark.parametrize("estimator", ["sgd", "kd", "kd_loss", "corrected"])
def test_run_path_without_momentum_equals_a_hand_loop(estimator):
    p = make_ls(5, 3, l2=0.3, seed=2)
    A, y, al = p.A, p.b, p.l2
    theta = teacher(p, 0.9)
    lam, step = 0.4, 0.1
    batches = iid_batches(5, 2, 12, seed=3) + [np.array([4])]      # and one short batch
    x0 = np.array([0.5, -1.0, 2.0])
    got = schemes.run_path(p, theta, lam, step, batches, x0=x0, estimator=estimator)
    x = x0.copy()
    full_teacher = A.T @ (A @ theta - y) / 5 + al * theta
    assert np.array_equal(got[0], x0)
    for t, B in enumerate(batches):
        AB, yB = A[B], y[B]
        g = AB.T @ (AB @ x - yB) / len(B) + al * x
        tB = AB.T @ (AB @ theta - yB) / len(B)
        if estimator in ("kd", "corrected"):
            g = g - lam * (tB + al * theta)
        if estimator == "kd_loss":
            g = g - lam * tB
        if estimator == "corrected":
            g = g + lam * full_teacher
        x = x - step * g
        np.testing.assert_allclose(got[t + 1], x, rtol=1e-13, atol=1e-14)


def test_run_path_with_momentum_follows_torch_heavy_ball():
    """torch.optim.SGD(momentum=μ, dampening=0, nesterov=False): buf = g at the first step, then
    buf = μ·buf + g; p −= lr·buf."""
    p = make_ls(6, 2, seed=4)
    theta = teacher(p, 0.5)
    lam, step, mu = 0.3, 0.08, 0.7
    batches = rr_batches(6, 2, 5, seed=1)
    got = schemes.run_path(p, theta, lam, step, batches, momentum=mu)
    x, buf = p.default_x0(), None
    for t, B in enumerate(batches):
        g = p.distillation_grad(x, theta, lam, B)
        buf = g.copy() if buf is None else mu * buf + g
        x = x - step * buf
        np.testing.assert_allclose(got[t + 1], x, rtol=1e-13, atol=1e-14)
    # momentum 0 is plain SGD
    np.testing.assert_array_equal(schemes.run_path(p, theta, lam, step, batches, momentum=0.0),
                                  schemes.run_path(p, theta, lam, step, batches))


# ------------------------------------------------------------------ path identity
@pytest.mark.parametrize("momentum", [0.0, 0.5])
@pytest.mark.parametrize("l2", [0.0, 0.25])
@pytest.mark.parametrize("scheme", ["iid", "reshuffle"])
def test_path_identity_holds_on_random_paths(momentum, l2, scheme):
    p = make_ls(7, 3, l2=l2, seed=5)
    theta = teacher(p, 1.3, seed=6)
    x0 = np.array([2.0, -1.0, 0.5])
    for seed in range(3):
        batches = iid_batches(7, 2, 40, seed) if scheme == "iid" else rr_batches(7, 3, 10, seed)
        for lam in (-0.5, 0.0, 0.35, 1.0, 1.8):
            r = schemes.path_identity(p, theta, lam, 0.12, batches, x0=x0, momentum=momentum)
            scale = max(1.0, float(np.abs(r.lhs).max()), float(np.abs(r.rhs).max()))
            assert r.max_abs_diff.max() <= 1e-12 * scale, (seed, lam, r.max_abs_diff.max())
            # x_λ = (1 − λ)x* + λθ is KD's fixed point, ridge or not
            assert r.fixed_point_residual <= 1e-12 * max(1.0, float(np.linalg.norm(p.grad(theta))))
            np.testing.assert_allclose(r.lhs[0], x0 - p.solution(), rtol=0, atol=1e-15 * scale)


def test_path_identity_parts_are_sgd_and_the_homogeneous_response():
    p = make_ls(5, 2, l2=0.1, seed=7)
    theta = teacher(p, 0.7)
    batches = rr_batches(5, 2, 4, seed=2)
    r = schemes.path_identity(p, theta, 0.6, 0.1, batches, x0=np.ones(2), momentum=0.4)
    z = schemes.run_path(p, theta, 0.0, 0.1, batches, x0=p.solution(), momentum=0.4, estimator="sgd") - p.solution()
    np.testing.assert_allclose(r.z, z, rtol=0, atol=1e-14)
    np.testing.assert_allclose(r.x_lambda, 0.4 * p.solution() + 0.6 * theta, rtol=1e-15)


# ------------------------------------------------------------------ iid = exact_ls
@pytest.mark.parametrize("estimator,l2", [("kd", 0.0), ("kd", 0.2), ("kd_loss", 0.2), ("corrected", 0.1),
                                          ("sgd", 0.0)])
@pytest.mark.parametrize("b", [1, 2])
def test_iid_enumeration_equals_exact_ls(estimator, l2, b):
    p = make_ls(5, 2, l2=l2, seed=8)
    theta = teacher(p, 0.9)
    x0 = np.array([1.0, -2.0])
    lam, step, epochs = 0.45, 0.12, 6
    r = schemes.exact_epoch_moments(p, theta, lam, step, epochs, batch_size=b, sampling="iid",
                                    estimator=estimator, x0=x0)
    K = r.steps_per_epoch
    assert K == -(-5 // b) and np.array_equal(r.steps, np.arange(epochs + 1) * K)
    ref = exact_ls.exact_moments(p, theta, lam, step, epochs * K, batch_size=b, record_every=K,
                                 estimator=estimator, x0=x0)
    assert np.array_equal(ref.steps, r.steps)
    for name in ("dist2_opt", "subopt", "dist2_teacher"):
        np.testing.assert_allclose(getattr(r, name), getattr(ref, name), rtol=1e-10, atol=0, err_msg=name)
    np.testing.assert_allclose(r.mean_iterate, ref.mean_iterate, rtol=1e-10, atol=1e-12)
    # i.i.d.: E z_t = ∇f(x*)-driven only, so c ≈ 0 (exact_ls keeps ḡ ≈ 0 too)
    assert np.abs(r.c).max() <= 1e-12 * max(1.0, float(np.sqrt(r.M.max() * r.D2)))


# ------------------------------------------------------------------ brute force
def brute_force(p, theta, lam, step, epochs, b, sampling, drop_last=False, momentum=0.0, estimator="kd", x0=None):
    """Average of run_path over every permutation of every epoch (shuffle-once: over one permutation)."""
    n = p.n
    K = n // b if drop_last else -(-n // b)
    perms = list(itertools.permutations(range(n)))
    xs, th = p.solution(), theta - p.solution()
    if sampling == "reshuffle":
        paths = [np.array(pp) for pp in itertools.product(perms, repeat=epochs)]
    else:
        paths = [np.array(pp) for pp in perms]
    out = {k: np.zeros(epochs + 1) for k in ("dist2_opt", "subopt", "dist2_teacher", "M")}
    zsum = np.zeros((epochs + 1, p.dim))
    for pp in paths:
        bs = schemes.batch_sequence(pp, n, b, epochs * K, drop_last=drop_last)
        x = schemes.run_path(p, theta, lam, step, bs, x0=x0, momentum=momentum, estimator=estimator)[::K]
        z = schemes.run_path(p, theta, 0.0, step, bs, x0=xs, momentum=momentum, estimator="sgd")[::K] - xs
        out["dist2_opt"] += np.sum((x - xs) ** 2, axis=1)
        out["subopt"] += p.suboptimality(x)
        out["dist2_teacher"] += np.sum((x - theta) ** 2, axis=1)
        out["M"] += np.sum(z * z, axis=1)
        zsum += z
    out = {k: v / len(paths) for k, v in out.items()}
    out["c"] = zsum @ th / len(paths)
    return out, len(paths)


def assert_matches_brute(r, ref, rtol=1e-12):
    for name in ("dist2_opt", "subopt", "dist2_teacher", "M"):
        np.testing.assert_allclose(getattr(r, name), ref[name], rtol=rtol, atol=1e-300, err_msg=name)
    scale = np.sqrt(np.maximum(ref["M"], 1e-300) * r.D2)
    assert np.all(np.abs(r.c - ref["c"]) <= rtol * np.maximum(scale, np.abs(ref["c"]))), (r.c, ref["c"])


@pytest.mark.parametrize("sampling", ["reshuffle", "shuffle_once"])
@pytest.mark.parametrize("momentum,estimator,l2", [(0.0, "kd", 0.0), (0.5, "kd", 0.0), (0.3, "corrected", 0.2),
                                                   (0.0, "kd_loss", 0.2)])
def test_shuffling_enumeration_equals_brute_force_n3(sampling, momentum, estimator, l2):
    p = make_ls(3, 2, l2=l2, seed=9)
    theta = teacher(p, 0.8)
    x0 = np.array([1.5, -0.5])
    lam, step, epochs = 0.6, 0.2, 2
    r = schemes.exact_epoch_moments(p, theta, lam, step, epochs, sampling=sampling, momentum=momentum,
                                    estimator=estimator, x0=x0)
    ref, n_paths = brute_force(p, theta, lam, step, epochs, 1, sampling, momentum=momentum, estimator=estimator, x0=x0)
    assert n_paths == (36 if sampling == "reshuffle" else 6)
    assert_matches_brute(r, ref)


@pytest.mark.parametrize("n,b,sampling,epochs,drop_last,momentum,n_orders", [
    (5, 2, "reshuffle", 2, False, 0.0, 30),        # batches of 2, 2, 1: all 120² permutation pairs
    (5, 2, "shuffle_once", 3, False, 0.5, 30),
    (5, 2, "shuffle_once", 3, True, 0.5, 30),      # the fifth sample of each permutation unused
    (4, 3, "reshuffle", 2, False, 0.5, 4),         # batches of 3, 1
    (4, 3, "reshuffle", 2, True, 0.5, 4),          # one batch of 3 per epoch, one sample unused
])
def test_shuffling_enumeration_with_partial_or_dropped_last_batch(n, b, sampling, epochs, drop_last, momentum,
                                                                   n_orders):
    p = make_ls(n, 2, l2=0.1, seed=10)
    theta = teacher(p, 0.6)
    x0 = np.array([0.3, 1.2])
    lam, step = 0.7, 0.15
    r = schemes.exact_epoch_moments(p, theta, lam, step, epochs, batch_size=b, sampling=sampling,
                                    drop_last=drop_last, momentum=momentum, x0=x0)
    assert r.steps_per_epoch == (n // b if drop_last else -(-n // b))
    assert r.n_orders == n_orders                  # n! / (Π b_k! · unused!) distinct sequences of batch sets
    ref, _ = brute_force(p, theta, lam, step, epochs, b, sampling, drop_last=drop_last, momentum=momentum, x0=x0)
    assert_matches_brute(r, ref)


@pytest.mark.parametrize("sampling,momentum", [("reshuffle", 0.0), ("reshuffle", 0.5), ("iid", 0.5)])
def test_long_runs_use_the_kronecker_form_with_the_same_values(sampling, momentum):
    """More applications than the state dimension D switch to the D² × D² averaged map; the first
    epochs must equal the short run's (per-map sandwiches, checked against brute force above)."""
    p = make_ls(4, 2, l2=0.1, seed=12)
    theta = teacher(p, 0.9)
    kw = dict(batch_size=1, sampling=sampling, momentum=momentum, x0=np.array([1.0, -1.0]))
    long = schemes.exact_epoch_moments(p, theta, 0.4, 0.1, 30, **kw)
    short = schemes.exact_epoch_moments(p, theta, 0.4, 0.1, 2, **kw)
    D = 3 * 2 * (2 if momentum else 1) + 1
    assert 30 * long.steps_per_epoch > D >= 2 * (short.steps_per_epoch if sampling == "iid" else 1)
    for name in ("dist2_opt", "subopt", "dist2_teacher", "M"):
        np.testing.assert_allclose(getattr(long, name)[:3], getattr(short, name), rtol=1e-13, err_msg=name)
    np.testing.assert_allclose(long.c[:3], short.c, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ quadratic in λ
@pytest.mark.parametrize("sampling,momentum", [("reshuffle", 0.0), ("shuffle_once", 0.5), ("iid", 0.3)])
def test_quadratic_coefficients_reproduce_other_weights(sampling, momentum):
    p = make_ls(4, 2, l2=0.05, seed=11)
    theta = teacher(p, 1.1)
    kw = dict(batch_size=2, sampling=sampling, momentum=momentum, x0=np.array([1.0, 1.0]))
    r = schemes.exact_epoch_moments(p, theta, 0.3, 0.1, 5, **kw)
    for lam in (-0.4, 0.8, 1.5):
        other = schemes.exact_epoch_moments(p, theta, lam, 0.1, 5, **kw)
        for name in ("dist2_opt", "subopt", "dist2_teacher"):
            np.testing.assert_allclose(r.at(lam, name), getattr(other, name), rtol=1e-12, err_msg=name)
    # the exact argmin is the minimum of the quadratic
    t = -1
    lo = r.lambda_opt_exact[t]
    for dl in (-1e-3, 1e-3):
        assert r.quad_dist2_opt[t] @ [1, lo, lo * lo] < r.quad_dist2_opt[t] @ [1, lo + dl, (lo + dl) ** 2]


def test_lambda_opt_epoch_formula():
    M, c, D2 = 0.02, -0.005, 0.5
    lo = schemes.lambda_opt_epoch(M, c, D2)
    assert isinstance(lo, float)
    grid = np.linspace(-1, 1, 200001)
    err = grid ** 2 * D2 + (1 - grid) ** 2 * M + 2 * grid * (1 - grid) * c
    assert abs(grid[np.argmin(err)] - lo) < 2e-5
    assert schemes.lambda_opt_epoch(M, 0.0, D2) == pytest.approx(M / (M + D2), rel=1e-15)   # §5 (i.i.d.)
    arr = schemes.lambda_opt_epoch(np.array([0.1, 0.2]), np.array([0.0, 0.05]), 1.0)
    np.testing.assert_allclose(arr, [0.1 / 1.1, 0.15 / 1.1])
    assert np.isnan(schemes.lambda_opt_epoch(0.0, 0.0, 0.0))


# ------------------------------------------------------------------ qualitative facts (§5.2)
@pytest.fixture(scope="module")
def stationary_runs():
    """n = 6, d = 2, b = 1, noisy labels, teacher at distance 0.8: runs long enough that the epoch-end
    values are stationary (checked below), started at x* (no transient in M, c)."""
    p = make_ls(6, 2, seed=0)
    theta = teacher(p, 0.8, seed=1)
    lmin = np.linalg.eigvalsh(p.A.T @ p.A / p.n)[0]
    steps = (0.05, 0.025, 0.0125)
    runs = {}
    for g in steps:
        epochs = int(np.ceil(12 / (g * lmin * p.n)))
        for sampling in ("iid", "reshuffle", "shuffle_once"):
            runs[g, sampling] = schemes.exact_epoch_moments(p, theta, 0.0, g, epochs, sampling=sampling,
                                                            x0=p.solution())
    return p, theta, steps, runs


def slopes(steps, values):
    return np.diff(np.log(values)) / np.diff(np.log(steps))


def test_reshuffling_epoch_end_error_is_smaller_and_second_order(stationary_runs):
    p, theta, steps, runs = stationary_runs
    for key, r in runs.items():
        assert abs(r.M[-1] - r.M[-2]) <= 1e-6 * r.M[-1], key           # stationary
    M = {s: np.array([runs[g, s].M[-1] for g in steps]) for s in ("iid", "reshuffle", "shuffle_once")}
    assert np.all(M["reshuffle"] < M["iid"] / 50)                       # 100×–700× smaller here
    assert np.all(M["shuffle_once"] < M["iid"] / 30)
    assert np.all((slopes(steps, M["iid"]) > 0.8) & (slopes(steps, M["iid"]) < 1.2))
    assert np.all((slopes(steps, M["reshuffle"]) > 1.6) & (slopes(steps, M["reshuffle"]) < 2.4))
    assert np.all((slopes(steps, M["shuffle_once"]) > 1.6) & (slopes(steps, M["shuffle_once"]) < 2.4))


def test_reshuffling_cross_term_is_first_order_and_drives_lambda_opt(stationary_runs):
    """Finding (docs/theory.md §5.2, caution): E z = −(γ/2)H⁻¹(1/n)Σ a_i a_iᵀ∇f_i(x*) + O(γ²) under RR
    with b = 1, so c is O(γ), M ≈ ‖E z‖² is O(γ²) and λ_opt ≈ −c/D² is O(γ), not O(γ²)."""
    p, theta, steps, runs = stationary_runs
    G = p.sample_grads(p.solution())
    H = p.A.T @ p.A / p.n
    first_order = -0.5 * np.linalg.solve(H, np.einsum("ij,ik,ik->j", p.A, p.A, G) / p.n)
    rr = [runs[g, "reshuffle"] for g in steps]
    for g, r in zip(steps, rr):                                     # relative correction O(γ): ≤ 0.6γ here
        np.testing.assert_allclose(r.z_mean[-1] / g, first_order, rtol=g)
    c = np.array([r.c[-1] for r in rr])
    lam_rr = np.array([r.lambda_opt[-1] for r in rr])
    lam_iid = np.array([runs[g, "iid"].lambda_opt[-1] for g in steps])
    assert np.all((slopes(steps, np.abs(c)) > 0.9) & (slopes(steps, np.abs(c)) < 1.1))
    assert np.all((slopes(steps, np.abs(lam_rr)) > 0.9) & (slopes(steps, np.abs(lam_rr)) < 1.2))  # γ, not γ²
    assert np.all(np.abs(lam_rr) < lam_iid)
    # at stationarity the §5.2 formula is the exact argmin (x0 = x*: the transient P_t(−λδ) has decayed to
    # ~e^{−12} ≈ 6e-6 of its start, and enters the argmin linearly)
    for r in rr:
        assert r.lambda_opt_exact[-1] == pytest.approx(r.lambda_opt[-1], rel=1e-4)
    # under i.i.d. sampling c = 0 and λ_opt = M/(M + D²) (§5)
    for g in steps:
        r = runs[g, "iid"]
        assert r.lambda_opt[-1] == pytest.approx(r.M[-1] / (r.M[-1] + r.D2), rel=1e-12)
        assert r.M[-1] == pytest.approx(exact_ls.mse_sgd(p, g), rel=1e-6)


# ------------------------------------------------------------------ input checks
def test_bad_inputs_name_the_parameter():
    p = make_ls(4, 2)
    theta = teacher(p, 0.5)
    big = make_ls(8, 2)
    with pytest.raises(ValueError, match="problem.n"):
        schemes.exact_epoch_moments(big, teacher(big, 0.5), 0.5, 0.1, 1)
    with pytest.raises(ValueError, match="sampling"):
        schemes.exact_epoch_moments(p, theta, 0.5, 0.1, 1, sampling="random")
    for mu in (1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="momentum"):
            schemes.exact_epoch_moments(p, theta, 0.5, 0.1, 1, momentum=mu)
        with pytest.raises(ValueError, match="momentum"):
            schemes.run_path(p, theta, 0.5, 0.1, [[0]], momentum=mu)
        with pytest.raises(ValueError, match="momentum"):
            schemes.path_identity(p, theta, 0.5, 0.1, [[0]], momentum=mu)
    with pytest.raises(ValueError, match="batch_size"):
        schemes.exact_epoch_moments(p, theta, 0.5, 0.1, 1, batch_size=5)
    with pytest.raises(ValueError, match="estimator"):
        schemes.exact_epoch_moments(p, theta, 0.5, 0.1, 1, estimator="svrg")
    with pytest.raises(ValueError, match="step"):
        schemes.run_path(p, theta, 0.5, 0.0, [[0]])
    with pytest.raises(ValueError, match=r"batches\[1\]"):
        schemes.run_path(p, theta, 0.5, 0.1, [[0], [4]])
    with pytest.raises(ValueError, match="perm_or_perms"):
        schemes.batch_sequence([0, 1, 1, 3], 4, 2, 2)
    with pytest.raises(ValueError, match="perm_or_perms"):
        schemes.batch_sequence([[0, 1, 2, 3]], 4, 2, 4)                 # 2 epochs needed, 1 given
    with pytest.raises(ValueError, match="D2"):
        schemes.lambda_opt_epoch(0.1, 0.0, -1.0)
    with pytest.raises(TypeError, match="kdsim.LeastSquares"):
        schemes.exact_epoch_moments(object(), theta, 0.5, 0.1, 1)
