"""``kdsim --version``, ``--help`` and ``check --list`` start fast: they import none of the heavy
packages, because the ``kdsim`` package and ``kdsim.checks`` load their contents on first use (PEP 562).
Every public name still imports as before."""
import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("numba", "scipy", "pandas", "matplotlib", "seaborn", "dask", "pyarrow")

PUBLIC = ["__version__", "LeastSquares", "SoftmaxRegression", "GLM", "LogisticRegression", "PoissonRegression",
          "DeepLinear", "Problem", "SimResult", "SimSummary", "StabilityWarning", "simulate", "LambdaCurve",
          "PairedComparison", "lambda_curve", "paired_comparison", "plot_lambda_curve", "datasets", "stats",
          "teachers", "theory"]


def _in_fresh_python(code):
    """Run ``code`` in a new interpreter; return what it printed last as JSON."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["check", "--help"], ["check", "--list"],
                                  ["sweep", "--help"], ["table", "--help"], ["plot", "--help"]],
                         ids=" ".join)
def test_light_commands_import_no_heavy_package(argv):
    code = (f"import json, sys\nfrom kdsim.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    assert _in_fresh_python(code) == []


def test_public_names_import_lazily():
    code = ("import json, sys, kdsim\n"
            "before = sorted(m for m in sys.modules if m.startswith('kdsim'))\n"
            f"names = {PUBLIC!r}\n"
            "missing = [n for n in names if n not in dir(kdsim) or n not in kdsim.__all__]\n"
            "ns = {}\n"
            "exec('from kdsim import ' + ', '.join(names), ns)\n"
            "kinds = {n: type(ns[n]).__name__ for n in names}\n"
            "print(json.dumps([before, missing, kinds, kdsim.simulate.__module__]))")
    before, missing, kinds, module = _in_fresh_python(code)
    assert before == ["kdsim", "kdsim._lazy", "kdsim._version"]   # the loader; nothing else until a name is used
    assert missing == []
    assert kinds["simulate"] == "function" and kinds["stats"] == "module" and kinds["LeastSquares"] == "ABCMeta"
    assert module == "kdsim.simulate"


def test_simulate_is_the_function_whoever_imports_its_module_first():
    # importing the submodule kdsim.simulate binds it on the package; kdsim.simulate stays the function
    code = ("import json, kdsim.checks.base, kdsim\n"
            "from kdsim.simulate import simulate\n"
            "print(json.dumps([kdsim.simulate is simulate, callable(kdsim.simulate), "
            "type(kdsim.engines).__name__]))")
    assert _in_fresh_python(code) == [True, True, "module"]


def test_unknown_attribute_is_an_attribute_error():
    import kdsim
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        kdsim.nonexistent
    assert not hasattr(kdsim, "__wrapped__")


def test_check_list_facts_read_without_import_match_the_modules():
    from kdsim import checks
    for number, name, statement in checks.describe():
        module = importlib.import_module(checks.CLAIMS[name][1])
        assert module.__doc__.strip().splitlines()[0].endswith(statement)
        assert checks.min_seeds(name) == (module.MIN_SEEDS, module.MIN_SEEDS_REASON)
    # and the module-level names of kdsim.checks still come from base
    from kdsim.checks import COLUMNS, CheckResult, make_row
    from kdsim.checks import base
    assert (COLUMNS, CheckResult, make_row) == (base.COLUMNS, base.CheckResult, base.make_row)


def test_check_help_lists_every_backend(capsys):
    from kdsim import cli
    from kdsim.engines import BACKENDS
    assert list(cli.BACKEND_HELP) == list(BACKENDS)
    with pytest.raises(SystemExit):
        cli.main(["check", "--help"])
    out = capsys.readouterr().out
    assert all(f"  {b} " in out for b in BACKENDS)


def test_heavy_imports_stay_out_of_the_cli_top_level():
    # the module-level imports of the CLI modules, read with ast: only the standard library and light kdsim modules
    light = {"argparse", "contextlib", "linecache", "os", "sys", "time", "pathlib", "__future__",
             "_version", "sweeps", "registry"}
    for path in (ROOT / "kdsim" / "cli.py", ROOT / "kdsim" / "sweeps" / "cli.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[-1] or a.name for a in node.names}
            else:
                continue
            assert names <= light, f"{path.name}: top-level import of {names - light}"
