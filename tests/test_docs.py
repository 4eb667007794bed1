"""The documentation: its links stay in the repository, its recipes run, and its site builds strictly.

* Every link of README.md and docs/ (Markdown links, reference definitions, autolinks, bare URLs,
  HTML href/src) is either relative and resolves to a file of the repository that a fresh clone
  has (not git-ignored), with its ``#anchor`` a heading of the target (GitHub's slugs), or an
  http(s) URL that does not point to this machine. Links inside code are not links.
* The Python blocks of docs/questions.md run, in order, in one namespace, in a fresh process.
* With the docs extra installed, ``.ci/docs`` (MkDocs ``--strict``: warnings are errors) passes.
"""
import functools
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")
HTML_ATTR = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.I)
BARE_URL = re.compile(r"\b(?:https?|ftp|file)://[^\s<>)\]\"'`]+", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
LINE_ANCHOR = re.compile(r"^L(\d+)(?:-L(\d+))?$")


# --------------------------------------------------------------------------- Markdown reading
def split_fences(text):
    """(prose lines with code blocks blanked, [(info string, code)]) of a Markdown text.

    Fenced blocks (``` or ~~~) are code; their lines are blanked so that line numbers stay.
    """
    prose, blocks = [], []
    fence, info, code = None, "", []
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None:
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                fence, info, code = m.group(1), m.group(2).strip(), []
                prose.append("")
            else:
                prose.append(line)
        else:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not m.group(2).strip():
                blocks.append((info, "\n".join(code) + "\n"))
                fence = None
            else:
                code.append(line)
            prose.append("")
    if fence is not None:
        raise AssertionError(f"unclosed code fence {fence!r}")
    return prose, blocks


def strip_code_spans(lines):
    """The prose with inline code removed, paragraph by paragraph (a code span may wrap)."""
    out, para = [], []

    def flush():
        if para:
            text = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", " ", "\n".join(para), flags=re.S)
            out.extend(text.split("\n"))
            para.clear()

    for line in lines:
        if line.strip():
            para.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return out


def headings(lines):
    """Heading texts of prose lines (ATX, and setext under a paragraph line)."""
    found = []
    for i, line in enumerate(lines):
        m = ATX.match(line)
        if m:
            found.append(m.group(2) or "")
        elif i and re.match(r"^ {0,3}(=+|-+)[ \t]*$", line) and lines[i - 1].strip() \
                and not lines[i - 1].lstrip().startswith(("|", "-", "*", "+", ">")) and not ATX.match(lines[i - 1]):
            found.append(lines[i - 1].strip())
    return found


def github_slug(heading):
    """GitHub's anchor of a heading: its rendered text, lower case, with letters, marks, digits,
    spaces, hyphens and underscores kept and each space made a hyphen."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)   # links: their text
    text = re.sub(r"<[^>]+>", "", text)                                           # inline HTML
    text = re.sub(r"\\(.)", r"\1", text)                                          # backslash escapes
    text = text.replace("`", "").replace("*", "")                                 # code and emphasis marks
    keep = "".join(ch for ch in text.strip().lower()
                   if unicodedata.category(ch)[0] in "LMN" or ch in " -_")
    return keep.replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors_of(path):
    """Every anchor GitHub gives the headings of a Markdown file (duplicates get -1, -2, …)."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    seen, out = {}, set()
    for heading in headings(strip_code_spans(prose)):
        slug = github_slug(heading)
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        out.add(slug)
    return out


def links_of(path):
    """[(line number, target)] of every link outside code in a Markdown file."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    lines = strip_code_spans(prose)
    text = "\n".join(lines)
    found = []

    def add(match, group=1):
        target = match.group(group).strip()
        if target.startswith("<") and target.endswith(">"):
            target = target[1:-1]
        found.append((text.count("\n", 0, match.start()) + 1, target))

    for pattern in (INLINE_LINK, REFERENCE_DEF, AUTOLINK, HTML_ATTR):
        for m in pattern.finditer(text):
            add(m)
    no_links = INLINE_LINK.sub(" ", AUTOLINK.sub(" ", HTML_ATTR.sub(" ", REFERENCE_DEF.sub(" ", text))))
    for m in BARE_URL.finditer(no_links):
        found.append((no_links.count("\n", 0, m.start()) + 1, m.group(0).rstrip(".,;:")))
    return found


# --------------------------------------------------------------------------- link rules
@functools.lru_cache(maxsize=None)
def local_hosts():
    names = {"localhost", "localhost.localdomain", "ip6-localhost", "0.0.0.0", "::", "::1"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
    return names


def is_local_host(host):
    host = (host or "").lower().rstrip(".")
    if not host or host in local_hosts() or host.endswith((".localhost", ".local")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


@functools.lru_cache(maxsize=None)
def git_ignored(path):
    """True when git ignores ``path`` (a fresh clone would not have it); False without git."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return False
    proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", str(path)], cwd=ROOT,
                          capture_output=True)
    return proc.returncode == 0


