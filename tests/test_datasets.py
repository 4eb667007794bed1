"""kdsim.datasets: package data, checksums, preprocessing, and no scikit-learn at run time."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import kdsim.datasets as ds

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "kdsim" / "_data"

# Digits pixels that are 0 in every one of the 1,797 images.
DIGITS_CONSTANT = ("pixel_0_0", "pixel_4_0", "pixel_4_7")


# shapes, dtypes, classes ----------------------------------------------------

def test_digits_shapes_dtypes_and_values():
    d = ds.load_digits()
    assert isinstance(d, ds.Dataset)
    assert d.name == "digits"
    assert d.A.shape == (1797, 64) and d.A.dtype == np.float64
    assert d.y.shape == (1797,) and d.y.dtype == np.int64
    assert d.n_samples == 1797 and d.n_features == 64
    assert np.all(d.A == np.round(d.A)) and d.A.min() == 0 and d.A.max() == 16
    assert d.feature_names[:2] == ("pixel_0_0", "pixel_0_1") and len(d.feature_names) == 64
    assert "Alpaydin" in d.provenance and d.A.flags.c_contiguous


def test_digits_class_counts():
    d = ds.load_digits()
    assert d.n_classes == 10
    counts = np.bincount(d.y, minlength=10)
    assert counts.shape == (10,) and counts.sum() == 1797
    assert counts.min() >= 174 and counts.max() <= 183
    # the exact counts of the UCI test part, as recorded in PROVENANCE.md
    assert counts.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_diabetes_shapes_dtypes_and_raw_values():
    b = ds.load_diabetes()
    assert b.name == "diabetes" and b.n_classes is None
    assert b.A.shape == (442, 10) and b.A.dtype == np.float64
    assert b.y.shape == (442,) and b.y.dtype == np.float64
    assert b.feature_names == ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
    # raw, not scikit-learn's scaled version: age in years, sex coded 1/2, target 25..346
    assert b.A[:, 0].min() == 19 and b.A[:, 0].max() == 79
    assert set(np.unique(b.A[:, 1]).tolist()) == {1.0, 2.0}
    assert b.y.min() == 25 and b.y.max() == 346 and np.all(b.y == np.round(b.y))
    assert b.A[0].tolist() == [59.0, 2.0, 32.1, 101.0, 157.0, 93.2, 38.0, 4.0, 4.8598, 87.0]
    assert "Least Angle Regression" in b.provenance


def test_loads_return_fresh_arrays():
    d1, d2 = ds.load_digits(), ds.load_digits()
    d1.A[0, 0] = -1.0
    assert d2.A[0, 0] == 0.0 and ds.load_digits().A[0, 0] == 0.0


def test_dataset_is_frozen():
    d = ds.load_diabetes()
    with pytest.raises(AttributeError):
        d.name = "other"


# standardisation --------------------------------------------------------------

def test_digits_standardize_properties():
    raw = ds.load_digits()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or invalid-value warnings
        z = ds.load_digits(standardize=True)
    assert z.A.dtype == np.float64 and np.all(np.isfinite(z.A))
    const = np.array([n in DIGITS_CONSTANT for n in raw.feature_names])
    assert const.sum() == 3
    assert np.all(raw.A[:, const] == raw.A[0, const])
    assert np.all(np.ptp(raw.A[:, ~const], axis=0) > 0)
    np.testing.assert_allclose(z.A.mean(axis=0), 0.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(z.A[:, ~const].std(axis=0), 1.0, rtol=0, atol=1e-12)
    # constant columns: centred (their common value, here 0, subtracted) and not scaled
    np.testing.assert_array_equal(z.A[:, const], raw.A[:, const] - raw.A[0, const])
    assert np.all(z.A[:, const] == 0.0)
    # the transform is affine per column: correlations are unchanged
    i, j = raw.feature_names.index("pixel_2_3"), raw.feature_names.index("pixel_5_4")
    r_raw = np.corrcoef(raw.A[:, i], raw.A[:, j])[0, 1]
    r_z = np.corrcoef(z.A[:, i], z.A[:, j])[0, 1]
    assert abs(r_raw - r_z) < 1e-12
    np.testing.assert_array_equal(z.y, raw.y)
    assert "left unscaled: pixel_0_0, pixel_4_0, pixel_4_7" in z.provenance


def test_diabetes_standardize_properties():
    raw = ds.load_diabetes()
    z = ds.load_diabetes(standardize=True)
    np.testing.assert_allclose(z.A.mean(axis=0), 0.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(z.A.std(axis=0), 1.0, rtol=0, atol=1e-12)
    expected = (raw.A - raw.A.mean(0)) / raw.A.std(0)
    np.testing.assert_allclose(z.A, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(z.y, raw.y)  # target untouched unless asked

    t = ds.load_diabetes(standardize_target=True)
    np.testing.assert_array_equal(t.A, raw.A)
    assert abs(t.y.mean()) < 1e-12 and abs(t.y.std() - 1.0) < 1e-12
    np.testing.assert_allclose(t.y * raw.y.std() + raw.y.mean(), raw.y, rtol=1e-12)


# bias column ----------------------------------------------------------------

@pytest.mark.parametrize("name, d", [("digits", 64), ("diabetes", 10)])
@pytest.mark.parametrize("standardize", [False, True])
def test_bias_column(name, d, standardize):
    plain = ds.load(name, standardize=standardize)
    b = ds.load(name, standardize=standardize, bias=True)
    assert b.A.shape == (plain.A.shape[0], d + 1) and b.A.dtype == np.float64
    assert np.all(b.A[:, -1] == 1.0)
    np.testing.assert_array_equal(b.A[:, :-1], plain.A)  # the bias is appended after standardising
    assert b.feature_names == plain.feature_names + ("bias",)
    assert "bias" in b.provenance


# dispatch and argument errors ---------------------------------------------------

def test_available_and_load_dispatch():
    assert ds.available() == ("digits", "diabetes")
    assert ds.load("digits").A.shape == (1797, 64)
    assert ds.load("diabetes", standardize_target=True).y.shape == (442,)


def test_unknown_name_names_parameter_and_valid_values():
    with pytest.raises(ValueError) as exc:
        ds.load("mnist")
    msg = str(exc.value)
    assert "name" in msg and "'mnist'" in msg and "'digits'" in msg and "'diabetes'" in msg


def test_non_bool_flags_rejected():
    with pytest.raises(TypeError, match="standardize must be True or False"):
        ds.load_digits(standardize="yes")
    with pytest.raises(TypeError, match="standardize_target must be True or False"):
        ds.load_diabetes(standardize_target=1)
    with pytest.raises(TypeError, match="standardize_target"):
        ds.load("digits", standardize_target=True)  # a regression-only option


# checksums ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["digits", "diabetes"])
def test_recorded_checksums_match_files_and_provenance(name):
    path = DATA / f"{name}.npz"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == ds._SHA256[name]
    for doc in (DATA / "PROVENANCE.md", REPO / "data" / "PROVENANCE.md"):
        assert digest in doc.read_text(encoding="utf-8"), doc


@pytest.mark.parametrize("name, loader", [("digits", ds.load_digits), ("diabetes", ds.load_diabetes)])
def test_corrupted_file_raises_checksum_error(tmp_path, monkeypatch, name, loader):
    filename = f"{name}.npz"
    bad = tmp_path / filename
    shutil.copyfile(DATA / filename, bad)
    blob = bytearray(bad.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # flip one bit in the middle of the archive
    bad.write_bytes(bytes(blob))
    monkeypatch.setattr(ds, "_data_file", lambda fn: tmp_path / fn)

    with pytest.raises(ds.DatasetChecksumError) as exc:
        loader()
    msg = str(exc.value)
    assert str(bad) in msg and "corrupted" in msg
    assert ds._SHA256[name] in msg and hashlib.sha256(bytes(blob)).hexdigest() in msg

    # the untouched copy loads through the same hook
    shutil.copyfile(DATA / filename, bad)
    assert loader().A.shape[0] in (1797, 442)


# no scikit-learn at run time --------------------------------------------------

def test_import_does_not_import_sklearn():
    code = ("import kdsim.datasets, sys; kdsim.datasets.load_digits(); "
            "kdsim.datasets.load_diabetes(standardize=True); assert 'sklearn' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(REPO),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_module_source_does_not_mention_sklearn_imports():
    import ast
    tree = ast.parse(Path(ds.__file__).read_text(encoding="utf-8"))
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module.split(".")[0])
    assert "sklearn" not in mods
