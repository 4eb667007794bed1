"""Argument checks shared by every public function.

Every error names the parameter and the valid range, so that a user who passes
``step=-1`` reads ``step must be a finite number > 0; got -1`` and nothing else.
"""
from __future__ import annotations

import numbers

import numpy as np


def as_float_array(name, value, *, ndim=None, shape=None, allow_empty=False):
    """Return ``value`` as a finite float64 array, checking ndim and shape (complex values are refused)."""
    if np.iscomplexobj(value):
        raise TypeError(f"{name} must be an array of real numbers; got complex values")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of real numbers; got {type(value).__name__}") from exc
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array; got shape {arr.shape}")
    if shape is not None:
        want = tuple(shape)
        if arr.shape != want:
            raise ValueError(f"{name} must have shape {want}; got {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite (no NaN or inf); found {bad} non-finite entries")
    return arr


def as_vector(name, value, size):
    """A finite 1-d float vector of the given length."""
    arr = as_float_array(name, value)
    if arr.ndim != 1 or arr.shape[0] != size:
        raise ValueError(f"{name} must be a vector of length {size}; got shape {arr.shape}")
    return arr


def positive_float(name, value, *, upper=None):
    """A finite real number > 0 (and <= upper when given)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number > 0; got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v <= 0 or (upper is not None and v > upper):
        rng = f"0 < {name} <= {upper}" if upper is not None else f"{name} > 0"
        raise ValueError(f"{name} must be a finite number with {rng}; got {value!r}")
    return v


def nonnegative_float(name, value):
    """A finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0; got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return v


def finite_float(name, value):
    """Any finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite real number; got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return v


def int_in_range(name, value, lo, hi=None):
    """An integer with lo <= value <= hi (hi=None: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f"{lo} <= {name} <= {hi}" if hi is not None else f"{name} >= {lo}"
        raise ValueError(f"{name} must satisfy {rng}; got {v}")
    return v


def choice(name, value, options):
    """One of a fixed set of strings."""
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; valid values: {', '.join(map(repr, options))}")
    return value


def lambda_grid(lams):
    """KD weights: a non-empty 1-d array of finite numbers."""
    arr = np.atleast_1d(np.asarray(lams, dtype=np.float64)) if not isinstance(lams, str) else None
    if arr is None or arr.ndim != 1:
        raise ValueError(f"lams must be a number or a 1-d sequence of numbers; got {lams!r}")
    if arr.size == 0:
        raise ValueError("lams must contain at least one KD weight")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"lams must be finite (any real λ, usually in [0, 1]); got {arr.tolist()}")
    return arr


def index_array(name, idx, n):
    """Sample indices: a 1-d integer array with entries in [0, n)."""
    arr = np.asarray(idx)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array of sample indices; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must contain at least one sample index")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers in [0, {n}); got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"{name} entries must lie in [0, {n}); got range [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64, copy=False)


def array_digest(arr):
    """Short sha256 of an array's bytes (dtype and shape included)."""
    import hashlib
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256(str((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def positive_int_arg(text):
    """argparse type: an integer >= 1, with a one-line message otherwise."""
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1); got {value}")
    return value
