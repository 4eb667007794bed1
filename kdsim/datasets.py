"""Real data sets shipped as package data: handwritten digits and diabetes.

Both come from ``kdsim/_data/`` (installed with the package; see
``kdsim/_data/PROVENANCE.md`` for source, licence and checksums) and are read with
``importlib.resources``. Every load checks the file's sha256 against
``_SHA256``; a corrupted or replaced file raises ``DatasetChecksumError``.
scikit-learn is not imported here: the files were extracted from it once, by
``data/extract_from_sklearn.py``.

Preprocessing options
---------------------
``standardize=True``
    Each column of ``A`` is centred and divided by its population standard
    deviation (ddof=0), so that every column has mean 0 and standard deviation 1.
    A column whose values are all equal (three pixels of the digits are 0 in every
    image) has no scale to divide by: it is centred (becomes exactly 0) and left
    unscaled, so no division by zero and no warning occurs.
``bias=True``
    A column of ones is appended to ``A`` after any standardisation (feature name
    ``"bias"``).
``standardize_target=True`` (diabetes only)
    ``y`` is centred and divided by its population standard deviation.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from importlib import resources

import numpy as np

from . import _validate as V

__all__ = ["Dataset", "DatasetChecksumError", "available", "load", "load_diabetes", "load_digits", "train_test_split"]

#: sha256 of the package data files; must match kdsim/_data/PROVENANCE.md.
_SHA256 = {
    "digits": "caee99d03f0a40f90f3d7754d2c2eb2912d6e384c76070218a2a5dd8a04e1fc3",
    "diabetes": "5005b30578ffb3fa02438d3ee9c799d282d1d7fbf1e42a517f8912cde086782f",
}
_FILES = {"digits": "digits.npz", "diabetes": "diabetes.npz"}
#: the scikit-learn release the files were extracted from.
SKLEARN_VERSION = "1.9.1"

_SOURCES = {
    "digits": (
        "UCI ML 'Optical Recognition of Handwritten Digits' (E. Alpaydin & C. Kaynak, 1998, "
        "doi:10.24432/C50P49), test part (1,797 8x8 images, pixels 0..16, 10 classes) as "
        "distributed with scikit-learn; licence: CC BY 4.0 (UCI original), BSD-3-Clause "
        "(scikit-learn's packaged copy)"
    ),
    "diabetes": (
        "Diabetes data of B. Efron, T. Hastie, I. Johnstone & R. Tibshirani (2004), "
        "'Least Angle Regression', Annals of Statistics 32(2), 407-499; 442 patients, "
        "10 raw (unscaled) baseline variables, target = disease progression after one year, "
        "as distributed with scikit-learn; licence: BSD-3-Clause (scikit-learn's packaged copy)"
    ),
}


class DatasetChecksumError(RuntimeError):
    """A package data file does not have the sha256 recorded in ``kdsim.datasets``."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A design matrix and targets with their provenance.

    Attributes
    ----------
    A : float64 array (n, d)
        Features (after the requested preprocessing).
    y : array (n,)
        Class labels 0..n_classes-1 (int64) for classification, float64 targets
        for regression.
    name : str
    n_classes : int or None
        Number of classes; None for regression.
    feature_names : tuple of str
        One name per column of ``A`` (``"bias"`` for an appended column of ones).
    provenance : str
        Source, licence, extraction, file checksum and the preprocessing applied.
    """

    A: np.ndarray
    y: np.ndarray
    name: str
    n_classes: int | None
    feature_names: tuple
    provenance: str

    @property
    def n_samples(self) -> int:
        return int(self.A.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.A.shape[1])

    def __repr__(self) -> str:
        kind = "regression" if self.n_classes is None else f"{self.n_classes} classes"
        return (f"Dataset(name={self.name!r}, A={self.A.shape} {self.A.dtype}, "
                f"y={self.y.shape} {self.y.dtype}, {kind})")


def available() -> tuple[str, ...]:
    """Names accepted by ``load``."""
    return tuple(_FILES)


def load(name, **kwargs) -> Dataset:
    """Load a data set by name (one of ``available``); ``kwargs`` go to its loader."""
    V.choice("name", name, available())
    return _LOADERS[name](**kwargs)


def load_digits(standardize=False, bias=False) -> Dataset:
    """The 8×8 handwritten digits: A (1797, 64) float64 pixel counts 0..16, y int64 0..9.

    ``standardize``: columns to mean 0, std 1 (ddof=0); the constant pixel columns are
    centred (exactly 0) and left unscaled. ``bias``: append a column of ones.
    """
    standardize = _flag("standardize", standardize)
    bias = _flag("bias", bias)
    raw = _read("digits")
    A = raw["X"].astype(np.float64)
    y = raw["y"].astype(np.int64)
    names = tuple(str(s) for s in raw["feature_names"])
    steps = ["A = pixel counts as float64"]
    A, names = _features(A, names, standardize, bias, steps)
    n_classes = int(np.unique(y).size)
    return Dataset(A=A, y=y, name="digits", n_classes=n_classes, feature_names=names,
                   provenance=_provenance("digits", raw, steps))


def load_diabetes(standardize=False, bias=False, standardize_target=False) -> Dataset:
    """Diabetes progression: A (442, 10) raw baseline variables (float64), y (442,) float64.

    ``standardize``: columns to mean 0, std 1 (ddof=0). ``bias``: append a column of
    ones. ``standardize_target``: centre y and divide it by its std (ddof=0).
    """
    standardize = _flag("standardize", standardize)
    bias = _flag("bias", bias)
    standardize_target = _flag("standardize_target", standardize_target)
    raw = _read("diabetes")
    A = raw["X"].astype(np.float64)
    y = raw["y"].astype(np.float64)
    names = tuple(str(s) for s in raw["feature_names"])
    steps = ["A = raw (unscaled) variables"]
    A, names = _features(A, names, standardize, bias, steps)
    if standardize_target:
        y = y - y.mean()
        y = y / np.sqrt(np.mean(y * y))
        steps.append("y centred and scaled to unit std (ddof=0)")
    return Dataset(A=A, y=y, name="diabetes", n_classes=None, feature_names=names,
                   provenance=_provenance("diabetes", raw, steps))


_LOADERS = {"digits": load_digits, "diabetes": load_diabetes}


def train_test_split(name, test_fraction=0.2, seed=0, standardize=False, bias=False,
                     standardize_target=False):
    """A seeded, documented train/test split of a shipped data set: (train, test) Datasets.

    The split: ``numpy.random.default_rng(seed)`` permutes the sample indices; for
    classification (digits) the test set takes the first round(test_fraction · n_c) permuted
    samples of every class c (stratified), for regression (diabetes) the first
    round(test_fraction · n) permuted samples. Both parts keep the file's sample order.
    Preprocessing uses the **training** part only: ``standardize`` centres and scales the
    columns of both parts by the training columns' mean and population std (a column constant
    on the training part is centred and left unscaled), ``standardize_target`` (diabetes) the
    same for y; ``bias`` appends a column of ones. Each part's ``provenance`` states all of it.
    """
    V.choice("name", name, available())
    f = V.positive_float("test_fraction", test_fraction, upper=1.0)
    if not f < 1.0:
        raise ValueError(f"test_fraction must satisfy 0 < test_fraction < 1; got {test_fraction}")
    seed = V.int_in_range("seed", seed, 0)
    standardize, bias = _flag("standardize", standardize), _flag("bias", bias)
    standardize_target = _flag("standardize_target", standardize_target)
    if standardize_target and name != "diabetes":
        raise ValueError("standardize_target applies to the regression data set 'diabetes' only")
    full = load(name)
    perm = np.random.default_rng(seed).permutation(full.n_samples)
    if full.n_classes is not None:
        test = np.concatenate([perm[full.y[perm] == c][:int(round(f * np.sum(full.y == c)))]
                               for c in range(full.n_classes)])
    else:
        test = perm[:int(round(f * full.n_samples))]
    is_test = np.zeros(full.n_samples, dtype=bool)
    is_test[test] = True
    if is_test.all() or not is_test.any():
        raise ValueError(f"test_fraction={test_fraction} leaves an empty part of {name!r}")
    raw = _read(name)
    steps = [f"train/test split: seed {seed}, test_fraction {f:g}"
             + (" stratified by class" if full.n_classes is not None else "")
             + f" ({int((~is_test).sum())} train, {int(is_test.sum())} test)"]
    A_tr, A_te = full.A[~is_test], full.A[is_test]
    y_tr, y_te = full.y[~is_test], full.y[is_test]
    names = full.feature_names
    if standardize:
        A_tr, mean, scale, constant = _standardize_columns(A_tr)
        A_te = (A_te - mean) / scale
        steps.append("columns standardised by the training part's mean and std (ddof=0)"
                     + ("; columns constant on it centred, not scaled" if constant.any() else ""))
    if bias:
        A_tr = np.hstack([A_tr, np.ones((len(A_tr), 1))])
        A_te = np.hstack([A_te, np.ones((len(A_te), 1))])
        names = names + ("bias",)
        steps.append("column of ones appended (bias)")
    if standardize_target:
        mu = y_tr.mean()
        sd = np.sqrt(np.mean((y_tr - mu) ** 2))
        y_tr, y_te = (y_tr - mu) / sd, (y_te - mu) / sd
        steps.append("y centred and scaled by the training part's mean and std (ddof=0)")
    parts = []
    for part, A, y in (("train", A_tr, y_tr), ("test", A_te, y_te)):
        parts.append(Dataset(A=A, y=y, name=f"{name}-{part}", n_classes=full.n_classes, feature_names=names,
                             provenance=_provenance(name, raw, steps + [f"this is the {part} part"])))
    return tuple(parts)


# internals -----------------------------------------------------------------

def _data_file(filename):
    """The package data file ``kdsim/_data/<filename>`` (a Traversable)."""
    return resources.files("kdsim").joinpath("_data", filename)


def _read(name) -> dict:
    """The arrays of a package data file, after checking its sha256."""
    filename = _FILES[name]
    source = _data_file(filename)
    blob = source.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != _SHA256[name]:
        raise DatasetChecksumError(
            f"data file {source} is corrupted or was replaced: its sha256 is {digest}, "
            f"expected {_SHA256[name]} (kdsim/_data/PROVENANCE.md); reinstall kdsim or "
            f"regenerate the file with data/extract_from_sklearn.py")
    # Parse the very bytes that were hashed.
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


def _flag(name, value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False; got {value!r}")


def _standardize_columns(A):
    """Columns to mean 0 and population std 1; constant columns centred, not scaled.

    Returns (Z, mean, scale, constant) with Z = (A - mean) / scale. For a constant
    column the mean is taken as its common value, so the centred column is exactly
    0, and its scale is 1.
    """
    constant = np.all(A == A[:1], axis=0)
    mean = A.mean(axis=0)
    mean[constant] = A[0, constant]
    Z = A - mean
    scale = np.sqrt(np.mean(Z * Z, axis=0))
    scale[constant] = 1.0
    return Z / scale, mean, scale, constant


def _features(A, names, standardize, bias, steps):
    if standardize:
        A, _, _, constant = _standardize_columns(A)
        note = "columns standardised to mean 0, std 1 (ddof=0)"
        if constant.any():
            const_names = ", ".join(n for n, c in zip(names, constant) if c)
            note += f"; constant columns centred and left unscaled: {const_names}"
        steps.append(note)
    if bias:
        A = np.hstack([A, np.ones((A.shape[0], 1))])
        names = names + ("bias",)
        steps.append("column of ones appended (bias)")
    return A, names


def _provenance(name, raw, steps) -> str:
    version = str(raw["sklearn_version"]) if "sklearn_version" in raw else SKLEARN_VERSION
    return (f"{name}: {_SOURCES[name]}. Extracted from scikit-learn {version}; file "
            f"kdsim/_data/{_FILES[name]} sha256 {_SHA256[name]} (see kdsim/_data/PROVENANCE.md). "
            f"Preprocessing: {'; '.join(steps)}.")
