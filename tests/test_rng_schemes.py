"""Sampling schemes of the counter-based index generator (kdsim.rng): "iid", "reshuffle", "shuffle_once".

Four kinds of checks:

* structure: each epoch cuts one permutation of 0 .. n−1 into K batches (a partial last one, or
  none with ``drop_last``), and ``steps_per_epoch`` / ``epoch_of_step`` say the same;
* distribution: chi-square tests that the permutations are uniform (per position, and over all
  n! permutations for n = 4), that reshuffled epochs are independent and shuffle-once repeats;
* identical integers: the numpy functions, the numba twins, ``EpochBatches`` (steps in any order)
  and ``kdsim.theory.schemes.batch_sequence`` agree, and a pure-Python transcription of the module
  docstring reproduces them; pinned values make any change of the stream visible;
* bad input: errors that name the parameter.

Statistical tests: the seeds are fixed, so each test either always passes or always fails. Each
chi-square threshold is set so that a correct generator fails it with probability ≤ 1e-6 (stated
per test; several statistics in one test share that budget by a Bonferroni split). The generator's
own bias (every permutation has probability within n²/2³² of 1/n! relative, module docstring) is
below 1e-6 relative here and moves none of these statistics measurably.
"""
import itertools
import math

import numpy as np
import pytest
from scipy.stats import chi2

from kdsim import rng
from kdsim.rng import SAMPLINGS, SAMPLING_CODES
from kdsim.theory import schemes

try:
    import numba  # noqa: F401
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a test dependency
    HAVE_NUMBA = False

needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba twins need numba")

#: a false-failure probability of at most this per statistical test (Bonferroni inside a test)
FALSE_FAILURE = 1e-6

#: (n, b) pairs: b = 1, b dividing n, b not dividing n (a partial last batch), b = n, b = n − 1,
#: and b > FLOYD_COMPARE_MAX (Floyd's scratch-array path under "iid")
SHAPES = [(1, 1), (2, 1), (5, 2), (7, 3), (10, 1), (10, 5), (10, 3), (10, 9), (10, 10), (37, 5), (40, 33)]


def u64(*values):
    return np.array(values, dtype=np.uint64)


def epoch_batches(seed, streams, epoch, n, b, sampling, drop_last):
    """The K minibatches (each (T, b_k)) of one epoch through ``rng.minibatch``."""
    K = rng.steps_per_epoch(n, b, drop_last)
    return [rng.minibatch(seed, streams, epoch * K + k, n, b, sampling, drop_last) for k in range(K)]


# ------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("sampling", ["reshuffle", "shuffle_once"])
@pytest.mark.parametrize("n,b", SHAPES)
def test_each_epoch_is_a_permutation_cut_into_batches(sampling, n, b):
    streams = np.arange(40, dtype=np.uint64)
    K = rng.steps_per_epoch(n, b)
    assert K == math.ceil(n / b)
    for e in range(3):
        batches = epoch_batches(11, streams, e, n, b, sampling, False)
        sizes = [B.shape[1] for B in batches]
        assert sizes == [b] * (K - 1) + [n - (K - 1) * b]              # only the last batch may be partial
        whole = np.concatenate(batches, axis=1)                          # (T, n)
        np.testing.assert_array_equal(np.sort(whole, axis=1), np.tile(np.arange(n), (len(streams), 1)))
        # the epoch's batches are its permutation cut in order
        np.testing.assert_array_equal(whole, rng.epoch_permutation(11, streams, e, n, sampling))
        for k, B in enumerate(batches):
            t = e * K + k
            assert rng.epoch_of_step(t, n, b) == (e, k, B.shape[1])


@pytest.mark.parametrize("sampling", ["reshuffle", "shuffle_once"])
@pytest.mark.parametrize("n,b", [(1, 1), (5, 2), (7, 3), (10, 1), (10, 3), (10, 5), (10, 9), (10, 10), (40, 33)])
def test_drop_last_batches_are_disjoint_and_full(sampling, n, b):
    streams = np.arange(40, dtype=np.uint64)
    K = rng.steps_per_epoch(n, b, drop_last=True)
    assert K == n // b
    for e in range(3):
        batches = epoch_batches(4, streams, e, n, b, sampling, True)
        assert all(B.shape == (len(streams), b) for B in batches)
        used = np.concatenate(batches, axis=1)                            # (T, K·b)
        assert used.shape[1] == K * b
        srt = np.sort(used, axis=1)
        assert np.all(np.diff(srt, axis=1) > 0)                           # disjoint
        # the unused samples are the last n mod b positions of the epoch's permutation
        perm = rng.epoch_permutation(4, streams, e, n, sampling)
        np.testing.assert_array_equal(used, perm[:, :K * b])
        for k in range(K):
            assert rng.epoch_of_step(e * K + k, n, b, drop_last=True) == (e, k, b)


