"""Running a sweep: cached, resumable, in-process or on a Dask cluster.

``run`` validates the spec (nothing is computed or written for a bad spec), checks
which cells already have a valid part in the store (those are skipped; corrupt ones
are reported, moved aside and recomputed), submits the remaining cells as independent
tasks and writes each result from the driver as soon as it completes
(``distributed.as_completed``), so finished work survives an interrupted driver, a
lost worker or a crash. A killed worker's running tasks are rescheduled by the Dask
scheduler, and a result that finished on it but was lost with it before the driver
gathered it is resubmitted (``DaskExecutor.LOST_RETRIES`` times); each cell is written
exactly once per run.

Cells are generated from the spec's axes as they are submitted, and at most a bounded
window of them is in flight, so the driver's memory does not grow with the number of
cells. One process at a time writes a results folder (``Store.lock``).

Executors:

* ``workers=1`` and no client/scheduler: in-process, one cell after another (no Dask needed);
* ``workers=N > 1``: a ``distributed.LocalCluster`` of N worker processes with one thread each;
* ``scheduler="tcp://host:8786"``: a ``distributed.Client`` connected to a running scheduler;
* ``client=``: an existing ``distributed.Client`` (left open).
"""
from __future__ import annotations

import itertools
import math
import sys
import time
import uuid
from dataclasses import dataclass, field

from .. import memory
from .registry import PROBLEMS, SpecError, SweepUsageError
from .spec import load_spec
from .store import Store, StoreWriteError, _pyarrow, load
from .task import compute_cell


class SweepError(RuntimeError):
    """Some cells of a sweep failed; the others were written. ``failed`` lists (cell, error text)."""

    def __init__(self, message, failed=()):
        super().__init__(message)
        self.failed = list(failed)


@dataclass
class RunReport:
    """What a run did: cells skipped (already stored), submitted, written, recomputed, failed."""

    name: str
    out: str
    total: int
    skipped: int = 0
    submitted: int = 0
    written: int = 0
    recomputed: list = field(default_factory=list)     # (hash, reason) of corrupt parts
    stale: int = 0                                     # parts of cells not in this spec (kept, ignored)
    failed: list = field(default_factory=list)         # (hash, label, error)
    notes: list = field(default_factory=list)          # divergence and theory notes (the first MAX_NOTES)
    more_notes: int = 0                                # notes beyond MAX_NOTES, counted only
    seconds: float = 0.0
    executor: str = ""
    read_only: bool = False                            # the folder could not be written (nothing was to do)

    #: notes kept in memory (a huge sweep may note every cell)
    MAX_NOTES = 200

    def as_dict(self):
        return dict(vars(self))