def link_problem(page, target):
    """Why ``target`` (a link of ``page``) is not acceptable, or None."""
    if SCHEME.match(target):
        parts = urlsplit(target)
        if parts.scheme.lower() not in ("http", "https"):
            return f"a {parts.scheme}: link leaves the repository (only relative links and http(s) URLs)"
        if is_local_host(parts.hostname):
            return "an http(s) URL to this machine or a local network"
        if str(ROOT) in unquote(target):
            return "an http(s) URL to a path of this machine"
        return None
    if target.startswith("//"):
        return "a protocol-relative URL"
    path_part, _, fragment = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    if path_part.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path_part) or path_part.startswith("~"):
        return "an absolute path (a path of this machine, not of the repository)"
    resolved = (page.parent / path_part).resolve() if path_part else page
    try:
        resolved.relative_to(ROOT)
    except ValueError:
        return f"leaves the repository ({resolved})"
    if not resolved.exists():
        return "no such file in the repository"
    if git_ignored(resolved):
        return "a git-ignored file (a fresh clone does not have it)"
    if fragment:
        if resolved.is_file() and resolved.suffix.lower() == ".md":
            if unquote(fragment) not in anchors_of(resolved):
                return f"no heading with anchor #{fragment} in {resolved.relative_to(ROOT)}"
        elif resolved.is_file() and LINE_ANCHOR.match(fragment):
            n_lines = len(resolved.read_text(encoding="utf-8", errors="replace").splitlines())
            if any(int(g) > n_lines for g in LINE_ANCHOR.match(fragment).groups() if g):
                return f"line anchor #{fragment} beyond the file's {n_lines} lines"
        else:
            return f"anchor #{fragment} on a file that has no headings"
    return None


# --------------------------------------------------------------------------- (a) links
def test_pages_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/theory.md", "docs/checks.md", "docs/questions.md", "docs/index.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_stay_in_the_repository_and_resolve(page):
    bad = []
    for line, target in links_of(page):
        why = link_problem(page, target)
        if why:
            bad.append(f"{page.relative_to(ROOT)}:{line}: {target!r}: {why}")
    assert not bad, "\n".join(bad)


def test_readme_and_docs_link_each_other():
    assert any(t.startswith("docs/") for _, t in links_of(ROOT / "README.md"))
    index = {t.partition("#")[0] for _, t in links_of(DOCS / "index.md")}
    assert {"theory.md", "checks.md", "questions.md", "architecture.md", "sweeps.md"} <= index


@pytest.mark.parametrize("heading,slug", [
    ("5.1 Iterates are affine in the KD weight", "51-iterates-are-affine-in-the-kd-weight"),
    ("Claim 11: digits, the paper's linear set-up", "claim-11-digits-the-papers-linear-set-up"),
    ("The `kdsim` command — *quick*", "the-kdsim-command--quick"),
    ("λ_opt and [§6](theory.md#6)", "λ_opt-and-6"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_link_rules_reject_what_leaves_the_repository(tmp_path):
    page = DOCS / "index.md"
    assert link_problem(page, "theory.md#3-constants") is None
    assert link_problem(page, "../README.md") is None
    assert link_problem(page, "https://example.org/paper") is None
    for target in ("theory.md#no-such-heading", "missing.md", "../../outside.md", "/etc/passwd",
                   "file:///etc/passwd", "http://localhost:8000/index.html", "http://127.0.0.1/x",
                   "mailto:someone@example.org", f"https://example.org{ROOT}/docs"):
        assert link_problem(page, target), target
    fake = tmp_path / "page.md"
    fake.write_text("[a](x.md) `[b](y.md)`\n\n```\n[c](z.md)\n```\nsee https://example.org/q.\n")
    assert [t for _, t in links_of(fake)] == ["x.md", "https://example.org/q"]


# --------------------------------------------------------------------------- (b) recipes
def questions_script():
    """The Python blocks of docs/questions.md, in order, as one script."""
    _, blocks = split_fences((DOCS / "questions.md").read_text(encoding="utf-8"))
    code = [body for info, body in blocks if info.split()[:1] == ["python"]]
    assert len(code) >= 5, "docs/questions.md should hold at least five Python recipes"
    return "\n\n".join(code)


def test_questions_recipes_run(tmp_path):
    pytest.importorskip("pyarrow", reason="the sweep recipe needs the dask extra (pyarrow)")
    script = tmp_path / "questions.py"
    script.write_text(questions_script(), encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    out = proc.stdout
    # a few of the printed answers the page states
    assert "StabilityWarning" in out and "trajectories diverged" in out
    assert "exact λ_opt (§5)     0.341" in out
    assert "KD − SGD: -0.01" in out
    assert "chunks of" in out and "memory_budget is 33554432 bytes" in out


# --------------------------------------------------------------------------- (c) strict build
def test_docs_build_strictly():
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="needs the docs extra: pip install -e \".[docs]\"")
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "docs")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
