"""``kdsim sweep | table | plot``: the sweep subcommands, wired into ``kdsim.cli``.

``add_parsers(subparsers)`` adds the three subcommands to the main parser;
``run_command(args)`` runs one and returns the exit code: 0 success (or nothing to do),
1 some cells failed or the store holds corrupt parts, 130 interrupted (finished cells are
kept; re-running resumes). Usage errors (a bad spec, a bad option, a results folder that
another sweep holds or that cannot be written) raise ``UsageError`` (a ValueError) or
an OSError, which the main program prints as one line with exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .registry import SweepUsageError as UsageError

COMMANDS = ("sweep", "table", "plot")


def _positive_int(text):
    """argparse type: an integer >= 1 (kdsim._validate loads numpy: imported when the option is given,
    so that ``kdsim --help`` stays fast)."""
    from .._validate import positive_int_arg
    return positive_int_arg(text)


def add_parsers(subparsers):
    """Add ``sweep``, ``table`` and ``plot`` to an argparse subparsers object."""
    sw = subparsers.add_parser(
        "sweep", help="run a declarative sweep (TOML spec) into a cached, resumable parquet store",
        description="Run every cell of a sweep spec (Cartesian product of its grids) and store one parquet part "
                    "per cell. Cells already stored are skipped; corrupt parts are recomputed. Ctrl-C keeps "
                    "finished cells: run the same command again to resume.")
    sw.add_argument("spec", metavar="SPEC", help="sweep spec (TOML file)")
    sw.add_argument("--dry-run", action="store_true", help="print the cells, a cost estimate and the memory plan; run nothing")
    sw.add_argument("--calibrate", action="store_true", help="with --dry-run: time a short simulation for the cost estimate")
    sw.add_argument("--out", default=None, help="results folder (default: [sweep] out, else kdsim-sweeps/<name>)")
    sw.add_argument("--workers", type=_positive_int, default=1,
                    help="1: in-process (default); N > 1: a local Dask cluster of N processes")
    sw.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="submit to a running Dask scheduler, e.g. tcp://host:8786 (kdsim installed on every worker)")
    sw.add_argument("--recompute", action="store_true", help="recompute every cell, ignoring stored parts")
    sw.add_argument("-q", "--quiet", "--no-progress", dest="no_progress", action="store_true",
                    help="no progress lines (the result line and errors still print)")

    tb = subparsers.add_parser(
        "table", help="bound-vs-empirical tables from a sweep's store",
        description="Print a table from a sweep's results: bounds (per cell, λ and bound), lambdas (best λ on the "
                    "grid vs λ̂, λ*_T1, λ*_T2, λ*_published, λ_opt) or cells. The one output option is "
                    "--output FILE. --out DIR (the results folder of a spec) is deprecated: it read like the "
                    "output file; pass the results folder itself as SPEC_OR_DIR.")
    tb.add_argument("source", metavar="SPEC_OR_DIR", help="a sweep spec or its results folder")
    tb.add_argument("--out", default=None, help=argparse.SUPPRESS)   # deprecated: see the description
    tb.add_argument("--kind", default="bounds", choices=("bounds", "lambdas", "cells"), help="which table (default bounds)")
    tb.add_argument("--format", default="md", choices=("md", "csv"), help="Markdown (default) or CSV")
    tb.add_argument("--output", default=None, metavar="FILE", help="write the table to FILE instead of standard output")

    pl = subparsers.add_parser(
        "plot", help="figures from a sweep's store",
        description="Plateau vs γ per λ with bounds, λ sweeps with the optimal-weight formulas, convergence curves.")
    pl.add_argument("source", metavar="SPEC_OR_DIR", help="a sweep spec or a results folder")
    pl.add_argument("--out", default=None, help="results folder when SPEC_OR_DIR is a spec")
    pl.add_argument("--figures", default=None, metavar="DIR", help="figure folder (default: <results>/figures)")
    pl.add_argument("--max-figures", type=_positive_int, default=24, help="at most this many figures (default 24)")
    pl.add_argument("--format", default="png", choices=("png", "pdf", "svg"), help="figure format (default png)")
    pl.add_argument("--dpi", type=_positive_int, default=None, help="resolution of PNG figures (default 200)")
    return subparsers


def run_command(args):
    """Run ``args.command`` (one of COMMANDS); return the exit code."""
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "table":
        return _table(args)
    if args.command == "plot":
        return _plot(args)
    raise UsageError(f"unknown sweep command {args.command!r}; valid values: {', '.join(COMMANDS)}")


def _err(text):
    print(f"kdsim: {text}", file=sys.stderr)


def _sweep(args):
    from .execute import SweepError, dry_run, run_cells
    from .store import StoreError

    if args.calibrate and not args.dry_run:
        raise UsageError("--calibrate goes with --dry-run")
    if args.scheduler and args.workers != 1:
        raise UsageError("--workers starts a local cluster; with --scheduler the remote cluster's workers are used")
    if args.dry_run:
        print(dry_run(args.spec, out=args.out, workers=args.workers, calibrate_throughput=args.calibrate))
        return 0
    try:
        rep = run_cells(args.spec, out=args.out, workers=args.workers, scheduler=args.scheduler,
                        progress=not args.no_progress, recompute=args.recompute)
    except KeyboardInterrupt:
        _err("interrupted; finished cells are stored, run the same command again to resume")
        return 130
    except SweepError as exc:
        _err(f"error: {exc}")
        return 1
    except StoreError as exc:
        _err(f"error: {exc}")
        return 1
    if rep.written == 0 and rep.skipped == rep.total:
        where = " (read-only)" if rep.read_only else ""
        print(f"sweep {rep.name!r}: all {rep.total} cells are stored in {rep.out}{where}; nothing to do. "
              f"Next: kdsim table {rep.out}")
        return 0
    fixed = f", {len(rep.recomputed)} corrupt part(s) recomputed" if rep.recomputed else ""
    print(f"sweep {rep.name!r}: {rep.total} cells — {rep.skipped} already stored, {rep.written} computed"
          f"{fixed} in {rep.seconds:.1f} s; results in {rep.out}. Next: kdsim table {rep.out}")
    return 0


def _output_file(path):
    """Check ``--output`` before any work: a file in an existing folder, not a folder."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"--output {path} is a folder; give a file name")
    if not out.parent.is_dir():
        raise UsageError(f"--output {path}: folder {str(out.parent)!r} does not exist")
    return out