# ---------------------------------------------------------------- progress
class Progress:
    """Progress over the cells of a sweep with throughput and ETA: tqdm when installed and on a terminal,
    else lines. Stored cells are found as the cells stream past (``skip``); until then they count as
    to do, so the ETA is an upper bound while a resumed sweep is scanned."""

    def __init__(self, total, log=None, enabled=True, min_interval=1.0, skipped=0):
        self.total = total
        self.done = 0              # computed or failed in this run
        self.skipped = skipped     # already stored
        self.steps_done = 0
        self.t0 = time.perf_counter()
        self.last = -math.inf
        self.enabled = enabled and total > 0
        self.min_interval = 0.0 if total <= 50 else min_interval
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.bar = None
        if self.enabled and log is None and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=skipped, unit="cell", desc="sweep", file=sys.stderr)

    def skip(self):
        self.skipped += 1
        if self.enabled and self.bar is not None:
            self.bar.update(1)

    def update(self, cell, failed=False):
        self.done += 1
        self.steps_done += cell.trajectory_steps
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"{self.steps_done / max(elapsed, 1e-9):.3g} traj-steps/s")
            return
        seen = self.done + self.skipped
        now = time.perf_counter()
        if now - self.last < self.min_interval and seen < self.total:
            return
        self.last = now
        rate = self.done / max(elapsed, 1e-9)
        eta = (self.total - seen) / rate if rate > 0 else math.inf
        status = "FAILED" if failed else "done"
        self.log(f"[{seen:>{len(str(self.total))}}/{self.total}] {100 * seen / self.total:5.1f}% · "
                 f"{rate:.3g} cells/s · {self.steps_done / max(elapsed, 1e-9):.3g} traj-steps/s · "
                 f"ETA {_duration(eta)} · {status} {cell.hash} {cell.label}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _duration(seconds):
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------- executors
class InProcess:
    """Cells one after another in this process."""

    name = "in-process"

    def __init__(self, task):
        self.task = task

    def results(self, cells):
        for cell in cells:
            try:
                result = self.task(cell.config)
            except Exception as exc:  # a failing cell is reported; the others go on
                yield cell, None, f"{type(exc).__name__}: {exc}"
            else:
                yield cell, result, None

    def cancel(self):
        pass

    def close(self):
        pass


class DaskExecutor:
    """Cells as tasks on a distributed.Client; results in completion order."""

    def __init__(self, client, own=None, task=compute_cell):
        self.client = client
        self.own = own                 # (client, cluster) to close at the end, or None
        self.task = task
        self.futures = {}
        n = self._n_workers()
        self.name = f"dask {client.scheduler.address} ({n} worker{'s' if n != 1 else ''})"
        self._window, self._window_at = self._size(n), time.monotonic()

    #: resubmissions of a cell whose result was lost with its worker (finished there, not yet gathered)
    LOST_RETRIES = 3
    #: cells in flight: enough to keep every worker busy, few enough that the driver's memory stays
    #: bounded whatever the number of cells (re-read every WINDOW_REFRESH_S as workers come and go)
    WINDOW_PER_WORKER = 4
    MIN_WINDOW = 16
    WINDOW_REFRESH_S = 5.0

    def _n_workers(self):
        info = self.client.scheduler_info() if hasattr(self.client, "scheduler_info") else {}
        return len(info.get("workers", {}))

    def _size(self, n_workers):
        return max(self.MIN_WINDOW, self.WINDOW_PER_WORKER * n_workers)

    def window(self):
        now = time.monotonic()
        if now - self._window_at > self.WINDOW_REFRESH_S:
            self._window, self._window_at = self._size(self._n_workers()), now
        return self._window

    def _submit(self, cell, token, attempt):
        fut = self.client.submit(self.task, cell.config, key=f"kdsim-cell-{cell.hash}-{token}-{attempt}",
                                 pure=False)
        self.futures[fut.key] = (fut, cell, attempt)
        return fut

    def results(self, cells):
        """(cell, result, error) in completion order; ``cells`` (any iterable) is consumed as room frees up."""
        from distributed import as_completed

        token = uuid.uuid4().hex[:8]
        cells = iter(cells)
        pending = as_completed()

        def refill():
            while len(self.futures) < self.window():
                cell = next(cells, None)
                if cell is None:
                    return
                pending.add(self._submit(cell, token, 0))

        refill()
        for fut in pending:
            _, cell, attempt = self.futures.pop(fut.key)
            refill()
            if fut.status == "lost" and attempt < self.LOST_RETRIES:
                fut.release()
                pending.add(self._submit(cell, token, attempt + 1))
                continue
            if fut.status == "finished":
                try:
                    result = fut.result()
                except Exception as exc:  # lost between finishing and gathering
                    fut.release()
                    if attempt < self.LOST_RETRIES:
                        pending.add(self._submit(cell, token, attempt + 1))
                        continue
                    yield cell, None, f"{type(exc).__name__}: {exc}"
                else:
                    yield cell, result, None
            else:
                exc = fut.exception() if fut.status == "error" else None
                yield cell, None, f"{type(exc).__name__}: {exc}" if exc is not None else f"task {fut.status}"
            fut.release()

    def cancel(self):
        if self.futures:
            try:
                self.client.cancel([f for f, _, _ in self.futures.values()])
            except Exception:  # the cluster may already be gone
                pass
            self.futures.clear()

    def close(self):
        if self.own is not None:
            client, cluster = self.own
            client.close()
            if cluster is not None:
                cluster.close()


def _distributed():
    try:
        import distributed
    except ImportError:
        raise SweepUsageError("running on more than one worker needs dask.distributed: "
                              "pip install 'kdsim[dask]' (or run with --workers 1)") from None
    return distributed


def make_executor(client=None, scheduler=None, workers=1, task=compute_cell):
    """The executor for the run options (see the module docstring)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SweepUsageError(f"workers must be an integer >= 1; got {workers!r}")
    if client is not None and scheduler is not None:
        raise SweepUsageError("give either client or scheduler, not both")
    if client is not None:
        return DaskExecutor(client, own=None, task=task)
    if scheduler is not None:
        distributed = _distributed()
        if not isinstance(scheduler, str) or "://" not in scheduler:
            raise SweepUsageError(f"scheduler must be an address like tcp://host:8786; got {scheduler!r}")
        try:
            c = distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise SweepUsageError(f"cannot connect to the Dask scheduler at {scheduler} ({exc})") from None
        return DaskExecutor(c, own=(c, None), task=task)
    if workers == 1:
        return InProcess(task)
    distributed = _distributed()
    import logging
    try:
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
    except (OSError, RuntimeError) as exc:
        raise SweepUsageError(f"could not start a local Dask cluster of {workers} processes ({exc}); "
                              "try --workers 1") from None
    try:
        c = distributed.Client(cluster.scheduler_address)
    except BaseException:
        cluster.close()
        raise
    return DaskExecutor(c, own=(c, cluster), task=task)


# -------------------------------------------------------------------- run
def run(spec, client=None, out=None, workers=1, scheduler=None, progress=True, recompute=False,
        on_cell_done=None, log=None, memory_budget=None):
    """Run a sweep (see the module docstring) and return its results as one long DataFrame.

    Parameters
    ----------
    spec : str, dict or Sweep
        A path to a TOML file, a TOML string, a dict or a Sweep.
    client : distributed.Client, optional
        A client to submit to (left open).
    out : str, optional
        Results folder (default: the spec's ``[sweep] out``, else kdsim-sweeps/<name>).
    workers : int, default 1
        1 runs in-process; N > 1 starts a LocalCluster of N processes (1 thread each).
    scheduler : str, optional
        Address of a running Dask scheduler (tcp://host:8786).
    progress : bool, default True
        Print progress lines (or a tqdm bar) to stderr.
    recompute : bool, default False
        Ignore stored parts and recompute every cell.
    on_cell_done : callable, optional
        ``callback(cell, frame, info)`` after each part is written (it may raise, e.g.
        KeyboardInterrupt: the parts written so far stay, a re-run resumes).
    log : callable, optional
        Receives messages (default: print to stderr).
    memory_budget : int, optional
        Bytes one cell may use (default ``kdsim.memory.default_budget()``); a spec with a cell
        that needs more is rejected before anything runs.

    Returns
    -------
    pandas.DataFrame
        Every row of the sweep; ``attrs["run"]`` holds the ``RunReport`` as a dict.

    Raises
    ------
    SweepError
        After writing every other cell, when some cells failed.

    Notes
    -----
    For a sweep too large for memory, use ``run_cells``, which returns only the report.
    """
    sweep = load_spec(spec)
    report = run_cells(sweep, client=client, out=out, workers=workers, scheduler=scheduler, progress=progress,
                       recompute=recompute, on_cell_done=on_cell_done, log=log, memory_budget=memory_budget)
    frame = load(Store(report.out), spec=sweep, missing="raise")
    frame.attrs["run"] = report.as_dict()
    return frame


def run_cells(spec, client=None, out=None, workers=1, scheduler=None, progress=True, recompute=False,
              on_cell_done=None, log=None, memory_budget=None):
    """Compute and store every cell of a sweep that has no valid part yet; return the ``RunReport``.

    Same parameters as ``run``. Holds the results folder's lock for the whole run
    (``StoreLocked`` if another sweep writes it). A read-only folder
    that already holds every cell is reported with ``read_only=True`` and nothing to do; one
    that does not raises ``StoreWriteError``, as does a folder that
    stops being writable mid-run (the parts written so far are kept).
    """
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    sweep = load_spec(spec)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SweepUsageError(f"workers must be an integer >= 1; got {workers!r}")
    _pyarrow()                                   # the store needs pyarrow: say so before any work
    if workers > 1 or scheduler is not None:
        _distributed()
    store = Store(out if out is not None else sweep.out)
    check_memory(sweep, memory_budget)
    t0 = time.perf_counter()
    report = RunReport(name=sweep.name, out=str(store.root), total=len(sweep.cells))
    with store.lock() as writable:
        if not writable:
            _read_only(store, sweep, report, recompute)
        else:
            store.prepare(sweep)
            def new_executor():
                return make_executor(client=client, scheduler=scheduler, workers=workers)

            def new_bar(skipped):
                return Progress(len(sweep.cells), log=log, enabled=progress, skipped=skipped)

            _compute(store, sweep, report, new_executor, new_bar, recompute, on_cell_done, say)
    report.seconds = time.perf_counter() - t0
    for note in report.notes:
        say(f"note: {note}")
    if report.more_notes:
        say(f"note: … and {report.more_notes} more note(s); the cells' rows hold them all "
            "(diverged_note, theory_note)")
    if report.failed:
        raise SweepError(f"{len(report.failed)} of {len(sweep.cells)} cells failed (the other results are stored in "
                         f"{store.parts}; re-running retries the failed ones): "
                         + "; ".join(f"{h} ({label}): {err}" for h, label, err in report.failed), report.failed)
    return report


def _read_only(store, sweep, report, recompute):
    """A folder that cannot be written: fine when every cell is stored already, else StoreWriteError."""
    report.read_only = True
    if recompute:
        raise StoreWriteError(f"results folder {str(store.root)!r} is read-only: --recompute cannot rewrite it; "
                              "give another --out")
    todo = 0
    for cell in sweep.cells:
        if store.check_part(cell, read=True).ok:
            report.skipped += 1
        else:
            todo += 1
    if todo:
        raise StoreWriteError(f"results folder {str(store.root)!r} is read-only and {todo} of {len(sweep.cells)} "
                              "cells have no valid part yet; make it writable, or give another --out")


def _compute(store, sweep, report, new_executor, new_bar, recompute, on_cell_done, say):
    """Stream the cells without a valid part through an executor and write each result as it comes.
    The executor (``new_executor()``) and the progress bar (``new_bar(skipped)``) are made once there
    is something to compute."""
    n_files = store.count_parts()
    with_part = 0
    bar = None

    def pending():
        """Cells to compute, validated lazily: stored ones are skipped, corrupt ones moved aside."""
        nonlocal with_part
        for cell in sweep.cells:
            if recompute:
                with_part += store.part_path(cell.hash).exists()
                yield cell
                continue
            status = store.check_part(cell, read=True)
            if status.state != "missing":
                with_part += 1
            if status.ok:
                report.skipped += 1
                if bar is not None:
                    bar.skip()
            elif status.state == "missing":
                yield cell
            else:
                moved = store.quarantine(cell.hash, status.reason)
                say(f"corrupt part {cell.hash} ({cell.label}): {status.reason}; moved to {moved} and recomputing")
                report.recomputed.append((cell.hash, status.reason))
                yield cell

    todo = pending()
    first = next(todo, None)                    # start no cluster when there is nothing to compute
    if first is not None:
        executor = new_executor()
        bar = new_bar(report.skipped)
        report.executor = executor.name
        say(f"sweep {sweep.name!r}: {len(sweep.cells)} cell(s); computing those not stored yet on {executor.name}")

        def counted():
            for cell in itertools.chain([first], todo):
                report.submitted += 1
                yield cell

        try:
            for cell, result, error in executor.results(counted()):
                if error is not None:
                    report.failed.append((cell.hash, cell.label, error))
                    say(f"cell {cell.hash} ({cell.label}) failed: {error}")
                    bar.update(cell, failed=True)
                    continue
                frame, info = result
                store.write_part(cell, frame, info, sweep)
                report.written += 1
                for n in info.get("notes", []):
                    if len(report.notes) < report.MAX_NOTES:
                        report.notes.append(f"{cell.hash} ({cell.label}): {n}")
                    else:
                        report.more_notes += 1
                bar.update(cell)
                if on_cell_done is not None:
                    on_cell_done(cell, frame, info)
        except BaseException as exc:
            executor.cancel()
            if not isinstance(exc, StoreWriteError):        # that one's message says it all
                what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped by {type(exc).__name__}"
                say(f"{what}: {report.written} cell(s) written this run, "
                    f"{report.skipped + report.written} of {len(sweep.cells)} found stored in {store.parts}; "
                    "re-run the same command to resume")
            raise
        finally:
            bar.close()
            executor.close()
    if report.skipped:
        say(f"{report.skipped} of {len(sweep.cells)} cells already stored in {store.parts}; skipped them")
    report.stale = max(0, n_files - with_part)
    if report.stale:
        say(f"note: {report.stale} part(s) in {store.parts} belong to cells not in this spec; kept and ignored")


# ---------------------------------------------------------------- dry run
#: assumed cost model per backend: seconds per step + seconds per (trajectory · b · d) step.
#: Rough figures from one machine; --calibrate measures them on yours. numba: 1.6–2.7e-10
#: in benchmarks/RESULTS.md (W1, W3, W4 on 2 cores), rounded up.
ASSUMED_COST = {"numpy": (2e-4, 5e-8), "numba": (2e-6, 3e-10), "auto": (2e-6, 3e-10)}
#: seconds to start a local Dask cluster and get its workers' first cells going (docs/sweeps.md)
LOCAL_CLUSTER_START = 1.5
#: assumed per-cell overhead (problem, teacher, theory constants, summaries), seconds
CELL_OVERHEAD = 0.05


def _cell_dims(cell):
    p = cell.config["problem"]
    b = PROBLEMS[p["family"]]
    return b.n_of(p["params"]), b.dim_of(p["params"])


def _model_seconds(cell, coef):
    per_step, per_unit = coef
    _, dim = _cell_dims(cell)
    c = cell.config
    trajectories = len(c["lams"]) * c["seeds"]
    return c["steps"] * (per_step + per_unit * trajectories * c["batch_size"] * dim) + CELL_OVERHEAD


def cell_memory(cell):
    """Bytes of a cell from the engines' memory model (``kdsim.engines.memory``): its record arrays
    (3 × λ × seeds × records float64), flags and final iterates, the engine's working set with every
    seed in one chunk, and its stored part."""
    c = cell.config
    _, dim = _cell_dims(cell)
    L, S, R = len(c["lams"]), c["seeds"], cell.n_records
    held = memory.output_parts(L, S, R, dim)
    working = S * memory.chunk_bytes(L, R, dim, 8, saved_iterates=True)
    part = cell.n_rows * 100 * 8                       # ≈ 100 columns of 8 bytes, before compression
    return {"records": held["records"], "final_iterates": held["flags"] + held["final_iterates"],
            "engine_working_set": working, "part": part}


def _bytes(n):
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000.0


def calibrate(sweep, base=50, min_seconds=0.25):
    """Measured (per step, per unit) coefficients from timing cell 0 over a short and a longer run.

    Cell 0 is simulated for ``base`` steps and then for 4×, 16×, … as many until a run takes
    ``min_seconds`` (or reaches the cell's steps); the difference of the two timings is the
    per-step cost (fixed costs cancel), and the assumed model's coefficients are rescaled to
    match it. Returns (coefficients, seconds per step of cell 0).
    """
    from .task import cell_inputs, run_simulation
    cell = sweep.cells[0]
    total = cell.config["steps"]
    problem, teacher, gamma, _, _ = cell_inputs(cell.config)

    def timed(s):
        t0 = time.perf_counter()
        run_simulation(dict(cell.config, steps=s, record_every=s), problem, teacher, gamma)
        return time.perf_counter() - t0

    timed(1)                                                     # warm up (JIT compilation, caches)
    s1 = min(base, total)
    t1 = timed(s1)
    s2, t2 = s1, t1
    while t2 < min_seconds and s2 < total:
        s2 = min(4 * s2, total)
        t2 = timed(s2)
    per_step = (t2 - t1) / (s2 - s1) if s2 > s1 and t2 > t1 else t2 / s2
    coef = ASSUMED_COST.get(cell.config["backend"], ASSUMED_COST["auto"])
    one_step = type(cell)(cell.index, dict(cell.config, steps=1), cell.hash, cell.label)
    modelled = _model_seconds(one_step, coef) - CELL_OVERHEAD
    scale = per_step / modelled if modelled > 0 else 1.0
    return (coef[0] * scale, coef[1] * scale), per_step


#: the cell fields that _model_seconds and cell_memory read: sums over the cells are taken over the
#: distinct combinations of these axes only, weighted by the number of cells sharing each
COST_AXES = ("problem", "batch_size", "seeds", "steps", "record_every")
#: a dry run lists every cell up to this many, else the first and last DRY_RUN_EDGE
DRY_RUN_LIST = 40
DRY_RUN_EDGE = 10


def _cost_cells(sweep):
    """(cell, weight) pairs whose weighted sums equal sums over every cell of the cost and memory models."""
    cells = sweep.cells
    if hasattr(cells, "representatives"):
        return cells.representatives(COST_AXES)
    return ((c, 1) for c in cells)


def _cell_need(cell):
    """(bytes a cell needs at the least, its seeds, bytes per seed in flight, bytes held whatever the
    chunking, bytes of its part): its records, final iterates and stored part, plus one seed of the
    engine's working set."""
    m = cell_memory(cell)
    seeds = cell.config["seeds"]
    per_seed = m["engine_working_set"] // seeds
    fixed = m["records"] + m["final_iterates"] + m["part"]
    return fixed + per_seed, seeds, per_seed, fixed, m["part"]


def _scan(sweep, coef=None):
    """One streaming pass over the cost-relevant cells (``COST_AXES``): the sums over every cell
    of trajectory-steps, modelled seconds (with ``coef``) and part bytes, and the cell that needs the
    most memory (``_cell_need``)."""
    traj_steps = seconds = part_bytes = 0
    best = None
    for cell, weight in _cost_cells(sweep):
        need = _cell_need(cell)
        traj_steps += weight * cell.trajectory_steps
        part_bytes += weight * need[4]
        if coef is not None:
            seconds += weight * _model_seconds(cell, coef)
        if best is None or need[0] > best[0]:
            best = (need[0], cell.index)
    return {"trajectory_steps": traj_steps, "seconds": seconds, "part_bytes": part_bytes,
            "largest": sweep.cells[best[1]]}


def check_memory(sweep, budget=None, largest=None):
    """Reject a sweep whose largest cell cannot fit ``budget`` bytes (default: what the engines plan
    with, ``kdsim.memory.default_budget()``) before anything runs or is written: a cell's records
    are held whole, so no chunking of its seeds can save it. Returns the largest cell."""
    sweep = load_spec(sweep)
    budget = memory.default_budget() if budget is None else budget
    cell = largest if largest is not None else _scan(sweep)["largest"]
    need, seeds, per_seed, fixed, _ = _cell_need(cell)
    try:
        memory.plan_chunks(seeds, per_seed, fixed_bytes=fixed, budget=budget)
    except MemoryError:
        c = cell.config
        raise SpecError(f"cell {cell.index} ({cell.label}) needs {need} bytes ({_bytes(need)}: {len(c['lams'])} λ × "
                        f"{seeds} seeds × {cell.n_records} records), more than the worker memory budget of {budget} "
                        f"bytes ({_bytes(budget)}); use fewer seeds or steps, or a larger record_every") from None
    return cell


def _cell_line(cell):
    c = cell.config
    return (f"{cell.index:>5}  {cell.hash:16}  {cell.gamma_text():>12}  {c['batch_size']:>4}  "
            f"{c['estimator']:9}  {c['seeds']:>6}  {c['steps']:>7}  {cell.n_records:>7}  "
            f"{_bytes(cell_memory(cell)['records']):>10}  {cell.label}")


def dry_run(spec, out=None, workers=1, calibrate_throughput=False, memory_budget=None):
    """Text plan of a sweep: its cells (the first and last ones of a large sweep), a cost estimate and
    the memory plan. Computes nothing (except a short timed simulation with ``calibrate_throughput``);
    the sums stream over the cells' distinct cost-relevant combinations, so memory stays small."""
    sweep = load_spec(spec)
    store = Store(out if out is not None else sweep.out)
    backend = sweep.spec["sweep"]["backend"]
    coef = ASSUMED_COST.get(backend, ASSUMED_COST["auto"])
    how = (f"assumed for backend {backend!r}: {coef[0]:.2g} s per step + {coef[1]:.2g} s per trajectory·b·d; "
           "--calibrate measures it")
    sums = _scan(sweep, coef)
    largest = check_memory(sweep, memory_budget, sums["largest"])      # before any timed simulation
    if calibrate_throughput:
        coef, per_step = calibrate(sweep)
        how = f"measured on cell 0: {per_step:.3g} s per step"
        sums["seconds"] = _scan(sweep, coef)["seconds"]
    cells = sweep.cells
    n = len(cells)
    lines = [f"sweep {sweep.name!r}: {n} cell(s) ({sweep.describe_axes()}), "
             f"{len(sweep.spec['grid']['lams'])} λ value(s) per cell, backend {backend!r}"]
    header = (f"{'cell':>5}  {'hash':16}  {'γ':>12}  {'b':>4}  {'estimator':9}  {'seeds':>6}  {'steps':>7}  "
              f"{'records':>7}  {'rec. bytes':>10}  label")
    lines += ["", header, "-" * len(header)]
    if n <= DRY_RUN_LIST:
        lines += [_cell_line(c) for c in cells]
    else:
        lines += [_cell_line(c) for c in cells[:DRY_RUN_EDGE]]
        lines.append(f"{'…':>5}  ({n - 2 * DRY_RUN_EDGE} more cells)")
        lines += [_cell_line(c) for c in cells[n - DRY_RUN_EDGE:]]
    traj_steps, seconds = sums["trajectory_steps"], sums["seconds"]
    on_workers = (f"≈ {_duration(seconds / workers + LOCAL_CLUSTER_START)} on {workers} workers, "
                  f"{_duration(LOCAL_CLUSTER_START)} of it starting the local cluster (its processes import kdsim "
                  f"and load its kernels): in-process is faster below ≈ "
                  f"{_duration(LOCAL_CLUSTER_START * workers / (workers - 1))} of compute" if workers > 1
                  else "run in-process")
    lines += ["", f"cost: {traj_steps:.4g} trajectory-steps (λ × seeds × steps summed over cells); "
                  f"≈ {_duration(seconds)} of compute ({how}); {on_workers}"]
    m = cell_memory(largest)
    lines.append(f"memory per cell (largest, cell {largest.index}): records {_bytes(m['records'])} "
                 f"(3 × λ × seeds × records × 8 B), final iterates {_bytes(m['final_iterates'])}, "
                 f"engine working set ≈ {_bytes(m['engine_working_set'])}; stored part ≈ {_bytes(m['part'])} "
                 "before compression")
    lines.append(f"store: ≈ {_bytes(sums['part_bytes'])} in {n} part(s); "
                 f"peak memory per worker ≈ {_bytes(m['records'] + m['final_iterates'] + m['engine_working_set'])} "
                 "beyond the problem data")
    lines.append(f"output: {store.root} ({store.count_parts()} part file(s) present for {n} cell(s); "
                 "validated when the sweep runs)")
    return "\n".join(lines)
