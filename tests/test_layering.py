"""The one-way data flow of DESIGN.md, read from the imports with ast."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "kdsim"


def imports_of(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:  # relative: resolve against the package path
                pkg = path.relative_to(ROOT.parent).with_suffix("").parts[:-node.level]
                mod = ".".join(pkg + ((mod,) if mod else ()))
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def modules(sub):
    base = ROOT / sub
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


FORBIDDEN = {
    # math never imports engines, simulation or reporting
    "theory": ("kdsim.engines", "kdsim.simulate", "kdsim.report", "kdsim.checks", "pandas", "seaborn", "matplotlib"),
    "problems": ("kdsim.engines", "kdsim.simulate", "kdsim.report", "kdsim.checks", "kdsim.theory", "pandas",
                 "seaborn", "matplotlib"),
    "estimators": ("kdsim.engines", "kdsim.simulate", "kdsim.report", "pandas"),
    "rng": ("kdsim.problems", "kdsim.theory", "kdsim.report", "pandas"),
    # kernels never import theory, stats, pandas or seaborn
    "engines": ("kdsim.theory", "kdsim.stats", "kdsim.report", "kdsim.checks", "pandas", "seaborn", "matplotlib"),
    # reports compute nothing: no simulation or theory
    "report": ("kdsim.simulate", "kdsim.engines", "kdsim.theory", "kdsim.sweeps"),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(package):
    offenders = []
    for path in modules(package):
        if not path.exists():
            continue
        for name in imports_of(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[package]):
                offenders.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_layering_detects_a_violation(tmp_path):
    # the import reader must see relative imports, or the test above could never fail
    pkg = tmp_path / "kdsim" / "theory"
    pkg.mkdir(parents=True)
    f = pkg / "x.py"
    f.write_text("from ..engines import reference\nimport pandas as pd\n")
    global ROOT
    old, ROOT = ROOT, tmp_path / "kdsim"
    try:
        names = imports_of(f)
    finally:
        ROOT = old
    assert "kdsim.engines.reference" in names and "pandas" in names
