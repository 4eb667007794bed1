"""Running a sweep: cached, resumable, in-process or on a Dask cluster.

:func:`run` validates the spec (nothing is computed or written for a bad spec), checks
which cells already have a valid part in the store (those are skipped; corrupt ones
are reported, moved aside and recomputed), submits the remaining cells as independent
tasks and writes each result from the driver as soon as it completes
(``distributed.as_completed``), so finished work survives an interrupted driver, a
lost worker or a crash. A killed worker's running tasks are rescheduled by the Dask
scheduler, and a result that finished on it but was lost with it before the driver
gathered it is resubmitted (``DaskExecutor.LOST_RETRIES`` times); each cell is written
exactly once per run.

Executors:

* ``workers=1`` and no client/scheduler: in-process, one cell after another (no Dask needed);
* ``workers=N > 1``: a ``distributed.LocalCluster`` of N worker processes with one thread each;
* ``scheduler="tcp://host:8786"``: a ``distributed.Client`` connected to a running scheduler;
* ``client=``: an existing ``distributed.Client`` (left open).
"""
from __future__ import annotations

import math
import sys
import time
import uuid
from dataclasses import dataclass, field

from ..engines import memory
from .registry import PROBLEMS, SweepUsageError
from .spec import load_spec
from .store import Store, _pyarrow, load
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
    stale: list = field(default_factory=list)          # parts of cells not in this spec (kept, ignored)
    failed: list = field(default_factory=list)         # (hash, label, error)
    notes: list = field(default_factory=list)          # divergence and theory notes from the cells
    seconds: float = 0.0
    executor: str = ""

    def as_dict(self):
        return dict(vars(self))


