"""The one-way data flow of kdsim, read from the source with ast (kdsim is never imported).

problem → teacher → estimator → rng / engine → simulate → result → stats → check → report;
theory depends on problems and estimators only; sweeps and cli sit on top.

* FORBIDDEN maps a path under kdsim/ (a directory means every module under it) to import
  prefixes it must not use; a name is forbidden if it equals a prefix or starts with prefix + ".".
  Every listed path must exist, and every module must be covered by a row or by ANYTHING_GOES.
* Relative imports are resolved; `from pkg import name` is an edge to pkg.name when that is a
  module, else to pkg. Imports inside functions count; those under `if TYPE_CHECKING:` do not.
* There is no import cycle among kdsim modules, lazy (function-level) imports included.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "kdsim"

PLOTTING = ("pandas", "seaborn", "matplotlib")
LEAF = ("kdsim.problems", "kdsim.engines", "kdsim.simulate", "kdsim.plan", "kdsim.results", "kdsim.stats",
        "kdsim.theory", "kdsim.checks", "kdsim.report", "kdsim.sweeps", "kdsim.cli", "kdsim.teachers",
        "kdsim.datasets") + PLOTTING
FORBIDDEN = {
    "engines": ("kdsim.problems", "kdsim.simulate", "kdsim.theory", "kdsim.stats", "kdsim.results",
                "kdsim.checks", "kdsim.report", "kdsim.sweeps", "kdsim.cli", "kdsim.teachers",
                "kdsim.datasets") + PLOTTING,
    "kernelspec.py": LEAF,
    "rng.py": LEAF,
    "estimators.py": LEAF,
    "schedules.py": LEAF,
    "moments.py": LEAF,
    "memory.py": LEAF,
    "_lazy.py": LEAF,
    "_validate.py": LEAF,
    "plan.py": ("kdsim.engines", "kdsim.simulate", "kdsim.results", "kdsim.stats", "kdsim.theory",
                "kdsim.checks", "kdsim.report", "kdsim.sweeps", "kdsim.cli") + PLOTTING,
    "problems": ("kdsim.engines", "kdsim.simulate", "kdsim.plan", "kdsim.results", "kdsim.stats",
                 "kdsim.theory", "kdsim.checks", "kdsim.report", "kdsim.sweeps", "kdsim.cli",
                 "kdsim.teachers", "kdsim.datasets") + PLOTTING,
    "theory": ("kdsim.engines", "kdsim.simulate", "kdsim.results", "kdsim.stats", "kdsim.checks",
               "kdsim.report", "kdsim.sweeps", "kdsim.cli") + PLOTTING,
    "results.py": ("kdsim.engines", "kdsim.simulate", "kdsim.theory", "kdsim.checks", "kdsim.sweeps", "kdsim.cli"),
    "stats.py": ("kdsim.engines", "kdsim.simulate", "kdsim.checks", "kdsim.report", "kdsim.sweeps", "kdsim.cli"),
    "simulate.py": ("kdsim.checks", "kdsim.report", "kdsim.sweeps", "kdsim.cli", "kdsim.stats"),
    "checks": ("kdsim.sweeps", "kdsim.cli"),
    "api.py": ("kdsim.engines", "kdsim.sweeps", "kdsim.cli"),
    "report": ("kdsim.simulate", "kdsim.engines", "kdsim.theory", "kdsim.sweeps", "kdsim.cli"),
    "sweeps": ("kdsim.cli",),
}
# top-level modules that may import anything (they are not in the table, and need not exist)
ANYTHING_GOES = ("__init__.py", "cli.py", "_version.py", "teachers.py", "datasets.py", "replicate.py")


def module_name(root, path):
    """kdsim/engines/reference.py -> kdsim.engines.reference; a package is named by its __init__."""
    parts = (root.name,) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(root, name):
    parts = name.split(".")
    if parts[0] != root.name:
        return False
    base = root.joinpath(*parts[1:])
    return (base / "__init__.py").is_file() or (len(parts) > 1 and base.with_suffix(".py").is_file())


def _type_checking(test):
    return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"


def imports_of(root, path):
    """[(imported module, line, lazy)] of one file; lazy means inside a function."""
    me = module_name(root, path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found = []

    def walk(nodes, lazy):
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node.test):
                walk(node.orelse, lazy)
                continue
            if isinstance(node, ast.Import):
                found.extend((a.name, node.lineno, lazy) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    found.append((sub if is_module(root, sub) else base, node.lineno, lazy))
            walk(ast.iter_child_nodes(node), lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))

    walk(ast.parse(path.read_text(), str(path)).body, False)
    return [edge for edge in dict.fromkeys(found) if edge[0] != me]


def import_graph(root, lazy_too=True):
    """{module: {imported kdsim module: 'file:line'}}, over all edges or module-level ones only."""
    graph = {}
    for path in sorted(root.rglob("*.py")):
        edges = graph.setdefault(module_name(root, path), {})
        for name, line, lazy in imports_of(root, path):
            if is_module(root, name) and (lazy_too or not lazy):
                edges.setdefault(name, f"{path.relative_to(root.parent)}:{line}" + (" (in a function)" if lazy else ""))
    return graph


def find_cycle(graph):
    """One cycle as [m0, m1, ..., m0] (depth-first search), or None."""
    state, stack = {}, []

    def dfs(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := dfs(n)):
                return cycle
        state[m] = "done"
        stack.pop()

    for m in sorted(graph):
        if m not in state and (cycle := dfs(m)):
            return cycle
    return None


def check_row(root, rel, forbidden):
    """Problems with one row of the table: the path is missing, or a module imports a forbidden name."""
    base = root / rel
    if not base.exists():
        return [f"{root.name}/{rel} is listed in the layering table but does not exist"]
    files = sorted(base.rglob("*.py")) if base.is_dir() else [base]
    return [f"{path.relative_to(root.parent)}:{line} imports {name}" + (" (in a function)" if lazy else "")
            for path in files for name, line, lazy in imports_of(root, path)
            if any(name == bad or name.startswith(bad + ".") for bad in forbidden)]


def uncovered(root, table):
    """Modules under root that no row of the table and no ANYTHING_GOES entry governs."""
    rows = [root / rel for rel in table]
    return [p.relative_to(root).as_posix() for p in sorted(root.rglob("*.py"))
            if p.relative_to(root).as_posix() not in ANYTHING_GOES and not any(p == r or r in p.parents for r in rows)]


def describe(graph, cycle):
    return " -> ".join(f"{a} [{graph[a][b]}]" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


@pytest.mark.parametrize("rel", sorted(FORBIDDEN))
def test_layering(rel):
    problems = check_row(ROOT, rel, FORBIDDEN[rel])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("lazy_too", [True, False], ids=["all-imports", "module-level-imports"])
def test_no_import_cycle(lazy_too):
    graph = import_graph(ROOT, lazy_too)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + describe(graph, cycle)


def test_every_module_is_covered():
    assert not uncovered(ROOT, FORBIDDEN), f"modules with no layering rule: {uncovered(ROOT, FORBIDDEN)}"


def test_the_checker_catches_planted_violations(tmp_path):
    root = tmp_path / "kdsim"
    files = {
        "__init__.py": "",
        "_validate.py": "",
        "engines/__init__.py": "from . import numba_cpu\nfrom .. import _validate as V\n",
        "engines/numba_cpu.py": "from ..theory import bounds\nfrom .plan import Plan\n",  # (a) relative
        "engines/plan.py": "",
        "theory/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..engines import plan\n",
        "theory/bounds.py": "class B:\n    def f(self):\n        import pandas.io\n",  # (b) in a function
        "a.py": "from . import b\n",  # (c) a -> b -> c -> a, one edge lazy
        "b.py": "def g():\n    from .c import thing\n",
        "c.py": "import kdsim.a\n",
        "simulate.py": "from .plan import Plan\n",
        "newmod.py": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    graph = import_graph(root)
    assert set(graph["kdsim.engines"]) == {"kdsim.engines.numba_cpu", "kdsim._validate"}
    assert set(graph["kdsim.engines.numba_cpu"]) == {"kdsim.theory.bounds", "kdsim.engines.plan"}
    assert imports_of(root, root / "simulate.py") == [("kdsim.plan", 1, False)]
    assert check_row(root, "engines", ("kdsim.theory",)) == ["kdsim/engines/numba_cpu.py:1 imports kdsim.theory.bounds"]
    assert check_row(root, "theory", ("kdsim.engines", "pandas")) == [
        "kdsim/theory/bounds.py:3 imports pandas.io (in a function)"]
    assert find_cycle(graph) == ["kdsim.a", "kdsim.b", "kdsim.c", "kdsim.a"]
    assert find_cycle(import_graph(root, lazy_too=False)) is None
    missing = check_row(root, "plan.py", ())  # (d) a listed path that does not exist
    assert missing == ["kdsim/plan.py is listed in the layering table but does not exist"]
    table = {"engines": (), "theory": (), "_validate.py": ()}
    assert uncovered(root, table) == ["a.py", "b.py", "c.py", "newmod.py", "simulate.py"]
