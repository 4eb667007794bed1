"""The results store of a sweep: a folder holding a parquet dataset, one part per cell.

Layout of a results folder ``OUT``::

    OUT/sweep.json                  manifest: the normalised spec, its TOML source, the cell count
    OUT/sweep.lock                  advisory lock (flock) held by the one ``kdsim sweep`` writing OUT
    OUT/parts/<cell hash>.parquet   one part per finished cell (one row per (λ, record))
    OUT/corrupt/                    parts that failed validation, moved aside before recomputing

The manifest holds the spec, not the cells: they are re-expanded from it (``spec.Cells``)
with the kdsim version and store schema it records, and a few recorded cell hashes check
that the expansion still gives the same cells. Manifests of the earlier layout, which list
every cell, are still read.

``OUT/parts`` is a plain parquet dataset (``pandas.read_parquet(OUT / "parts")`` reads it;
temporary files start with a dot and are ignored by dataset readers). Every part carries,
in its parquet key-value metadata under ``kdsim.sweep``, the cell's full configuration,
its hash (``kdsim.results.config_hash``; also the file name), the kdsim version, the
normalised spec with its TOML source, and the expected row count.

Writes are atomic: the part is written to a temporary name in the same folder, flushed
and fsync'ed, then renamed over the final name with ``os.replace`` (and the folder is
fsync'ed), so a crash leaves either the old state or the complete part, never half a file.

A part is *valid* when it opens as parquet, its metadata names the expected hash and
version, ``config_hash(config)`` reproduces that hash, its row count equals the recorded
one and every row carries the cell's hash. Anything else (a truncated or unreadable file,
a wrong hash, a wrong row count) is reported, moved to ``OUT/corrupt`` and recomputed by
the next run; ``load`` refuses to read it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None

import pandas as pd

from .._version import __version__
from ..results import config_hash
from .registry import SweepUsageError
from .spec import STORE_SCHEMA, Cells, Sweep, load_spec, make_cell, problem_params, training_columns

META_KEY = b"kdsim.sweep"
MANIFEST = "sweep.json"
LOCK = "sweep.lock"
#: cells whose hashes the manifest records, to check that re-expanding its spec gives the same cells
MANIFEST_SAMPLES = 3
#: errors that mean "this folder cannot be written" rather than a fault of kdsim
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


class StoreError(RuntimeError):
    """A results folder cannot be read as asked (corrupt parts, an unreadable manifest)."""


class StoreLocked(SweepUsageError):
    """Another process holds the results folder's lock (``holder``: its pid, or None if unknown)."""

    def __init__(self, message, holder=None):
        super().__init__(message)
        self.holder = holder


class StoreWriteError(OSError):
    """The results folder cannot be written (read-only, permissions, disk full); finished parts are kept."""


class StoreWarning(UserWarning):
    """Some cells of a sweep have no part yet (the sweep is incomplete)."""


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SweepUsageError("the sweep store needs pyarrow: pip install 'kdsim[dask]' (or pip install pyarrow)") from None
    return pa, pq


