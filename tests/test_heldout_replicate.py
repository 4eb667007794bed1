"""Teacher weight decay, held-out records, kept iterates, the seeded data split, and `kdsim replicate`."""
import numpy as np
import pytest

import kdsim
from kdsim import datasets
from kdsim.cli import main

BACKENDS = ("numpy", "numba")


def _softmax_split(seed=0):
    r = np.random.default_rng(seed)
    A = r.standard_normal((40, 3))
    y = (A @ np.array([1.0, -1.0, 0.5]) > 0).astype(int) + (A[:, 0] > 1)
    train = kdsim.SoftmaxRegression(A[:30], y[:30], 3, bias=True, l2=0.1)
    test = kdsim.SoftmaxRegression(A[30:], y[30:], 3, bias=True, l2=0.1)
    return train.with_test(test), test


def _ls_split():
    r = np.random.default_rng(2)
    A = r.standard_normal((20, 3))
    b = A @ np.array([1.0, 2.0, -1.0]) + 0.3 * r.standard_normal(20)
    return kdsim.LeastSquares(A[:14], b[:14], l2=0.05).with_test(kdsim.LeastSquares(A[14:], b[14:], l2=0.05))


# ------------------------------------------------------------------ teacher_l2
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", ["softmax", "least_squares"])
def test_teacher_l2_special_cases_are_kd_and_kd_loss_bit_for_bit(backend, family):
    p = _softmax_split()[0] if family == "softmax" else _ls_split()
    theta = p.solution() + 0.2
    kw = dict(batch_size=3, sampling="reshuffle", backend=backend, seed=4)
    kd = kdsim.simulate(p, theta, [0.3, 0.8], 0.05, 40, 3, **kw)
    kd_as_l2 = kdsim.simulate(p, theta, [0.3, 0.8], 0.05, 40, 3, estimator="kd_loss", teacher_l2=p.l2, **kw)
    kd_loss = kdsim.simulate(p, theta, [0.3, 0.8], 0.05, 40, 3, estimator="kd_loss", **kw)
    kd_loss_as_l2 = kdsim.simulate(p, theta, [0.3, 0.8], 0.05, 40, 3, teacher_l2=0.0, **kw)
    assert np.array_equal(kd.x_final, kd_as_l2.x_final)
    assert np.array_equal(kd_loss.x_final, kd_loss_as_l2.x_final)
    assert not np.array_equal(kd.x_final, kd_loss.x_final)
    assert kd_as_l2.config["teacher_l2"] == p.l2 and "teacher_l2" not in kd.config


def test_teacher_l2_is_the_weight_decay_of_the_teacher_term():
    p = _ls_split()
    theta = p.solution() + 0.3
    terms = p.teacher_terms(theta, "data", teacher_l2=0.7)
    rows = p.sample_grads(theta) - p.l2 * theta          # ∇ℓ_i(θ)
    np.testing.assert_allclose(terms.full, rows.mean(axis=0) + 0.7 * theta, rtol=1e-13)


@pytest.mark.parametrize("kw,match", [({"teacher_l2": -1.0}, "teacher_l2"),
                                      ({"teacher_l2": 0.1, "estimator": "sgd"}, "teacher_l2")])
def test_teacher_l2_bad_input(kw, match):
    p = _ls_split()
    with pytest.raises(ValueError, match=match):
        kdsim.simulate(p, p.solution(), 0.5, 0.05, 10, 2, **kw)


# ------------------------------------------------------------------ held-out records
@pytest.mark.parametrize("backend", BACKENDS)
def test_heldout_records_match_a_direct_computation(backend):
    p, test = _softmax_split()
    res = kdsim.simulate(p, p.solution() + 0.1, [0.0, 0.7], 0.1, seeds=4, epochs=3, record_every_epoch=1,
                         batch_size=4, sampling="reshuffle", backend=backend, keep_iterates=True)
    assert res.record_names[-2:] == ("test_loss", "test_accuracy")
    X = res.iterates.reshape(-1, p.dim)
    Z = np.einsum("tkd,nd->tnk", X.reshape(-1, 3, test.n_features), test.A)
    lse = np.log(np.exp(Z - Z.max(axis=2, keepdims=True)).sum(axis=2)) + Z.max(axis=2)
    loss = np.mean(lse - np.take_along_axis(Z, test.y[None, :, None], axis=2)[..., 0], axis=1)
    acc = np.mean(Z.argmax(axis=2) == test.y[None, :], axis=1)
    np.testing.assert_allclose(res.record("test_loss").ravel(), loss, rtol=1e-12)
    np.testing.assert_array_equal(res.record("test_accuracy").ravel(), acc)
    # the last saved iterate is the final iterate
    np.testing.assert_allclose(res.iterates[:, :, -1], res.x_final, rtol=1e-13)


