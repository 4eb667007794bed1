"""Extract the digits and diabetes data sets from an installed scikit-learn.

One-time tool: kdsim itself never imports scikit-learn. This script reads the
two small data sets that ship inside the scikit-learn wheel (no network access)
and writes compact, byte-reproducible ``.npz`` files into ``kdsim/_data/``
together with ``kdsim/_data/PROVENANCE.md``:

- ``digits.npz``:   X uint8 (1797, 64) pixel counts 0..16, y uint8 (1797,)
  class labels 0..9, feature_names <U (64,) ``pixel_<row>_<col>``,
  sklearn_version <U ().
- ``diabetes.npz``: X float64 (442, 10) RAW (unscaled) baseline variables,
  y float64 (442,) disease progression after one year, feature_names <U (10,),
  sklearn_version <U ().

The archives are written by ``np.savez_compressed`` and then re-packed with a
fixed member timestamp (1980-01-01) and a fixed member order, so the same scikit-learn data and zlib produce the
same bytes; the content digests (dtype, shape and array bytes) printed beside
the file sha256 are independent of zip/zlib details.

Usage (from the repository root, in an environment with scikit-learn)::

    python data/extract_from_sklearn.py            # write the files
    python data/extract_from_sklearn.py --check    # regenerate in memory, compare

After writing, copy the printed file sha256 values into ``_SHA256`` in
``kdsim/datasets.py`` if they changed (the script says so).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "kdsim" / "_data"

# Fixed zip member timestamp: the earliest date a zip header can hold.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez_compressed`` output, re-packed with deterministic bytes.

    ``np.savez_compressed`` stamps each zip member with the current time, so two
    runs give different files (and different sha256). The archive it writes is
    re-packed here with the same member names and contents, in sorted order, each
    stamped ``_ZIP_EPOCH``; ``np.load`` reads it exactly as before.
    """
    for key, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"array {key!r} has dtype object; it would need pickle to load")
    raw = io.BytesIO()
    np.savez_compressed(raw, **arrays)
    raw.seek(0)
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, \
            zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(src.namelist()):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, src.read(name))
    return out.getvalue()


def _digest(arr: np.ndarray) -> str:
    """Content digest: sha256 of (dtype, shape) and the C-order bytes, first 16 hex digits."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256(str((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def extract() -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    """Read both sets from scikit-learn; return its version and the arrays to write."""
    import sklearn
    from sklearn.datasets import load_diabetes, load_digits

    version = sklearn.__version__

    digits = load_digits()
    Xd = np.asarray(digits.data)
    yd = np.asarray(digits.target)
    if Xd.shape != (1797, 64) or yd.shape != (1797,):
        raise RuntimeError(f"unexpected digits shapes {Xd.shape}, {yd.shape}")
    if not (np.all(Xd == np.round(Xd)) and Xd.min() >= 0 and Xd.max() <= 16):
        raise RuntimeError("digits pixels are not integers in 0..16")
    if set(np.unique(yd).tolist()) != set(range(10)):
        raise RuntimeError("digits labels are not exactly 0..9")

    diabetes = load_diabetes(scaled=False)
    Xb = np.asarray(diabetes.data, dtype=np.float64)
    yb = np.asarray(diabetes.target, dtype=np.float64)
    if Xb.shape != (442, 10) or yb.shape != (442,):
        raise RuntimeError(f"unexpected diabetes shapes {Xb.shape}, {yb.shape}")
    if not (np.all(np.isfinite(Xb)) and np.all(np.isfinite(yb))):
        raise RuntimeError("diabetes contains non-finite values")

    sets = {
        "digits": {
            "X": Xd.astype(np.uint8),
            "y": yd.astype(np.uint8),
            "feature_names": np.array(list(digits.feature_names), dtype=str),
            "sklearn_version": np.array(version),
        },
        "diabetes": {
            "X": Xb,
            "y": yb,
            "feature_names": np.array(list(diabetes.feature_names), dtype=str),
            "sklearn_version": np.array(version),
        },
    }
    # The uint8 cast must be lossless.
    if not np.array_equal(sets["digits"]["X"].astype(np.float64), Xd):
        raise RuntimeError("digits pixels changed in the uint8 cast")
    return version, sets


def _source_files() -> list[tuple[str, str]]:
    """sha256 of the scikit-learn files the sets are read from (for the record)."""
    from sklearn.datasets import data as data_pkg

    base = Path(data_pkg.__file__).resolve().parent
    out = []
    for name in ("digits.csv.gz", "diabetes_data_raw.csv.gz", "diabetes_target.csv.gz"):
        path = base / name
        out.append((name, hashlib.sha256(path.read_bytes()).hexdigest()))
    return out


def provenance_md(version: str, sets: dict, sha: dict[str, str], sources) -> str:
    """The text of kdsim/_data/PROVENANCE.md."""
    d, b = sets["digits"], sets["diabetes"]
    counts = np.bincount(d["y"], minlength=10).tolist()
    const = [f"`{n}` = {d['X'][0, j]}" for j, n in enumerate(d["feature_names"].tolist())
             if np.all(d["X"][:, j] == d["X"][0, j])]
    src = "\n".join(f"| `sklearn/datasets/data/{n}` | `{h}` |" for n, h in sources)
    return f"""\
