"""The ``kdsim`` command line: ``kdsim check [NAME ...|all]``, ``kdsim sweep | table | plot``.

Exit codes: 0 success (every check passed), 1 a check failed (or some sweep cells failed), 2 a
fault on the user's side, 130 interrupted. Errors are one line on stderr; ``--debug`` re-raises
them with the traceback.

What counts as the user's side (``user_fault``): a bad option or argument (argparse, and the
ValueError / TypeError kdsim raises itself when it validates an argument), an OSError (a path that
is a folder, missing, not writable, a read-only file system, a full disk), a missing optional
package (ImportError, e.g. ``--backend cupy`` without CuPy) or no usable GPU, a run that the
memory planner refuses (MemoryError from ``kdsim.memory``), a sweep usage error, a results folder
held by another sweep, and a corrupted data file (``kdsim.datasets.DatasetChecksumError``).
Anything else is a bug in kdsim: one line naming the exception, exit code 1, and the
traceback with ``--debug``.

``kdsim check`` shows its progress on stderr (``-q``: none), rewrites ``OUT/index.md`` after each
check, and on Ctrl-C says in one line which checks finished. ``--version``, ``--help`` and
``check --list`` import no numerical package, so they answer at once.
"""
from __future__ import annotations

import argparse
import contextlib
import linecache
import os
import sys
import time
from pathlib import Path

# Only light modules at the top: `kdsim --version`, `--help` and `check --list` must not load
# numba, scipy, pandas or matplotlib (each command imports what it needs when it runs).
from ._version import __version__
from .sweeps import cli as sweeps_cli


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with kdsim's one-line errors (exit code 2) instead of the usage block."""

    def error(self, message):
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _positive_int(text):
    """argparse type: an integer >= 1 (kdsim._validate loads numpy: imported when the option is given)."""
    from ._validate import positive_int_arg
    return positive_int_arg(text)


_DEBUG_HELP = "on an error, show the traceback (for reporting a bug)"

#: what each backend is, for `check --help`. Not read from kdsim.engines.BACKENDS, which loads the
#: engines; tests/test_cli_start.py keeps the two in step.
BACKEND_HELP = {
    "auto": "numba where it has kernels for the problem, else numpy (default)",
    "numpy": "the reference engine",
    "numba": "compiled CPU engine",
    "cuda": "NVIDIA GPU (numba-cuda kernels), needs pip install kdsim[gpu]",
    "cupy": "another name for cuda",
}


def _parser():
    parser = _Parser(prog="kdsim", description="Numerical validation of knowledge-distillation theory.")
    parser.add_argument("--version", action="version", version=f"kdsim {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chk = sub.add_parser("check", help="run theory checks (THEORY.md §8) and write tables and plots",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Run theory checks and write tables (CSV, Markdown, LaTeX) and plots.\n"
                                     "OUT/index.md is rewritten after each check, so an interrupted run (Ctrl-C,\n"
                                     "exit code 130) leaves an index of the checks that finished.",
                         epilog="backends:\n" + "".join(f"  {b:8s} {text}\n" for b, text in BACKEND_HELP.items()))
    chk.add_argument("names", nargs="*", default=["all"], metavar="NAME",
                     help="check names or claim numbers, or 'all' (default)")
    chk.add_argument("--list", action="store_true", help="list the checks and exit")
    chk.add_argument("--quick", action="store_true", help="reduced sizes (a couple of minutes)")
    chk.add_argument("--seeds", type=_positive_int, default=None,
                     help="seeds per Monte Carlo estimate (each check has a minimum: see --list)")
    chk.add_argument("--backend", default="auto", metavar="BACKEND",
                     help=f"simulation backend: {', '.join(BACKEND_HELP)} (default auto; listed below)")
    chk.add_argument("--out", default="kdsim-results", help="results folder (default: ./kdsim-results)")
    chk.add_argument("--format", default="png", choices=("png", "pdf", "svg"), help="figure format (default png)")
    chk.add_argument("--dpi", type=_positive_int, default=None, help="resolution of PNG figures (default 200)")
    chk.add_argument("-q", "--quiet", action="store_true",
                     help="no progress on stderr (verdicts, results and errors still print)")
    rep = sub.add_parser("replicate", help="replicate an experiment of the paper's code with confidence bands",
                         description="Replicate an experiment of the authors' code with kdsim's simulator and "
                                     "write its tidy results (CSV), report (Markdown, with every difference from "
                                     "the paper's setting) and figure.")
    rep.add_argument("name", choices=("kdvr-linear",), help="kdvr-linear: the release linear experiment on digits")
    rep.add_argument("--quick", action="store_true", help="reduced sizes (4 epochs, 16 seeds)")
    rep.add_argument("--seeds", type=_positive_int, default=None, help="seeds (default 256)")
    rep.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default 100)")
    rep.add_argument("--backend", default="auto", metavar="BACKEND",
                     help=f"simulation backend: {', '.join(BACKEND_HELP)} (default auto)")
    rep.add_argument("--out", default="kdsim-results", help="results folder (default: ./kdsim-results)")
    rep.add_argument("--format", default="png", choices=("png", "pdf", "svg"), help="figure format (default png)")
    rep.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
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