def test_heldout_records_agree_across_engines_and_reduce():
    p = _ls_split()
    theta = p.solution() + 0.2
    kw = dict(batch_size=4, sampling="reshuffle", momentum=0.3, record_every=5)
    ref = kdsim.simulate(p, theta, [0.0, 0.5, 1.0], 0.05, 40, 6, backend="numpy", **kw)
    fast = kdsim.simulate(p, theta, [0.0, 0.5, 1.0], 0.05, 40, 6, backend="numba", **kw)
    assert fast.timing["kernel"] == "ls_affine"
    assert ref.record_names == ("dist2_opt", "subopt", "dist2_teacher", "test_loss")   # regression: no accuracy
    np.testing.assert_allclose(fast.record("test_loss"), ref.record("test_loss"), rtol=1e-10)
    red = kdsim.simulate(p, theta, [0.0, 0.5, 1.0], 0.05, 40, 6, backend="numba", reduce=True, **kw)
    np.testing.assert_allclose(red.mean("test_loss"), ref.mean("test_loss"), rtol=1e-10)
    assert "test_loss_mean" in red.to_frame().columns
    assert set(ref.summary()["record"]) == set(ref.record_names)
    assert "test_loss" in ref.to_frame().columns


def test_heldout_records_are_nan_after_divergence():
    p = _ls_split()
    with pytest.warns(kdsim.DivergenceWarning):
        res = kdsim.simulate(p, p.solution(), [0.0], 5.0, 30, 3, record_every=5, backend="numba",
                             sampling="reshuffle")
    assert res.diverged.all()
    after = res.steps[None, None, :] >= res.diverged_step[:, :, None]
    assert np.isnan(res.record("test_loss")[after]).all()


def test_without_a_split_heldout_records_are_a_clear_error():
    p = kdsim.LeastSquares(np.eye(3), np.ones(3))
    res = kdsim.simulate(p, p.solution(), 0.5, 0.1, 5, 2)
    with pytest.raises(ValueError, match="with_test"):
        res.record("test_loss")
    with pytest.raises(TypeError, match="LeastSquares"):
        p.with_test(kdsim.SoftmaxRegression(np.eye(3), [0, 1, 2], 3))


def test_with_test_changes_the_fingerprint_only():
    p = kdsim.LeastSquares(np.eye(3), np.ones(3))
    q = p.with_test(kdsim.LeastSquares(np.ones((2, 3)), np.zeros(2)))
    assert p.test is None and q.test is not None
    assert p.fingerprint() != q.fingerprint()
    np.testing.assert_array_equal(p.solution(), q.solution())


# ------------------------------------------------------------------ the split
def test_train_test_split_is_seeded_stratified_and_uses_training_statistics():
    tr, te = datasets.train_test_split("digits", standardize=True, bias=True)
    tr2, te2 = datasets.train_test_split("digits", standardize=True, bias=True)
    assert np.array_equal(te.A, te2.A) and np.array_equal(tr.y, tr2.y)
    full = datasets.load("digits")
    assert tr.n_samples + te.n_samples == full.n_samples
    counts = np.bincount(full.y)
    np.testing.assert_array_equal(np.bincount(te.y), np.round(0.2 * counts).astype(int))
    # standardised by the training part: its columns have mean 0 (the test part's do not exactly)
    assert np.abs(tr.A[:, :-1].mean(axis=0)).max() < 1e-12
    assert np.abs(te.A[:, :-1].mean(axis=0)).max() > 1e-3
    assert np.all(tr.A[:, -1] == 1.0) and "train/test split: seed 0" in te.provenance
    other, _ = datasets.train_test_split("digits", seed=1)
    assert not np.array_equal(other.y, datasets.train_test_split("digits")[0].y)
    rtr, rte = datasets.train_test_split("diabetes", standardize_target=True)
    assert abs(rtr.y.mean()) < 1e-12 and rte.n_samples == round(0.2 * 442)


