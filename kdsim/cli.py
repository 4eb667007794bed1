"""The ``kdsim`` command line: ``kdsim check [NAME ...|all]``, ``kdsim sweep | table | plot``.

Exit codes: 0 success (every check passed), 1 a check failed (or some sweep cells failed), 2 a
fault on the user's side, 130 interrupted. Errors are one line on stderr; ``--debug`` re-raises
them with the traceback.

What counts as the user's side (:func:`user_fault`): a bad option or argument (argparse, and the
ValueError / TypeError kdsim raises itself when it validates an argument), an OSError (a path that
is a folder, missing, not writable, a read-only file system, a full disk), a missing optional
package (ImportError, e.g. ``--backend cupy`` without CuPy) or no usable GPU, a run that the
memory planner refuses (MemoryError from ``kdsim.memory``), a sweep usage error, a results folder
held by another sweep, and a corrupted data file (``kdsim.datasets.DatasetChecksumError``).
Anything else is a bug in kdsim: one line naming the exception, exit code 1, and the
traceback with ``--debug``.
"""
from __future__ import annotations

import argparse
import linecache
import sys
import time
from pathlib import Path

from ._version import __version__
from . import _validate as V
from .sweeps import cli as sweeps_cli


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with kdsim's one-line errors (exit code 2) instead of the usage block."""

    def error(self, message):
        raise _UsageError(f"{message} (see {self.prog} --help)")


_positive_int = V.positive_int_arg

_DEBUG_HELP = "on an error, show the traceback (for reporting a bug)"


def _parser():
    parser = _Parser(prog="kdsim", description="Numerical validation of knowledge-distillation theory.")
    parser.add_argument("--version", action="version", version=f"kdsim {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chk = sub.add_parser("check", help="run theory checks (THEORY.md §8) and write tables and plots",
                         description="Run theory checks and write tables (CSV, Markdown, LaTeX) and plots.")
    chk.add_argument("names", nargs="*", default=["all"], metavar="NAME",
                     help="check names or claim numbers, or 'all' (default)")
    chk.add_argument("--list", action="store_true", help="list the checks and exit")
    chk.add_argument("--quick", action="store_true", help="reduced sizes (a couple of minutes)")
    chk.add_argument("--seeds", type=_positive_int, default=None,
                     help="seeds per Monte Carlo estimate (each check has a minimum: see --list)")
    chk.add_argument("--backend", default="auto", help="simulation backend (auto, numpy, numba, cupy)")
    chk.add_argument("--out", default="kdsim-results", help="results folder (default: ./kdsim-results)")
    sweeps_cli.add_parsers(sub)
    for command in sub.choices.values():          # `kdsim COMMAND ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser



def _writable_dir(path):
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".kdsim-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise _UsageError(f"--out {path!s} is not a writable folder ({exc.strerror or exc})") from None
    return out