# Package data: provenance

Authoritative copies of the real data sets used by kdsim (`kdsim.datasets`).
They are package data, installed with kdsim by `pip install .`. Both files were
extracted from **scikit-learn {version}** (the files that ship inside its wheel,
no network access) by `data/extract_from_sklearn.py`; kdsim never imports
scikit-learn. `kdsim.datasets` checks the sha256 below every time it loads a file.

## Files

| file | sha256 |
|---|---|
| `digits.npz` | `{sha["digits"]}` |
| `diabetes.npz` | `{sha["diabetes"]}` |

Both are `.npz` archives (zip, deflate) readable with `np.load(path, allow_pickle=False)`,
written with a fixed member timestamp so that a rerun of the script with the same
scikit-learn data and zlib gives the same bytes. Content digests (first 16 hex digits
of sha256 over `(dtype.str, shape)` and the C-order bytes, as `kdsim._validate.array_digest`)
do not depend on zip or zlib and identify the arrays themselves.

## digits.npz — optical recognition of handwritten digits (8×8)

| array | dtype | shape | content digest |
|---|---|---|---|
| `X` | uint8 | {d["X"].shape} | `{_digest(d["X"])}` |
| `y` | uint8 | {d["y"].shape} | `{_digest(d["y"])}` |
| `feature_names` | {d["feature_names"].dtype.str} | {d["feature_names"].shape} | `{_digest(d["feature_names"])}` |
| `sklearn_version` | {d["sklearn_version"].dtype.str} | () | — |

- `X`: 8×8 images flattened row-major; each pixel is the count of "on" pixels in a 4×4
  block of a 32×32 bitmap, an integer in 0..16. {len(const)} pixel columns are constant
  over all samples ({", ".join(const)}). `feature_names` are `pixel_<row>_<col>`.
- `y`: the digit, 0..9. Class counts 0..9: {counts}.
- **Original source**: UCI Machine Learning Repository, "Optical Recognition of Handwritten
  Digits", E. Alpaydin and C. Kaynak (1998), https://doi.org/10.24432/C50P49
  (https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits).
  This is the **test part** (`optdigits.tes`, 1,797 samples written by 13 people) as
  distributed with scikit-learn (`sklearn.datasets.load_digits`).
  Reference: E. Alpaydin, C. Kaynak (1998), Cascading Classifiers, Kybernetika 34(4).
- **Licence**: the original UCI data set is licensed under Creative Commons Attribution 4.0
  International (CC BY 4.0; attribution as above). The packaged copy it was taken from is part
  of scikit-learn, distributed under the BSD-3-Clause licence (© the scikit-learn developers).

## diabetes.npz — diabetes progression (regression)