@pytest.mark.parametrize("n,b", [(10, 3), (10, 5), (7, 7), (5, 2)])
def test_iid_epochs_are_counted_with_the_same_K(n, b):
    # under "iid" K only defines epochs (for schedules and epoch-based records); a batch is always full
    for drop_last in (False, True):
        K = rng.steps_per_epoch(n, b, drop_last)
        for t in range(3 * K + 1):
            assert rng.minibatch(0, u64(1, 2), t, n, b, "iid", drop_last).shape == (2, b)
            e, k, _ = rng.epoch_of_step(t, n, b, drop_last)
            assert (e, k) == divmod(t, K)


def test_steps_per_epoch_values():
    assert [rng.steps_per_epoch(10, b) for b in (1, 2, 3, 4, 5, 6, 9, 10)] == [10, 5, 4, 3, 2, 2, 2, 1]
    assert [rng.steps_per_epoch(10, b, True) for b in (1, 2, 3, 4, 5, 6, 9, 10)] == [10, 5, 3, 2, 2, 1, 1, 1]
    # the last (partial) batch: n − (K − 1)·b samples
    assert rng.epoch_of_step(3, 10, 3) == (0, 3, 1)
    assert rng.epoch_of_step(4, 10, 3) == (1, 0, 3)
    assert rng.epoch_of_step(3, 10, 3, drop_last=True) == (1, 0, 3)
    assert rng.epoch_of_step(10**9 + 7, 10, 4) == (333333335, 2, 2)          # K = 3: 10**9 + 7 = 3·333333335 + 2


# --------------------------------------------------------------------------- distribution
@pytest.mark.parametrize("n,epoch", [(5, 0), (10, 0), (10, 3), (37, 1)])
def test_positions_uniform_chi_square(n, epoch):
    # The element at each position of a uniformly random permutation is uniform on 0 .. n−1, so the
    # counts at one position over T independent streams are multinomial(T, 1/n): a chi-square with
    # n − 1 degrees of freedom per position. False-failure probability ≤ 1e-6 for the whole test:
    # Bonferroni over the n positions (each threshold at 1e-6 / n). Seeds fixed: deterministic.
    T = 500 * n
    perms = rng.epoch_permutation(21, np.arange(T, dtype=np.uint64), epoch, n)
    limit = chi2.isf(FALSE_FAILURE / n, n - 1)
    expected = T / n
    for j in range(n):
        counts = np.bincount(perms[:, j], minlength=n)
        stat = np.sum((counts - expected) ** 2 / expected)
        assert stat < limit, (j, stat, limit)


def test_all_permutations_uniform_n4_chi_square():
    # n = 4: each of the 4! = 24 permutations equally likely. 48,000 streams (2,000 per cell),
    # chi-square with 23 degrees of freedom at false-failure probability ≤ 1e-6 (seeds fixed).
    n, T = 4, 48000
    perms = rng.epoch_permutation(3, np.arange(T, dtype=np.uint64), 0, n)
    index = {p: k for k, p in enumerate(itertools.permutations(range(n)))}
    counts = np.bincount([index[tuple(p)] for p in perms.tolist()], minlength=24)
    expected = T / 24
    stat = np.sum((counts - expected) ** 2 / expected)
    assert stat < chi2.isf(FALSE_FAILURE, 23)


def test_reshuffled_epochs_independent_chi_square():
    # Under "reshuffle" the first element of epoch 0 and of epoch 1 are independent and uniform:
    # the joint (5 × 5) counts over 25,000 streams are uniform, a chi-square with 24 degrees of
    # freedom at false-failure probability ≤ 1e-6 (seeds fixed). Shuffle-once pairs are all equal.
    n, T = 5, 25000
    streams = np.arange(T, dtype=np.uint64)
    p0 = rng.epoch_permutation(8, streams, 0, n)[:, 0]
    p1 = rng.epoch_permutation(8, streams, 1, n)[:, 0]
    counts = np.bincount(p0 * n + p1, minlength=n * n)
    expected = T / n**2
    stat = np.sum((counts - expected) ** 2 / expected)
    assert stat < chi2.isf(FALSE_FAILURE, n * n - 1)