@pytest.mark.parametrize("kw,match", [({"test_fraction": 1.0}, "test_fraction"), ({"test_fraction": 0}, "test_fraction"),
                                      ({"seed": -1}, "seed")])
def test_train_test_split_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        datasets.train_test_split("digits", **kw)
    with pytest.raises(ValueError, match="standardize_target"):
        datasets.train_test_split("digits", standardize_target=True)


# ------------------------------------------------------------------ replicate
def test_replicate_kdvr_linear_quick(tmp_path, capsys):
    assert main(["replicate", "kdvr-linear", "--quick", "--out", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    for method in ("SGD", "KD", "SVRG"):
        assert method in out
    report = (tmp_path / "kdvr-linear.md").read_text()
    assert "Differences from the paper's setting" in report and "MNIST" in report
    assert (tmp_path / "kdvr-linear.png").stat().st_size > 0
    import pandas as pd
    frame = pd.read_csv(tmp_path / "kdvr-linear.csv")
    assert set(frame["record"]) == {"subopt", "train_loss", "test_loss", "test_accuracy"}
    assert frame["epoch"].max() == 4 and set(frame["count"]) == {16}
    acc = frame[(frame["record"] == "test_accuracy") & (frame["epoch"] == 4)]
    assert (acc["mean"] > 0.85).all()                      # a linear model on digits
    # SVRG equals SGD during its two warm-up epochs (same streams, a = c = 0)
    def curve(method, rec):
        return frame[(frame["method"] == method) & (frame["record"] == rec)].set_index("epoch")["mean"]
    np.testing.assert_allclose(curve("SVRG", "train_loss").loc[:2], curve("SGD", "train_loss").loc[:2], rtol=1e-12)
    assert not np.allclose(curve("SVRG", "train_loss").loc[3:], curve("SGD", "train_loss").loc[3:], rtol=1e-6)


def test_replicate_bad_input():
    assert main(["replicate", "kdvr-linear", "--seeds", "1", "--out", "/tmp"]) == 2
    assert main(["replicate", "nope"]) == 2


@pytest.mark.slow
def test_replicate_kdvr_linear_full(tmp_path):
    from kdsim.replicate import kdvr_linear
    rep = kdvr_linear()
    rep.save(tmp_path)
    table = rep.table().set_index("method")
    assert (table["seeds"] == 256).all()
    assert (table["test_accuracy"] > 0.9).all()
    print(rep.to_markdown())


def test_frames_carry_epochs_and_the_training_options():
    p = _ls_split()
    res = kdsim.simulate(p, p.solution() + 0.1, [0.0, 0.5], 0.05, seeds=3, epochs=4, record_every_epoch=2,
                         batch_size=5, sampling="reshuffle", momentum=0.4, lam_schedule="decay:0.8")
    frame = res.to_frame()
    assert list(frame["epoch"].unique()) == [0.0, 2.0, 4.0]
    assert (frame["sampling"] == "reshuffle").all() and (frame["momentum"] == 0.4).all()
    assert (frame["lam_schedule"] == "decay:0.8").all() and "temperature" not in frame.columns
    red = kdsim.simulate(p, p.solution() + 0.1, [0.0, 0.5], 0.05, seeds=3, epochs=4, record_every_epoch=2,
                         batch_size=5, sampling="shuffle_once", reduce=True).to_frame()
    assert (red["sampling"] == "shuffle_once").all() and list(red["epoch"].unique()) == [0.0, 2.0, 4.0]
    plain = kdsim.simulate(p, p.solution(), [0.0], 0.05, 10, 2).to_frame()
    assert "sampling" not in plain.columns and "epoch" in plain.columns