| array | dtype | shape | content digest |
|---|---|---|---|
| `X` | float64 | {b["X"].shape} | `{_digest(b["X"])}` |
| `y` | float64 | {b["y"].shape} | `{_digest(b["y"])}` |
| `feature_names` | {b["feature_names"].dtype.str} | {b["feature_names"].shape} | `{_digest(b["feature_names"])}` |
| `sklearn_version` | {b["sklearn_version"].dtype.str} | () | — |

- `X`: the RAW, unscaled baseline variables of 442 patients (`load_diabetes(scaled=False)`),
  columns {", ".join(b["feature_names"].tolist())}: age (years), sex (coded 1/2), body mass
  index, average blood pressure, and six blood serum measurements (s1 tc, s2 ldl, s3 hdl,
  s4 tch, s5 ltg, s6 glu). Ranges per column: min {np.round(b["X"].min(0), 4).tolist()},
  max {np.round(b["X"].max(0), 4).tolist()}.
- `y`: a quantitative measure of disease progression one year after baseline, integer-valued
  in [{b["y"].min():g}, {b["y"].max():g}], stored as float64.
- **Original source**: B. Efron, T. Hastie, I. Johnstone and R. Tibshirani (2004),
  "Least Angle Regression", Annals of Statistics 32(2), 407–499
  (data: https://www4.stat.ncsu.edu/~boos/var.select/diabetes.html), as distributed with
  scikit-learn (`sklearn.datasets.load_diabetes`).
- **Licence**: the packaged copy is part of scikit-learn, distributed under the BSD-3-Clause
  licence (© the scikit-learn developers). The original data page (above) states no licence
  of its own; cite Efron et al. (2004) when using the data.

## scikit-learn source files read

| file in the scikit-learn {version} wheel | sha256 |
|---|---|
{src}

## Regenerating

In an environment with scikit-learn installed, from the repository root:

    python data/extract_from_sklearn.py           # rewrite the files and this document
    python data/extract_from_sklearn.py --check   # compare without writing

If the sha256 values change (a different scikit-learn data release or zlib), update
`_SHA256` in `kdsim/datasets.py`; the script prints the values to use.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true",
                        help="regenerate in memory and compare with the files on disk; write nothing")
    parser.add_argument("--out", type=Path, default=OUT_DIR,
                        help=f"output folder (default {OUT_DIR})")
    args = parser.parse_args(argv)

    version, sets = extract()
    blobs = {name: _npz_bytes(arrays) for name, arrays in sets.items()}
    sha = {name: hashlib.sha256(blob).hexdigest() for name, blob in blobs.items()}
    doc = provenance_md(version, sets, sha, _source_files())

    status = 0
    if args.check:
        for name, blob in blobs.items():
            path = args.out / f"{name}.npz"
            on_disk = path.read_bytes() if path.exists() else b""
            same = on_disk == blob
            print(f"{path}: {'identical' if same else 'DIFFERS'} (sha256 {sha[name]})")
            status |= not same
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, blob in blobs.items():
            path = args.out / f"{name}.npz"
            path.write_bytes(blob)
            # Round trip: what np.load reads back must equal what was extracted.
            with np.load(path, allow_pickle=False) as z:
                for key, arr in sets[name].items():
                    if not (z[key].dtype == arr.dtype and np.array_equal(z[key], arr)):
                        raise RuntimeError(f"{path}: array {key!r} did not round-trip")
            print(f"wrote {path}  sha256 {sha[name]}")
        (args.out / "PROVENANCE.md").write_text(doc, encoding="utf-8")
        print(f"wrote {args.out / 'PROVENANCE.md'}")
    print(f"scikit-learn {version}")

    # Compare with the checksums kdsim verifies on load.
    sys.path.insert(0, str(ROOT))
    try:
        from kdsim.datasets import _SHA256
    except ImportError:
        _SHA256 = {}
    for name, value in sha.items():
        if _SHA256.get(name) != value:
            print(f"note: _SHA256[{name!r}] in kdsim/datasets.py is {_SHA256.get(name)!r}; "
                  f"set it to {value!r}")
            status = 1 if args.check else status
    return int(status)


if __name__ == "__main__":
    raise SystemExit(main())
