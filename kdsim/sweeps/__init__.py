"""Sweeps at scale: declarative TOML grids, a cached and resumable parquet store, Dask execution.

>>> import kdsim.sweeps as sw
>>> frame = sw.run("examples/sweeps/ls_small.toml", out="results/ls", workers=2)   # doctest: +SKIP
>>> frame = sw.load("results/ls")                                                  # doctest: +SKIP

* ``spec``: TOML → validated ``Sweep`` → cells (Cartesian product), each
  with its full configuration and hash;
* ``registry``: the named problem families and teacher kinds a spec can use;
* ``task``: one cell = ``kdsim.simulate`` reduced to summaries, theory beside them;
* ``store``: one atomic, validated parquet part per cell;
* ``execute``: in-process, LocalCluster or remote-scheduler execution, progress, dry run
  (its ``run`` is ``kdsim.sweeps.run``);
* ``report``: bound-vs-empirical tables and figures from a store;
* ``cli``: ``kdsim sweep | table | plot``.
"""
from .. import _lazy
from .registry import PROBLEMS, TEACHERS, Builder, Param, SpecError, SweepUsageError, register_problem, register_teacher

#: public name -> submodule; imported on first use so that ``kdsim.sweeps.cli`` (wired into the
#: ``kdsim`` command) loads no more than the registry until a sweep command runs
_LAZY = {
    "RunReport": "execute", "SweepError": "execute", "dry_run": "execute", "run": "execute",
    "run_cells": "execute", "StoreLocked": "store", "StoreWriteError": "store",
    "Cell": "spec", "Sweep": "spec", "load_spec": "spec",
    "Store": "store", "StoreError": "store", "StoreWarning": "store", "load": "store",
    "plot": "report", "table": "report",
}

__all__ = ["Builder", "Cell", "PROBLEMS", "Param", "RunReport", "SpecError", "Store", "StoreError", "StoreLocked",
           "StoreWarning", "StoreWriteError", "Sweep", "SweepError", "SweepUsageError", "TEACHERS", "dry_run", "load",
           "load_spec", "plot", "register_problem", "register_teacher", "report", "run", "run_cells", "table"]


__getattr__, __dir__ = _lazy.attributes(globals(), _LAZY, __all__)