# ---------------------------------------------------------------- progress
class Progress:
    """Progress over cells with throughput and ETA: tqdm when installed and on a terminal, else lines."""

    def __init__(self, total, traj_steps, log=None, enabled=True, min_interval=1.0):
        self.total, self.traj_steps = total, traj_steps
        self.done = 0
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
                self.bar = tqdm(total=total, unit="cell", desc="sweep", file=sys.stderr)

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
        now = time.perf_counter()
        if now - self.last < self.min_interval and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(elapsed, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        status = "FAILED" if failed else "done"
        self.log(f"[{self.done:>{len(str(self.total))}}/{self.total}] {100 * self.done / self.total:5.1f}% · "
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
        info = client.scheduler_info() if hasattr(client, "scheduler_info") else {}
        n = len(info.get("workers", {}))
        self.name = f"dask {client.scheduler.address} ({n} worker{'s' if n != 1 else ''})"

    #: resubmissions of a cell whose result was lost with its worker (finished there, not yet gathered)
    LOST_RETRIES = 3

    def _submit(self, cell, token, attempt):
        fut = self.client.submit(self.task, cell.config, key=f"kdsim-cell-{cell.hash}-{token}-{attempt}",
                                 pure=False)
        self.futures[fut.key] = (fut, cell, attempt)
        return fut

    def results(self, cells):
        from distributed import as_completed

        token = uuid.uuid4().hex[:8]
        for cell in cells:
            self._submit(cell, token, 0)
        pending = as_completed([f for f, _, _ in self.futures.values()])
        for fut in pending:
            _, cell, attempt = self.futures.pop(fut.key)
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
        on_cell_done=None, log=None):
    """Run a sweep (see the module docstring) and return its results as one long DataFrame.

    Parameters
    ----------
    spec : path to a TOML file, a TOML string, a dict or a Sweep
    client : a distributed.Client to submit to (left open)
    out : results folder (default: the spec's ``[sweep] out``, else kdsim-sweeps/<name>)
    workers : 1 runs in-process; N > 1 starts a LocalCluster of N processes (1 thread each)
    scheduler : address of a running Dask scheduler (tcp://host:8786)
    progress : print progress lines (or a tqdm bar) to stderr
    recompute : ignore stored parts and recompute every cell
    on_cell_done : callback(cell, frame, info) after each part is written (it may raise,
        e.g. KeyboardInterrupt: the parts written so far stay, a re-run resumes)
    log : callable for messages (default: print to stderr)

    The returned frame's ``attrs["run"]`` holds the :class:`RunReport` as a dict. Raises
    :class:`SweepError` after writing every other cell when some cells failed.
    """
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    sweep = load_spec(spec)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SweepUsageError(f"workers must be an integer >= 1; got {workers!r}")
    _pyarrow()                                   # the store needs pyarrow: say so before any work
    if workers > 1 or scheduler is not None:
        _distributed()
    store = Store(out if out is not None else sweep.out)
    t0 = time.perf_counter()
    report = RunReport(name=sweep.name, out=str(store.root), total=len(sweep.cells))
    report.stale = store.prepare(sweep)
    if report.stale:
        say(f"note: {len(report.stale)} part(s) in {store.parts} belong to cells not in this spec; kept and ignored")

    todo = []
    for cell in sweep.cells:
        if recompute:
            todo.append(cell)
            continue
        status = store.check_part(cell, read=True)
        if status.ok:
            report.skipped += 1
        elif status.state == "missing":
            todo.append(cell)
        else:
            moved = store.quarantine(cell.hash, status.reason)
            say(f"corrupt part {cell.hash} ({cell.label}): {status.reason}; moved to {moved} and recomputing")
            report.recomputed.append((cell.hash, status.reason))
            todo.append(cell)
    if report.skipped:
        say(f"{report.skipped} of {len(sweep.cells)} cells already stored in {store.parts}; skipping them")

    if todo:
        executor = make_executor(client=client, scheduler=scheduler, workers=workers)
        report.executor = executor.name
        bar = Progress(len(todo), sum(c.trajectory_steps for c in todo), log=log, enabled=progress)
        say(f"sweep {sweep.name!r}: computing {len(todo)} cell(s) on {executor.name}")
        report.submitted = len(todo)
        try:
            for cell, result, error in executor.results(todo):
                if error is not None:
                    report.failed.append((cell.hash, cell.label, error))
                    say(f"cell {cell.hash} ({cell.label}) failed: {error}")
                    bar.update(cell, failed=True)
                    continue
                frame, info = result
                store.write_part(cell, frame, info, sweep)
                report.written += 1
                report.notes.extend(f"{cell.hash} ({cell.label}): {n}" for n in info.get("notes", []))
                bar.update(cell)
                if on_cell_done is not None:
                    on_cell_done(cell, frame, info)
        except BaseException as exc:
            executor.cancel()
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped by {type(exc).__name__}"
            say(f"{what}: {report.written} cell(s) written this run, "
                f"{report.skipped + report.written} of {len(sweep.cells)} stored in {store.parts}; "
                "re-run the same command to resume")
            raise
        finally:
            bar.close()
            executor.close()
    report.seconds = time.perf_counter() - t0
    for note in report.notes:
        say(f"note: {note}")
    if report.failed:
        raise SweepError(f"{len(report.failed)} of {len(sweep.cells)} cells failed (the other results are stored in "
                         f"{store.parts}; re-running retries the failed ones): "
                         + "; ".join(f"{h} ({label}): {err}" for h, label, err in report.failed), report.failed)
    frame = load(store, spec=sweep, missing="raise")
    frame.attrs["run"] = report.as_dict()
    return frame


# ---------------------------------------------------------------- dry run
#: assumed cost model per backend: seconds per step + seconds per (trajectory · b · d) step.
#: Rough figures from one machine; --calibrate measures them on yours. numba: 1.6–2.7e-10
#: in benchmarks/RESULTS.md (W1, W3, W4 on 2 cores), rounded up.
ASSUMED_COST = {"numpy": (2e-4, 5e-8), "numba": (2e-6, 3e-10), "auto": (2e-6, 3e-10)}
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


def dry_run(spec, out=None, workers=1, calibrate_throughput=False):
    """Text plan of a sweep: its cells, a cost estimate and the memory plan. Computes nothing
    (except a short timed simulation with ``calibrate_throughput``)."""
    sweep = load_spec(spec)
    store = Store(out if out is not None else sweep.out)
    backend = sweep.spec["sweep"]["backend"]
    lines = [f"sweep {sweep.name!r}: {len(sweep.cells)} cell(s) ({sweep.describe_axes()}), "
             f"{len(sweep.spec['grid']['lams'])} λ value(s) per cell, backend {backend!r}"]
    header = (f"{'cell':>5}  {'hash':16}  {'γ':>12}  {'b':>4}  {'estimator':9}  {'seeds':>6}  {'steps':>7}  "
              f"{'records':>7}  {'rec. bytes':>10}  label")
    lines += ["", header, "-" * len(header)]
    for cell in sweep.cells:
        c = cell.config
        lines.append(f"{cell.index:>5}  {cell.hash:16}  {cell.gamma_text():>12}  {c['batch_size']:>4}  "
                     f"{c['estimator']:9}  {c['seeds']:>6}  {c['steps']:>7}  {cell.n_records:>7}  "
                     f"{_bytes(cell_memory(cell)['records']):>10}  {cell.label}")
    traj_steps = sum(c.trajectory_steps for c in sweep.cells)
    if calibrate_throughput:
        coef, per_step = calibrate(sweep)
        how = f"measured on cell 0: {per_step:.3g} s per step"
    else:
        coef = ASSUMED_COST.get(backend, ASSUMED_COST["auto"])
        how = (f"assumed for backend {backend!r}: {coef[0]:.2g} s per step + {coef[1]:.2g} s per trajectory·b·d; "
               "--calibrate measures it")
    seconds = sum(_model_seconds(c, coef) for c in sweep.cells)
    lines += ["", f"cost: {traj_steps:.4g} trajectory-steps (λ × seeds × steps summed over cells); "
                  f"≈ {_duration(seconds)} of compute ({how}); ≈ {_duration(seconds / workers)} on {workers} worker(s)"]
    mems = [cell_memory(c) for c in sweep.cells]
    big = max(range(len(mems)), key=lambda k: mems[k]["records"] + mems[k]["engine_working_set"])
    m = mems[big]
    lines.append(f"memory per cell (largest, cell {big}): records {_bytes(m['records'])} (3 × λ × seeds × records × 8 B), "
                 f"final iterates {_bytes(m['final_iterates'])}, engine working set ≈ {_bytes(m['engine_working_set'])}; "
                 f"stored part ≈ {_bytes(m['part'])} before compression")
    lines.append(f"store: ≈ {_bytes(sum(x['part'] for x in mems))} in {len(sweep.cells)} part(s); "
                 f"peak memory per worker ≈ {_bytes(m['records'] + m['final_iterates'] + m['engine_working_set'])} "
                 "beyond the problem data")
    existing = sum(store.part_path(c.hash).exists() for c in sweep.cells)
    lines.append(f"output: {store.root} ({existing} of {len(sweep.cells)} part file(s) present; validated when the sweep runs)")
    return "\n".join(lines)