def _run_replicate_command(args):
    from .replicate import REPLICATIONS
    out = _writable_dir(args.out)
    if args.seeds is not None and args.seeds < 2:
        raise _UsageError("--seeds must be at least 2 (confidence intervals need two seeds)")
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"kdsim: {msg}", file=sys.stderr, flush=True))
    rep = REPLICATIONS[args.name](quick=args.quick, seeds=args.seeds, epochs=args.epochs, backend=args.backend,
                                  progress=say)
    paths = rep.save(out, fmt=args.format)
    print(rep.table().to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    for p in paths:
        print(f"wrote {p}")
    return 0


def _run_check_command(args):
    from . import checks

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
    from .engines import BACKENDS

    if args.backend not in BACKENDS:
        raise _UsageError(f"unknown backend {args.backend!r}; valid values: {', '.join(BACKENDS)}")
    if args.backend in ("cuda", "cupy"):          # say so now, not after the first checks have run
        from .engines import cuda_gpu
        cuda_gpu.require()
    names = list(dict.fromkeys(names))
    if args.seeds is not None:                    # refuse before any check runs
        for name in names:
            fewest, why = checks.min_seeds(name)
            if args.seeds < fewest:
                raise _UsageError(f"--seeds must be at least {fewest} for check {name} ({why}); got {args.seeds}")
    out = _writable_dir(args.out)

    from .checks.base import report_simulations
    from .report import plots, tables

    header = (f"# kdsim check results\n\nkdsim {__version__}, backend {args.backend}, "
              f"{'quick' if args.quick else 'full'} size, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    results, sections = [], []
    index = out / "index.md"
    progress = _Progress(names, quiet=args.quiet)
    name = names[0]
    # an index of this run from the start: a run that is stopped leaves none of an earlier one
    _write_index(index, f"{header}\nIn progress: 0 of {len(names)} checks finished.\n", None, sections)
    try:
        for k, name in enumerate(names, 1):
            progress.start(k, name)
            divergences = _Divergences()

            def observe(event, result, divergences=divergences):
                divergences.add(result)
                progress.simulation(event)

            with report_simulations(observe):
                result = checks.get_check(name)(quick=args.quick, seeds=args.seeds, backend=args.backend)
            progress.write(result.verdict())
            if not result.passed:
                progress.write(result.table())
            diverged = divergences.line()
            if diverged:
                progress.write(f"note: claim {result.claim} {result.name}: {diverged}")
            sections.append(_index_section(result, diverged, out, plots, tables, args.format, args.dpi))
            results.append(result)
            progress.finish()
            running = f"\nIn progress: {len(results)} of {len(names)} checks finished.\n"
            _write_index(index, header + (running if len(results) < len(names) else ""),
                         tables.write_summary(results, out), sections)
    except KeyboardInterrupt:
        progress.close()                          # before the message: the bar would overwrite it
        finished = ", ".join(r.name for r in results) or "none"
        status = f"{len(results)} of {len(names)} checks finished ({finished})"
        summary = tables.write_summary(results, out) if results else None
        _write_index(index, f"{header}\nInterrupted during check {name}: {status}.\n", summary, sections)
        if getattr(args, "debug", False):
            raise
        print(f"kdsim: interrupted during check {name}; {status}; index: {index.resolve()}", file=sys.stderr)
        return 130
    finally:
        progress.close()
    print()
    print(tables.summary_frame(results).to_string(index=False))
    failed = [r.name for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)}/{len(results)} checks passed; results in {out.resolve()}/index.md")
    return 1 if failed else 0


def _index_section(result, divergence, out, plots, tables, fmt="png", dpi=None):
    """The Markdown of one finished check in index.md (its tables and figures are written here)."""
    paths = tables.write_tables(result, out)
    links = " · ".join(f"[{kind}]({p.name})" for kind, p in paths.items())
    text = [f"\n## Claim {result.claim}: {result.name} — {'PASS' if result.passed else 'FAIL'}\n\n"
            f"{result.statement}\n\nTables: {links}\n"]
    notes = list(result.notes) + ([divergence] if divergence else [])
    text.extend(f"\n- {note}" for note in tables.group_notes(notes))
    if notes:
        text.append("\n")
    if result.curves:
        fig = plots.convergence_plot(result.curves, out / f"claim{result.claim:02d}_{result.name}.png",
                                     plots.check_title(result), fmt=fmt, dpi=dpi)
        text.append(f"\n![claim {result.claim}]({fig.name})\n")
    for figure in result.figures:
        fig = plots.render(figure, out, fmt=fmt, dpi=dpi)
        text.append(f"\n![{figure['title']}]({fig.name})\n")
    return "".join(text)


def _write_index(path, header, summary, sections):
    """Write index.md through a temporary file and a rename, so that it is never half written."""
    text = header + (f"\n[Summary]({summary.name})\n" if summary is not None else "") + "".join(sections)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _clock(seconds):
    """4:05, or 1:02:03."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Progress:
    """Progress of ``kdsim check`` on stderr, over the selected checks, with an ETA.

    A tqdm bar when tqdm is installed and stderr is a terminal; otherwise plain lines, which read
    well in a log: one when a check starts and, inside a long check, at most one every
    ``every`` seconds as its simulations finish. ``quiet``: nothing. Results go through
    ``write``, which keeps them clear of the bar.
    """

    def __init__(self, names, quiet=False, stream=None, every=15.0):
        from .checks import CLAIMS

        self.names, self.quiet, self.every = names, quiet, every
        self.stream = sys.stderr if stream is None else stream
        self.numbers = {n: CLAIMS[n][0] for n in names}
        self.t0 = self.last = time.monotonic()
        self.done = self.started = self.finished_sims = 0
        self.name = ""
        self.bar = None
        if not quiet and self.stream.isatty():
            try:
                from tqdm import tqdm
            except ImportError:                  # tqdm is optional: plain lines instead
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=len(names), unit="check", file=self.stream, dynamic_ncols=True, leave=False)

    def start(self, k, name):
        self.name, self.check_t0 = name, time.monotonic()
        self.started = self.finished_sims = 0
        if self.bar is not None:
            self.bar.set_description_str(f"claim {self.numbers[name]} {name}")
        elif not self.quiet:
            elapsed = time.monotonic() - self.t0
            eta = f", ETA {_clock(elapsed / self.done * (len(self.names) - self.done))}" if self.done else ""
            self._line(f"[{k}/{len(self.names)}] claim {self.numbers[name]} {name} ... "
                       f"(elapsed {_clock(elapsed)}{eta})")

    def simulation(self, event):
        """A simulation of the running check started ("start") or finished ("done")."""
        if event == "start":
            self.started += 1
        else:
            self.finished_sims += 1
        if self.bar is not None:
            if event == "start":                  # they run one after the other: this is the one running
                self.bar.set_postfix_str(f"simulation {self.started}")
        elif not self.quiet and event == "done" and time.monotonic() - self.last >= self.every:
            self._line(f"      {self.name}: {self.finished_sims} simulations done, "
                       f"{_clock(time.monotonic() - self.check_t0)} in this check")

    def finish(self):
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str("")
            self.bar.update()

    def write(self, text):
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _line(self, text):
        print(text, file=self.stream, flush=True)
        self.last = time.monotonic()


class _Divergences:
    """Diverged trajectories among the simulations of one check, told in one line."""

    def __init__(self):
        self.simulations = self.runs = self.diverged = self.trajectories = 0
        self.limits = set()

    def add(self, result):
        mask = getattr(result, "diverged", None)         # None before a simulation ran
        if mask is None:
            return
        self.simulations += 1
        self.trajectories += int(mask.size)
        count = int(mask.sum())
        if count:
            self.runs += 1
            self.diverged += count
            limit = (getattr(result, "stability", None) or {}).get("limit")
            if limit is not None:
                self.limits.add(float(limit))

    def line(self):
        """The line; empty when nothing diverged."""
        if not self.diverged:
            return ""
        text = (f"{self.diverged} of {self.trajectories} trajectories diverged in {self.runs} of "
                f"{self.simulations} simulations")
        if self.limits:
            lo, hi = min(self.limits), max(self.limits)
            text += (f"; largest stable step γ_c = {lo:.4g}" if lo == hi
                     else f"; largest stable steps γ_c = {lo:.4g} to {hi:.4g}")
        return text


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
        if args.command == "replicate":
            return _run_replicate_command(args)
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