@dataclass(frozen=True)
class PartStatus:
    """Outcome of validating one part: state is "ok", "missing" or "corrupt" (with a reason)."""

    state: str
    reason: str = ""
    frame: pd.DataFrame | None = None

    @property
    def ok(self):
        return self.state == "ok"


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Create ``path`` atomically: ``write(fh)`` fills a temporary file in the same folder,
    which is flushed, fsynced and renamed over ``path`` (the folder is fsynced too)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (see ``atomic_write``)."""
    atomic_write(path, lambda fh: fh.write(data))


class Store:
    """A results folder (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)
        self.parts = self.root / "parts"
        self.corrupt_dir = self.root / "corrupt"

    # ----------------------------------------------------------- manifest
    def prepare(self, sweep):
        """Create the folders and write the manifest (when it changed)."""
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SweepUsageError(f"results folder {str(self.root)!r} cannot be created ({exc.strerror or exc})") from None
        cells = sweep.cells
        n = len(cells)
        samples = sorted({*range(min(MANIFEST_SAMPLES, n)), n - 1}) if n else []
        manifest = {
            "kdsim_version": getattr(cells, "version", __version__),
            "store_schema": getattr(cells, "schema", STORE_SCHEMA), "name": sweep.name, "sweep_hash": sweep.hash, "spec": sweep.spec, "source": sweep.source,
            "spec_path": sweep.path, "n_cells": n, "axes": sweep.axes,
            "sample_cells": [{"index": k, "hash": cells[k].hash} for k in samples],
        }
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        path = self.root / MANIFEST
        try:
            if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
                return
        except OSError:
            pass
        with self.writing("the manifest"):
            atomic_write_bytes(path, data)

    def manifest(self):
        path = self.root / MANIFEST
        if not path.is_file():
            raise SweepUsageError(f"{str(self.root)!r} has no {MANIFEST}: not a kdsim sweep results folder "
                                  "(run `kdsim sweep SPEC --out DIR` first)")
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path} is unreadable ({exc}); re-run the sweep to rewrite it") from None

    def sweep(self):
        """The Sweep recorded in the manifest: its cells re-expanded from the recorded spec, with the
        kdsim version and schema that wrote it (or, in an old manifest, the listed cells)."""
        m = self.manifest()
        where = self.root / MANIFEST
        if "cells" in m:                                   # old layout: every cell listed
            cells = [make_cell(c["index"], c["config"], c["label"]) for c in m["cells"]]
            bad = [c for c, rec in zip(cells, m["cells"]) if c.hash != rec["hash"]]
            if bad:
                raise StoreError(f"{where}: cell {bad[0].index} does not hash to its recorded hash "
                                 "(edited or written by another kdsim version); re-run the sweep")
            return Sweep(name=m["name"], spec=m["spec"], cells=cells, axes={}, source=m.get("source", ""),
                         path=m.get("spec_path"))
        needed = ("name", "spec", "n_cells", "kdsim_version", "store_schema", "sample_cells")
        missing = [k for k in needed if k not in m]
        if missing:
            raise StoreError(f"{where} lacks {', '.join(missing)} (not written by kdsim, or edited); re-run the sweep")
        try:
            cells = Cells(m["spec"], version=m["kdsim_version"], schema=m["store_schema"])
            same = len(cells) == m["n_cells"] and all(cells[s["index"]].hash == s["hash"] for s in m["sample_cells"])
        except (KeyError, TypeError, ValueError, IndexError):
            same = False
        if not same and m["kdsim_version"] != __version__:
            raise StoreError(f"{where} was written by kdsim {m['kdsim_version']}, whose cells this kdsim "
                             f"({__version__}) does not rebuild identically; read it with that version, "
                             "or re-run the sweep")
        if not same:
            raise StoreError(f"{where}: its spec does not rebuild identically the cells it records (edited?); "
                             "re-run the sweep to rewrite it")
        return Sweep(name=m["name"], spec=m["spec"], cells=cells, axes=cells.axes, source=m.get("source", ""),
                     path=m.get("spec_path"))

    # ------------------------------------------------------ lock, writes
    def writable(self):
        """True unless the folder (or its parts folder) exists and cannot be written."""
        return all(os.access(d, os.W_OK) for d in (self.root, self.parts) if d.exists())

    @contextlib.contextmanager
    def lock(self):
        """Hold the folder's advisory lock (flock on OUT/sweep.lock) while a sweep writes it.

        Yields True while held; yields False without locking when the folder exists but is
        read-only (nothing can be written, so there is nothing to guard). Raises StoreLocked,
        naming the holder's pid, when another process holds it. The kernel drops the lock when
        its holder exits or is killed.
        """
        if self.root.is_dir() and not self.writable():
            yield False
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno not in READ_ONLY_ERRNOS or not self.root.is_dir():
                raise SweepUsageError(f"results folder {str(self.root)!r} cannot be created "
                                      f"({exc.strerror or exc})") from None
            fd = None                                      # e.g. a lock file left read-only
        if fd is None:
            yield False
            return
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_pid(fd)
                    raise StoreLocked(f"results folder {str(self.root)!r} is being written by another kdsim sweep "
                                      f"(pid {holder if holder is not None else 'unknown'}); wait for it to finish "
                                      "or give another --out", holder) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield True
        finally:
            os.close(fd)                                   # closing releases the flock

    @contextlib.contextmanager
    def writing(self, what):
        """Turn an OSError while writing ``what`` into a one-line StoreWriteError."""
        try:
            yield
        except OSError as exc:
            if isinstance(exc, StoreWriteError):
                raise
            raise StoreWriteError(f"cannot write {what} in results folder {str(self.root)!r} "
                                  f"({exc.strerror or exc}); finished parts are kept: make the folder writable "
                                  "(or free space) and re-run the same command to resume") from None

    # -------------------------------------------------------------- parts
    def part_path(self, cell_hash):
        return self.parts / f"{cell_hash}.parquet"

    def part_hashes(self):
        return sorted(self._part_names())

    def count_parts(self):
        """Number of part files (streamed: no list of names is built)."""
        return sum(1 for _ in self._part_names())

    def _part_names(self):
        try:
            with os.scandir(self.parts) as entries:
                for e in entries:
                    if e.name.endswith(".parquet") and not e.name.startswith("."):
                        yield e.name[: -len(".parquet")]
        except (FileNotFoundError, NotADirectoryError):
            return

    def write_part(self, cell, frame, info, sweep):
        """Write one cell's frame with its metadata, atomically; return the path."""
        pa, pq = _pyarrow()
        meta = {
            "config_hash": cell.hash, "config": cell.config, "kdsim_version": __version__,
            "store_schema": STORE_SCHEMA, "n_rows": int(len(frame)),
            "rows_per_lambda": [int(r) for r in info["rows_per_lambda"]],
            "cell_index": cell.index, "cell_label": cell.label, "sweep_name": sweep.name,
            "spec": sweep.spec, "spec_source": sweep.source,
            "info": {k: v for k, v in info.items() if k not in ("rows_per_lambda",)},
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if int(sum(meta["rows_per_lambda"])) != meta["n_rows"]:
            raise StoreError(f"cell {cell.hash}: rows per λ {meta['rows_per_lambda']} do not add up to {meta['n_rows']}")
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()})
        path = self.part_path(cell.hash)
        with self.writing(f"part {path.name}"):
            atomic_write(path, lambda fh: pq.write_table(table, fh, **_checksum_write_kw(pq)))
        return path

    def check_part(self, cell, read=True):
        """Validate the part of ``cell``; with ``read`` also decode it (returned in ``frame``)."""
        path = self.part_path(cell.hash)
        if not path.exists():
            return PartStatus("missing")
        pa, pq = _pyarrow()
        try:
            pf = pq.ParquetFile(path, **_checksum_read_kw(pq.ParquetFile))
            raw = (pf.schema_arrow.metadata or {}).get(META_KEY)
        except (pa.ArrowException, OSError, ValueError) as exc:
            return PartStatus("corrupt", f"unreadable parquet ({type(exc).__name__}: {exc})")
        if raw is None:
            return PartStatus("corrupt", "no kdsim metadata in the parquet footer")
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            return PartStatus("corrupt", f"kdsim metadata is not valid JSON ({exc})")
        recorded = meta.get("config_hash")
        if recorded != cell.hash:
            return PartStatus("corrupt", f"metadata hash {recorded!r} differs from the cell's hash {cell.hash!r}")
        if config_hash(meta.get("config")) != cell.hash:
            return PartStatus("corrupt", "the stored configuration does not hash to the file's hash")
        want_version = cell.config.get("kdsim_version")
        want_schema = cell.config.get("store_schema")
        if meta.get("kdsim_version") != want_version or meta.get("store_schema") != want_schema:
            return PartStatus("corrupt", f"metadata says kdsim {meta.get('kdsim_version')} (schema "
                                         f"{meta.get('store_schema')}), the cell is kdsim {want_version} (schema {want_schema})")
        rows = meta.get("rows_per_lambda") or []
        n_rows = meta.get("n_rows")
        if (len(rows) != cell.n_lams or sum(rows) != n_rows or any(r < 1 or r > cell.n_records for r in rows)
                or pf.metadata.num_rows != n_rows):
            return PartStatus("corrupt", f"wrong row count: the file has {pf.metadata.num_rows} rows, its metadata "
                                         f"records {n_rows} ({rows} per λ) for {cell.n_lams} λ × ≤ {cell.n_records} records")
        if not read:
            return PartStatus("ok")
        try:
            frame = pf.read().to_pandas()
        except (pa.ArrowException, OSError, ValueError) as exc:
            return PartStatus("corrupt", f"unreadable data pages ({type(exc).__name__}: {exc})")
        if len(frame) != n_rows:
            return PartStatus("corrupt", f"wrong row count: decoded {len(frame)} rows, metadata records {n_rows}")
        if "cell_hash" not in frame or (frame["cell_hash"] != cell.hash).any():
            return PartStatus("corrupt", "rows carry another cell's hash")
        counts = frame.groupby("lam", sort=False).size().reindex(cell.config["lams"]).tolist()
        if counts != rows or frame[["lam", "step"]].duplicated().any():
            return PartStatus("corrupt", f"rows per λ {counts} differ from the recorded {rows} (or repeat a record)")
        return PartStatus("ok", frame=frame)

    def quarantine(self, cell_hash, reason):
        """Move a failing part aside to OUT/corrupt (with the reason beside it); return the new path."""
        src = self.part_path(cell_hash)
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{uuid.uuid4().hex[:6]}"
        dst = self.corrupt_dir / f"{cell_hash}.{stamp}.parquet"
        with self.writing(f"{self.corrupt_dir.name}/"):
            self.corrupt_dir.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            dst.with_suffix(".reason.txt").write_text(reason + "\n")
        _fsync_dir(self.parts)
        return dst