def test_shuffle_once_repeats_and_reshuffle_changes():
    n, b = 10, 3
    streams = np.arange(500, dtype=np.uint64)
    K = rng.steps_per_epoch(n, b)
    first = rng.epoch_permutation(2, streams, 0, n, "shuffle_once")
    # shuffle-once uses epoch 0's permutation, which is also reshuffle's epoch 0
    np.testing.assert_array_equal(first, rng.epoch_permutation(2, streams, 0, n, "reshuffle"))
    for e in (1, 2, 7, 1000):
        np.testing.assert_array_equal(rng.epoch_permutation(2, streams, e, n, "shuffle_once"), first)
        for k in range(K):
            np.testing.assert_array_equal(rng.minibatch(2, streams, e * K + k, n, b, "shuffle_once"),
                                          rng.minibatch(2, streams, k, n, b, "shuffle_once"))
    # reshuffle: epochs differ (two equal epochs of n = 10 have probability 1/10! per stream)
    perms = [rng.epoch_permutation(2, streams, e, n, "reshuffle") for e in range(4)]
    for e1, e2 in itertools.combinations(range(4), 2):
        assert np.mean(np.all(perms[e1] == perms[e2], axis=1)) < 0.01


def test_different_seeds_and_streams_differ():
    n = 10
    streams = np.arange(1000, dtype=np.uint64)
    base = rng.epoch_permutation(0, streams, 0, n)
    for other in (rng.epoch_permutation(1, streams, 0, n), rng.epoch_permutation(0, streams + np.uint64(1), 0, n),
                  rng.epoch_permutation(0, streams + np.uint64(2**40), 0, n),
                  rng.epoch_permutation(0, streams, 1, n)):
        assert np.mean(np.all(base == other, axis=1)) < 0.01
    # within one call, different streams give different permutations
    assert len({tuple(p) for p in base.tolist()}) > 990
    # the epoch keys are apart from the i.i.d. step keys (top bit): epoch e ≠ step e
    for e in range(5):
        assert not np.any(rng.epoch_keys(0, streams, e) == rng.step_keys(0, streams, e))


# ---------------------------------------------------------------------- identical integers
def _reference_permutation(seed, stream, epoch, n):
    """The module docstring transcribed with Python integers (no numpy, no numba)."""
    mask, golden = (1 << 64) - 1, 0x9E3779B97F4A7C15

    def sm(z):
        z = (z + golden) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    key = sm(sm(sm(seed) ^ stream) ^ ((1 << 63) | epoch))
    perm = list(range(n))
    for j in range(n - 1, 0, -1):
        h = sm((key + (n - j) * golden) & mask)
        r = ((h >> 32) * (j + 1)) >> 32
        perm[j], perm[r] = perm[r], perm[j]
    return perm


def test_permutation_follows_the_module_docstring():
    cases = [(0, 0, 0, 10), (7, 3, 0, 5), (2**63 - 1, 2**40, 5, 33), (5, 9, 123456, 1), (5, 9, 7, 2),
             (123, 2**64 - 1, 2**62, 17), (1, 2, 3, 64)]
    for seed, stream, epoch, n in cases:
        got = rng.epoch_permutation(seed, u64(stream), epoch, n)[0].tolist()
        assert got == _reference_permutation(seed, stream, epoch, n), (seed, stream, epoch, n)


def test_epoch_permutation_known_values():
    # These integers pin the permutation stream: every stored result of a reshuffled or
    # shuffle-once run depends on them, so a change in the stream must show up here (and be
    # deliberate). Computed once from kdsim.rng and checked against the docstring's transcription.
    assert rng.epoch_permutation(0, u64(0), 0, 10).tolist() == [[9, 8, 2, 1, 6, 4, 0, 5, 3, 7]]
    assert rng.epoch_permutation(7, u64(3), 0, 5).tolist() == [[4, 0, 1, 2, 3]]
    # the first batches of those runs follow
    assert rng.minibatch(0, u64(0), 0, 10, 4, "reshuffle").tolist() == [[9, 8, 2, 1]]
    assert rng.minibatch(0, u64(0), 2, 10, 4, "reshuffle").tolist() == [[3, 7]]
    assert rng.minibatch(7, u64(3), 12, 5, 2, "shuffle_once").tolist() == [[4, 0]]