def _run_check_command(args):
    from . import checks
    from .engines import BACKENDS

    if args.list:
        for number, name, statement in checks.describe():
            fewest, _ = checks.min_seeds(name)
            print(f"{number:2d}  {name:22s} seeds ≥ {fewest:<3d} {statement}")
        return 0
    names = list(checks.CLAIMS) if "all" in args.names else []
    try:
        names += [checks.resolve(n) for n in args.names if n != "all"]
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    if args.backend not in BACKENDS:
        raise _UsageError(f"unknown backend {args.backend!r}; valid values: {', '.join(BACKENDS)}")
    if args.backend == "cupy":                    # say so now, not after the first checks have run
        from .engines import cupy_gpu
        cupy_gpu.require()
    names = list(dict.fromkeys(names))
    if args.seeds is not None:                    # refuse before any check runs
        for name in names:
            fewest, why = checks.min_seeds(name)
            if args.seeds < fewest:
                raise _UsageError(f"--seeds must be at least {fewest} for check {name} ({why}); got {args.seeds}")
    out = _writable_dir(args.out)

    from .report import plots, tables

    results, index = [], [f"# kdsim check results\n\nkdsim {__version__}, backend {args.backend}, "
                          f"{'quick' if args.quick else 'full'} size, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"]
    for k, name in enumerate(names, 1):
        print(f"[{k}/{len(names)}] running {name} ...", flush=True)
        result = checks.get_check(name)(quick=args.quick, seeds=args.seeds, backend=args.backend)
        results.append(result)
        print(result.verdict(), flush=True)
        if not result.passed:
            print(result.table())
        paths = tables.write_tables(result, out)
        links = " · ".join(f"[{kind}]({p.name})" for kind, p in paths.items())
        index.append(f"\n## Claim {result.claim}: {result.name} — {'PASS' if result.passed else 'FAIL'}\n\n"
                     f"{result.statement}\n\nTables: {links}\n")
        index.extend(f"\n- {note}" for note in result.notes)
        if result.notes:
            index.append("\n")
        if result.curves:
            fig = plots.convergence_plot(result.curves, out / f"claim{result.claim:02d}_{result.name}.png",
                                         f"Claim {result.claim}: {result.name}")
            index.append(f"\n![claim {result.claim}]({fig.name})\n")
        for figure in result.figures:
            fig = plots.render(figure, out)
            index.append(f"\n![{figure['title']}]({fig.name})\n")
    summary = tables.write_summary(results, out)
    index.insert(1, f"\n[Summary]({summary.name})\n")
    (out / "index.md").write_text("".join(index))
    print()
    print(tables.summary_frame(results).to_string(index=False))
    failed = [r.name for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)}/{len(results)} checks passed; results in {out.resolve()}/index.md")
    return 1 if failed else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv                     # known even when parsing fails
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if args.command == "check":
            return _run_check_command(args)
        return sweeps_cli.run_command(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("kdsim: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the policy of the module docstring
        if debug:
            raise
        if user_fault(exc):
            print(f"kdsim: error: {_one_line(_message(exc))}", file=sys.stderr)
            return 2
        print(f"kdsim: internal error (a bug in kdsim): {type(exc).__name__}: {_one_line(str(exc))} "
              "— run with --debug for the traceback", file=sys.stderr)
        return 1


def _message(exc):
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _one_line(text):
    return " ".join(str(text).split())


def _innermost(exc):
    """(module name, source line) of the frame that raised ``exc``."""
    tb = exc.__traceback__
    if tb is None:
        return "", ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    return frame.f_globals.get("__name__", ""), linecache.getline(frame.f_code.co_filename, tb.tb_lineno).strip()


def _raised_by_kdsim(exc, modules=("kdsim",)):
    """True when a ``raise`` statement in kdsim (in one of ``modules``) raised ``exc`` on purpose,
    as opposed to an exception from a library or from a wrong call inside kdsim."""
    module, line = _innermost(exc)
    return module.split(".")[0] == "kdsim" and module.startswith(modules) and line.startswith("raise")


def user_fault(exc):
    """True when ``exc`` is a fault on the user's side (see the module docstring), False for a bug."""
    from .sweeps.registry import SweepUsageError

    if isinstance(exc, (_UsageError, SweepUsageError, OSError)):
        return True
    if isinstance(exc, ImportError):
        return not (exc.name or "").startswith("kdsim")       # a missing kdsim module is a bug
    if isinstance(exc, MemoryError):
        return _raised_by_kdsim(exc, ("kdsim.memory", "kdsim.engines.memory"))
    datasets = sys.modules.get("kdsim.datasets")
    if datasets is not None and isinstance(exc, datasets.DatasetChecksumError):
        return True
    if isinstance(exc, NotImplementedError):                  # a backend without kernels for a problem
        return _raised_by_kdsim(exc, ("kdsim.engines",))
    if isinstance(exc, RuntimeError):                         # CuPy present but no usable GPU
        return _raised_by_kdsim(exc, ("kdsim.engines.cupy_gpu",))
    if isinstance(exc, (ValueError, TypeError)):
        return _raised_by_kdsim(exc)
    return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