def _read_pid(fd, wait=0.5):
    """The pid a lock holder wrote in the lock file; a holder that has only just taken the lock
    may not have written it yet, so look again for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return None
        if text.isdigit():
            return int(text)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def _checksum_write_kw(pq):
    import inspect
    return {"write_page_checksum": True} if "write_page_checksum" in inspect.signature(pq.write_table).parameters else {}


def _checksum_read_kw(reader):
    """Ask ``reader`` (pyarrow.parquet.ParquetFile) to verify page checksums where it can (pyarrow >= 14)."""
    import inspect
    return ({"page_checksum_verification": True}
            if "page_checksum_verification" in inspect.signature(reader).parameters else {})


# ------------------------------------------------------------------- loading
def resolve_store(spec_or_dir, out=None):
    """(Store, Sweep) from a results folder, or from a spec (its out folder, or ``out``)."""
    if isinstance(spec_or_dir, Store):
        return spec_or_dir, spec_or_dir.sweep()
    path = Path(spec_or_dir) if isinstance(spec_or_dir, (str, os.PathLike)) else None
    if path is not None and path.is_dir():
        if out is not None and Path(out).resolve() != path.resolve():
            raise SweepUsageError(f"{str(path)!r} is a results folder; --out only goes with a spec")
        store = Store(path)
        return store, store.sweep()
    sweep = load_spec(spec_or_dir)
    return Store(out if out is not None else sweep.out), sweep


def load(out, spec=None, missing="warn"):
    """Read a sweep's results as one long DataFrame (validated; see the module docstring).

    ``out``: a results folder (or a Store). ``spec``: read the cells of this spec (default:
    the cells in the folder's manifest). Corrupt parts raise ``StoreError`` (never
    read); cells without a part are left out, with a ``StoreWarning`` when
    ``missing="warn"``, silently when "ignore", or a StoreError when "raise".
    ``frame.attrs["missing"]`` lists their hashes. Parts written before the training-setup columns
    existed (``sampling``, ``momentum``, …; ``spec.training_columns``) get them, with their defaults.
    """
    if missing not in ("warn", "ignore", "raise"):
        raise SweepUsageError(f"missing must be 'warn', 'ignore' or 'raise'; got {missing!r}")
    store = out if isinstance(out, Store) else Store(out)
    sweep = load_spec(spec) if spec is not None else store.sweep()
    frames, absent, corrupt = [], [], []
    for cell in sweep.cells:
        status = store.check_part(cell)
        if status.ok:
            frames.append(_with_training_columns(status.frame, cell.config).assign(cell_index=cell.index))
        elif status.state == "missing":
            absent.append(cell.hash)
        else:
            corrupt.append(f"{cell.hash} ({status.reason})")
    if corrupt:
        raise StoreError(f"{len(corrupt)} corrupt part(s) in {store.parts}: " + "; ".join(corrupt)
                         + " — re-run the sweep to recompute them")
    if absent:
        text = f"{len(absent)} of {len(sweep.cells)} cells of sweep {sweep.name!r} have no results yet in {store.root}"
        if missing == "raise":
            raise StoreError(text)
        if missing == "warn":
            warnings.warn(text, StoreWarning, stacklevel=2)
    frame = _concat(frames)
    frame.attrs["missing"] = absent
    frame.attrs["sweep"] = sweep.name
    return frame


def _with_training_columns(frame, config):
    """A part's frame with the training-setup columns (``spec.training_columns``) and problem parameters
    (``spec.problem_params``) it lacks: parts written
    before they existed belong to cells with the default setup, whose values (from the cell's configuration)
    are filled in, so frames of old and new parts concatenate with one column set and dtype."""
    missing = {k: v for k, v in training_columns(config).items() if k not in frame.columns}
    missing.update({f"problem_{k}": v for k, v in problem_params(config).items() if f"problem_{k}" not in frame.columns})
    if not missing:
        return frame
    frame = frame.assign(**missing)
    if "svrg_period" in missing:
        frame["svrg_period"] = pd.array([missing["svrg_period"]] * len(frame), dtype="Int64")
    return frame


def _concat(frames):
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True, sort=False)
    front = ["cell_index"] + [c for c in frame.columns if c != "cell_index"]
    return frame[front]