@pytest.mark.parametrize("n,b", SHAPES)
def test_iid_stream_unchanged(n, b):
    # "iid" (the default) draws exactly what minibatch_indices always drew, drop_last or not
    streams = np.concatenate([np.arange(30, dtype=np.uint64), rng.stream_ids(5, 3, False).ravel()])
    for t in (0, 1, 7, 2**40):
        want = rng.minibatch_indices(13, streams, t, n, b)
        np.testing.assert_array_equal(rng.minibatch(13, streams, t, n, b), want)
        np.testing.assert_array_equal(rng.minibatch(13, streams, t, n, b, "iid", drop_last=True), want)
        np.testing.assert_array_equal(rng.EpochBatches(13, streams, n, b, "iid").batch(t), want)


def _steps_out_of_order(K, epochs, seed=0):
    """Every step of ``epochs`` epochs in a shuffled order, then some revisited (crossing epochs back)."""
    steps = list(range(epochs * K + 1))
    order = list(np.random.default_rng(seed).permutation(steps))
    return [int(t) for t in order] + [0, epochs * K - 1, 1 % (epochs * K), 0]


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("n,b,drop_last", [(1, 1, False), (5, 2, False), (5, 2, True), (10, 3, False),
                                           (10, 3, True), (10, 10, False), (7, 1, False), (40, 33, False),
                                           (40, 33, True)])
def test_minibatch_and_epoch_batches_identical_in_any_order(sampling, n, b, drop_last):
    seed = 2**61 + 12345
    streams = u64(0, 1, 5, 77, 2**33, 2**40 + 7, 2**64 - 1)
    K = rng.steps_per_epoch(n, b, drop_last)
    epochs = 4
    want = {t: rng.minibatch(seed, streams, t, n, b, sampling, drop_last) for t in range(epochs * K + 1)}
    # EpochBatches, steps in order
    eb = rng.EpochBatches(seed, streams, n, b, sampling, drop_last)
    for t in range(epochs * K + 1):
        np.testing.assert_array_equal(eb.batch(t), want[t], err_msg=str(t))
    # a fresh one, steps out of order (each new epoch rebuilds its permutations)
    eb = rng.EpochBatches(seed, streams, n, b, sampling, drop_last)
    for t in _steps_out_of_order(K, epochs):
        np.testing.assert_array_equal(eb.batch(t), want[t], err_msg=str(t))
    # Floyd's scratch array (iid, b > FLOYD_COMPARE_MAX) gives the same picks
    taken = np.zeros((len(streams), n), dtype=bool)
    eb = rng.EpochBatches(seed, streams, n, b, sampling, drop_last, taken=taken)
    for t in _steps_out_of_order(K, epochs, seed=1):
        np.testing.assert_array_equal(eb.batch(t), want[t], err_msg=str(t))
    assert not taken.any()
    # rows(): a subset of the streams keeps its integers (also with a permutation already cached)
    keep = np.array([True, False, True, True, False, False, True])
    sub = eb.rows(keep)
    for t in _steps_out_of_order(K, epochs, seed=2):
        np.testing.assert_array_equal(sub.batch(t), want[t][keep], err_msg=str(t))
    # a stream's batch does not depend on which other streams are drawn with it
    for t in (0, K - 1, K, 3 * K):
        np.testing.assert_array_equal(rng.minibatch(seed, streams[3:4], t, n, b, sampling, drop_last),
                                      want[t][3:4])


@needs_numba
@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("n,b,drop_last", [(1, 1, False), (5, 2, False), (5, 2, True), (10, 3, False),
                                           (10, 3, True), (10, 10, False), (7, 1, False), (40, 33, False),
                                           (40, 33, True)])
def test_numba_twins_identical(sampling, n, b, drop_last):
    seed = 2**61 + 12345
    streams = u64(0, 1, 5, 77, 2**33, 2**40 + 7, 2**64 - 1)
    code = SAMPLING_CODES[sampling]
    K = rng.steps_per_epoch(n, b, drop_last)
    epochs = 4
    want = {t: rng.minibatch(seed, streams, t, n, b, sampling, drop_last) for t in range(epochs * K + 1)}
    for t, w in want.items():
        np.testing.assert_array_equal(rng.minibatch_nb(seed, streams, t, n, b, code, K), w, err_msg=str(t))
    # the kernels' per-trajectory path: batch_into_nb with its cached permutation (one slot per
    # stream, perm_epoch −1 at first), steps in order and then out of order
    skeys = rng.stream_keys(seed, streams)
    for order in (list(range(epochs * K + 1)), _steps_out_of_order(K, epochs)):
        perm = np.empty((len(streams), n), dtype=np.int64)
        perm_epoch = np.full(len(streams), -1, dtype=np.int64)
        taken = np.zeros(n, dtype=np.bool_)
        out = np.empty(b, dtype=np.int64)
        for t in order:
            for i in range(len(streams)):
                nb = rng.batch_into_nb(skeys[i], t, n, b, code, K, perm, perm_epoch, i, out, taken)
                assert nb == want[t].shape[1]
                np.testing.assert_array_equal(out[:nb], want[t][i], err_msg=str((t, i)))
        assert not taken.any()


