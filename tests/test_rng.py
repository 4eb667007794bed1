"""The counter-based minibatch generator (kdsim.rng)."""
import itertools
import math

import numpy as np
import pytest
from scipy.stats import chi2

from kdsim import rng


def test_splitmix64_known_values():
    # Reference values of the SplitMix64 sequence seeded with 0 (state advanced by GOLDEN
    # before mixing): the first outputs published with the algorithm.
    out = rng.splitmix64(np.array([0, 0x9E3779B97F4A7C15], dtype=np.uint64))
    assert int(out[0]) == 0xE220A8397B1DCDAF
    assert int(out[1]) == 0x6E789E6AA1B965F4


def test_identical_streams_for_identical_inputs():
    a = rng.minibatch_indices(7, np.arange(50), 123, 97, 5)
    b = rng.minibatch_indices(7, np.arange(50), 123, 97, 5)
    assert np.array_equal(a, b)
    # a stream's minibatch does not depend on which other streams are drawn with it
    c = rng.minibatch_indices(7, np.array([13]), 123, 97, 5)
    assert np.array_equal(a[13], c[0])


def test_different_seed_step_stream_differ():
    base = rng.minibatch_indices(0, np.arange(200), 0, 1000, 4)
    for other in (rng.minibatch_indices(1, np.arange(200), 0, 1000, 4),
                  rng.minibatch_indices(0, np.arange(200), 1, 1000, 4),
                  rng.minibatch_indices(0, np.arange(1, 201), 0, 1000, 4)):
        assert np.mean(np.all(base == other, axis=1)) < 0.01


@pytest.mark.parametrize("n,b", [(7, 1), (7, 3), (10, 9), (50, 10), (5, 5)])
def test_no_repeats_inside_minibatch(n, b):
    idx = rng.minibatch_indices(3, np.arange(2000), 11, n, b)
    assert idx.min() >= 0 and idx.max() < n
    srt = np.sort(idx, axis=1)
    assert np.all(np.diff(srt, axis=1) > 0)


@pytest.mark.parametrize("n,b", [(10, 1), (10, 3), (37, 5)])
def test_uniform_marginals_chi_square(n, b):
    # Each sample is included with probability b/n; 20,000 draws, chi-square test at
    # false-failure probability 1e-6 (seeds fixed, so the outcome is deterministic).
    draws = np.concatenate([rng.minibatch_indices(5, np.arange(1000), t, n, b) for t in range(20)])
    counts = np.bincount(draws.ravel(), minlength=n)
    expected = draws.shape[0] * b / n
    stat = np.sum((counts - expected) ** 2 / expected)
    assert stat < chi2.ppf(1 - 1e-6, n - 1)


def test_subsets_uniform_enumeration():
    # n=5, b=2: all 10 subsets equally likely (chi-square over subsets).
    n, b = 5, 2
    draws = np.concatenate([rng.minibatch_indices(9, np.arange(2000), t, n, b) for t in range(10)])
    keys = {s: k for k, s in enumerate(itertools.combinations(range(n), b))}
    counts = np.bincount([keys[tuple(sorted(r))] for r in draws], minlength=len(keys))
    expected = draws.shape[0] / math.comb(n, b)
    stat = np.sum((counts - expected) ** 2 / expected)
    assert stat < chi2.ppf(1 - 1e-6, len(keys) - 1)


def test_full_batch_is_every_sample():
    idx = rng.minibatch_indices(0, np.arange(3), 5, 6, 6)
    assert np.array_equal(idx, np.tile(np.arange(6), (3, 1)))


def test_stream_ids_common_and_independent():
    common = rng.stream_ids(4, 3, True)
    assert common.shape == (3, 4) and np.all(common == common[0])
    own = rng.stream_ids(4, 3, False)
    assert len(np.unique(own)) == 12


@pytest.mark.parametrize("kw,match", [({"n": 0}, "n"), ({"batch_size": 0}, "batch_size"),
                                      ({"batch_size": 11}, "batch_size")])
def test_bad_arguments(kw, match):
    args = dict(seed=0, streams=np.arange(2), step=0, n=10, batch_size=2) | kw
    with pytest.raises(ValueError, match=match):
        rng.minibatch_indices(**args)


def test_minibatch_indices_known_values():
    # the index stream is part of every stored result: these integers must never change
    got = rng.minibatch_indices(7, np.array([0, 3, 2**33], dtype=np.uint64), 11, 50, 5)
    assert got.tolist() == [[32, 17, 47, 23, 16], [34, 45, 26, 8, 0], [19, 32, 36, 30, 2]]
    got = rng.minibatch_indices(2**63 - 1, np.array([1], dtype=np.uint64), 2**40, 300, 40)   # scratch-array path
    assert got.tolist() == [[116, 166, 104, 190, 170, 100, 2, 187, 161, 22, 254, 230, 71, 180, 9, 249, 60, 77,
                             131, 264, 156, 8, 41, 193, 222, 72, 23, 24, 175, 47, 157, 139, 217, 275, 233, 58,
                             89, 126, 173, 299]]