def _table(args):
    from .report import render_table, table
    from .store import StoreError

    if args.out is not None:
        _err(f"warning: table --out is deprecated (it names a spec's results folder, not the output file): "
             f"pass the folder as SPEC_OR_DIR (kdsim table {args.out}); to write the table to a file, "
             "use --output FILE")
    output = _output_file(args.output) if args.output else None
    try:
        frame = table(args.source, kind=args.kind, out=args.out)
    except StoreError as exc:
        _err(f"error: {exc}")
        return 1
    text = render_table(frame, args.format)
    if output is not None:
        try:
            output.write_text(text)
        except OSError as exc:
            raise UsageError(f"cannot write --output {args.output} ({exc.strerror or exc})") from None
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    missing = frame.attrs.get("missing", [])
    if missing:
        _err(f"note: {len(missing)} cell(s) have no results yet (sweep incomplete)")
    return 0


def _plot(args):
    from .report import plot
    from .store import StoreError

    try:
        paths = plot(args.source, out=args.out, figures=args.figures, max_figures=args.max_figures,
                     fmt=args.format, dpi=args.dpi)
    except StoreError as exc:
        _err(f"error: {exc}")
        return 1
    for p in paths:
        print(p)
    if paths.summary():
        _err(f"note: {paths.summary()}")
    return 0
