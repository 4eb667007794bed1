"""The ``kdsim`` command line: ``kdsim check [NAME ...|all]``, ``kdsim sweep | table | plot``.

Exit codes: 0 every check passed, 1 a check failed, 2 bad usage (one-line error).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._version import __version__
from . import _validate as V
from .sweeps import cli as sweeps_cli


class _UsageError(Exception):
    pass


_positive_int = V.positive_int_arg


def _parser():
    parser = argparse.ArgumentParser(prog="kdsim", description="Numerical validation of knowledge-distillation theory.")
    parser.add_argument("--version", action="version", version=f"kdsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chk = sub.add_parser("check", help="run theory checks (THEORY.md §8) and write tables and plots",
                         description="Run theory checks and write tables (CSV, Markdown, LaTeX) and plots.")
    chk.add_argument("names", nargs="*", default=["all"], metavar="NAME",
                     help="check names or claim numbers, or 'all' (default)")
    chk.add_argument("--list", action="store_true", help="list the checks and exit")
    chk.add_argument("--quick", action="store_true", help="reduced sizes (a couple of minutes)")
    chk.add_argument("--seeds", type=_positive_int, default=None, help="seeds per Monte Carlo estimate")
    chk.add_argument("--backend", default="auto", help="simulation backend (auto, numpy)")
    chk.add_argument("--out", default="kdsim-results", help="results folder (default: ./kdsim-results)")
    sweeps_cli.add_parsers(sub)
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
            print(f"{number:2d}  {name:22s} {statement}")
        return 0
    names = list(checks.CLAIMS) if "all" in args.names else []
    try:
        names += [checks.resolve(n) for n in args.names if n != "all"]
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    if args.backend not in BACKENDS:
        raise _UsageError(f"unknown backend {args.backend!r}; valid values: {', '.join(BACKENDS)}")
    names = list(dict.fromkeys(names))
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
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "check":
            return _run_check_command(args)
        if args.command in sweeps_cli.COMMANDS:
            return sweeps_cli.run_command(args)
    except (_UsageError, sweeps_cli.UsageError) as exc:
        print(f"kdsim: error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