@needs_numba
def test_numba_epoch_key_and_permutation_twins():
    streams = u64(0, 3, 2**40, 2**64 - 1)
    skeys = rng.stream_keys(99, streams)
    for e in (0, 1, 5, 2**40):
        ekeys = rng.epoch_keys(99, streams, e)
        assert [int(rng.epoch_key_nb(k, e)) for k in skeys] == [int(k) for k in ekeys]
        for n in (1, 2, 9, 64):
            want = rng.permutations_from_keys(ekeys, n)
            for i, k in enumerate(ekeys):
                got = np.full(n + 2, -7, dtype=np.int64)
                rng.permutation_into_nb(k, n, got)
                np.testing.assert_array_equal(got[:n], want[i])
                assert (got[n:] == -7).all()                               # writes perm[:n] only


@pytest.mark.parametrize("n,b,drop_last", [(5, 2, False), (5, 2, True), (7, 3, False), (6, 6, False), (4, 1, False)])
def test_theory_batch_sequence_reproduces_minibatch(n, b, drop_last):
    # kdsim.theory.schemes cuts a permutation the way kdsim.rng does: fed the generator's own
    # epoch permutations, batch_sequence gives the batches every engine draws
    K = rng.steps_per_epoch(n, b, drop_last)
    epochs = 5
    steps = epochs * K
    for stream in (0, 4, 2**35):
        s = u64(stream)
        perms = np.stack([rng.epoch_permutation(17, s, e, n, "reshuffle")[0] for e in range(epochs)])
        seq = schemes.batch_sequence(perms, n, b, steps, drop_last=drop_last)
        for t in range(steps):
            np.testing.assert_array_equal(seq[t], rng.minibatch(17, s, t, n, b, "reshuffle", drop_last)[0])
        once = rng.epoch_permutation(17, s, 3, n, "shuffle_once")[0]
        seq = schemes.batch_sequence(once, n, b, steps, drop_last=drop_last)
        for t in range(steps):
            np.testing.assert_array_equal(seq[t], rng.minibatch(17, s, t, n, b, "shuffle_once", drop_last)[0])


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call", [
    lambda: rng.minibatch(0, u64(0), 0, 10, 2, sampling="shuffle"),
    lambda: rng.minibatch(0, u64(0), 0, 10, 2, sampling="IID"),
    lambda: rng.epoch_permutation(0, u64(0), 0, 10, sampling="random"),
    lambda: rng.epoch_permutation(0, u64(0), 0, 10, sampling="iid"),      # i.i.d. has no permutation
])
def test_unknown_sampling_names_the_parameter(call):
    with pytest.raises(ValueError, match="sampling"):
        call()


def test_negative_epoch_names_the_parameter():
    with pytest.raises(ValueError, match="epoch"):
        rng.epoch_permutation(0, u64(0), -1, 10)
    with pytest.raises(ValueError, match="epoch"):
        rng.epoch_permutation(0, u64(0), -1, 10, "shuffle_once")
    # a negative step of a permutation scheme falls in a negative epoch: refused too
    with pytest.raises(ValueError):
        rng.minibatch(0, u64(0), -1, 10, 3, "reshuffle")


@pytest.mark.parametrize("call,name", [
    (lambda: rng.steps_per_epoch(0, 1), "n"),
    (lambda: rng.steps_per_epoch(10, 0), "batch_size"),
    (lambda: rng.steps_per_epoch(10, 11, True), "batch_size"),
    (lambda: rng.epoch_of_step(3, 10, 11), "batch_size"),
    (lambda: rng.epoch_permutation(0, u64(0), 0, 0), "n"),
    (lambda: rng.minibatch(0, u64(0), 0, 10, 11, "reshuffle"), "batch_size"),
    (lambda: rng.EpochBatches(0, u64(0), 10, 0, "reshuffle"), "batch_size"),
])
def test_bad_sizes_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_epoch_batches_unknown_sampling_names_the_parameter():
    with pytest.raises(ValueError, match="sampling"):
        rng.EpochBatches(0, u64(0), 10, 2, "bogus")


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_negative_step_names_the_parameter(sampling):
    with pytest.raises(ValueError, match="step"):
        rng.minibatch(0, u64(0), -1, 10, 3, sampling)
