"""Tables of check results as CSV, Markdown and LaTeX, and the grouping of repeated notes.

The LaTeX is pure ASCII and compiles with plain LaTeX (no package): every non-ASCII character a
table can hold is written as a LaTeX macro (``latex_escape``, ``LATEX_MATH``,
``LATEX_TEXT``); a character without one is an error that names it.
"""
from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from ..checks.base import COLUMNS

# ---------------------------------------------------------------- LaTeX
#: characters written in math mode (inside ``\ensuremath{…}``)
LATEX_MATH = {
    "ĉ": r"\hat{c}",                       # an estimate of c (precomposed c with circumflex)
    # Greek (capitals that look Latin are Latin letters in LaTeX)
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\varepsilon", "ϵ": r"\epsilon",
    "ζ": r"\zeta", "η": r"\eta", "θ": r"\theta", "ϑ": r"\vartheta", "ι": r"\iota", "κ": r"\kappa",
    "λ": r"\lambda", "μ": r"\mu", "ν": r"\nu", "ξ": r"\xi", "ο": "o", "π": r"\pi", "ρ": r"\rho",
    "ϱ": r"\varrho", "σ": r"\sigma", "ς": r"\varsigma", "τ": r"\tau", "υ": r"\upsilon", "φ": r"\varphi",
    "ϕ": r"\phi", "χ": r"\chi", "ψ": r"\psi", "ω": r"\omega",
    "Α": "A", "Β": "B", "Γ": r"\Gamma", "Δ": r"\Delta", "Ε": "E", "Ζ": "Z", "Η": "H", "Θ": r"\Theta",
    "Ι": "I", "Κ": "K", "Λ": r"\Lambda", "Μ": "M", "Ν": "N", "Ξ": r"\Xi", "Ο": "O", "Π": r"\Pi", "Ρ": "P",
    "Σ": r"\Sigma", "Τ": "T", "Υ": r"\Upsilon", "Φ": r"\Phi", "Χ": "X", "Ψ": r"\Psi", "Ω": r"\Omega",
    # operators and relations
    "−": "-", "±": r"\pm", "∓": r"\mp", "×": r"\times", "·": r"\cdot", "⋅": r"\cdot", "∗": "*", "÷": r"\div",
    "≤": r"\le", "≥": r"\ge", "≈": r"\approx", "≠": r"\ne", "≡": r"\equiv", "∼": r"\sim", "≃": r"\simeq",
    "≅": r"\cong", "≪": r"\ll", "≫": r"\gg", "≼": r"\preceq", "⪯": r"\preceq", "≽": r"\succeq",
    "⪰": r"\succeq", "∝": r"\propto", "∞": r"\infty", "∇": r"\nabla", "∂": r"\partial", "∈": r"\in",
    "∉": r"\notin", "⊂": r"\subset", "⊆": r"\subseteq", "∪": r"\cup", "∩": r"\cap", "⊗": r"\otimes",
    "⊙": r"\odot", "⊕": r"\oplus", "∘": r"\circ", "√": r"\surd", "∑": r"\sum", "∏": r"\prod", "∫": r"\int",
    "∀": r"\forall", "∃": r"\exists", "∅": r"\emptyset", "⊤": r"\top", "⊥": r"\perp", "•": r"\bullet",
    "→": r"\rightarrow", "←": r"\leftarrow", "↔": r"\leftrightarrow", "↦": r"\mapsto", "⇒": r"\Rightarrow",
    "⇔": r"\Leftrightarrow", "↑": r"\uparrow", "↓": r"\downarrow",
    "‖": r"\|", "∥": r"\|", "∣": "|", "⟨": r"\langle", "⟩": r"\rangle", "⌈": r"\lceil", "⌉": r"\rceil",
    "⌊": r"\lfloor", "⌋": r"\rfloor", "⋯": r"\cdots", "⋮": r"\vdots", "⋱": r"\ddots",
    "′": r"{}^{\prime}", "″": r"{}^{\prime\prime}", "°": r"{}^{\circ}",
    # super- and subscripts
    "⁰": "^0", "¹": "^1", "²": "^2", "³": "^3", "⁴": "^4", "⁵": "^5", "⁶": "^6", "⁷": "^7", "⁸": "^8",
    "⁹": "^9", "⁺": "^+", "⁻": "^-", "ⁿ": "^n", "ᵀ": r"^{\top}", "₀": "_0", "₁": "_1", "₂": "_2", "₃": "_3",
    "₄": "_4", "₅": "_5", "₆": "_6", "₇": "_7", "₈": "_8", "₉": "_9",
    # letters and fractions
    "ℓ": r"\ell", "𝓛": r"\mathcal{L}", "ℒ": r"\mathcal{L}", "𝒯": r"\mathcal{T}", "𝒩": r"\mathcal{N}",
    "ℝ": r"\mathbf{R}", "𝔼": r"\mathbf{E}", "½": r"\frac{1}{2}", "¼": r"\frac{1}{4}", "¾": r"\frac{3}{4}",
    "⅛": r"\frac{1}{8}", "⅓": r"\frac{1}{3}",
}
#: characters written in text mode
LATEX_TEXT = {
    "§": r"\S{}", "—": "---", "–": "--", "…": r"\ldots{}", "‘": "`", "’": "'", "“": "``", "”": "''",
    "\u00a0": "~", "\u2009": r"\,", "\u202f": r"\,", "á": r"\'a", "é": r"\'e", "è": r"\`e", "ü": r"\"u", "ö": r"\"o",
    "ä": r"\"a", "Ã": r"\~A", "ñ": r"\~n", "ū": r"\=u", "Ḡ": r"\=G", "ḡ": r"\=g", "ỹ": r"\~y", "✓": "yes",
    "✗": "no",
}
#: combining accents: the macro applied to the character before them
LATEX_ACCENTS = {"\u0302": r"\hat", "\u0303": r"\tilde", "\u0304": r"\bar", "\u0307": r"\dot", "\u0308": r"\ddot"}
#: ASCII characters that LaTeX's text mode treats specially
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
                 "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}", "<": r"\ensuremath{<}",
                 ">": r"\ensuremath{>}", "|": r"\ensuremath{|}"}


class LatexEscapeError(ValueError):
    """A character without a LaTeX macro in ``LATEX_MATH`` or ``LATEX_TEXT``."""


def _unmapped(chars, text):
    names = " + ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in chars)
    return LatexEscapeError(f"no LaTeX macro for {chars!r} ({names}) in {text!r}; "
                            "add it to kdsim.report.tables.LATEX_MATH or LATEX_TEXT")


def latex_escape(text):
    """``text`` as pure-ASCII LaTeX for text mode: the specials escaped, Greek letters and maths
    symbols as ``\\ensuremath{…}`` macros (so the result works in text and in math mode), a
    combining accent on the character before it (λ̂ → ``\\ensuremath{\\hat{\\lambda}}``).

    Raises ``LatexEscapeError`` (a ValueError) for a character with no macro.
    """
    text = str(text)
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        accent = text[i + 1] if i + 1 < len(text) and text[i + 1] in LATEX_ACCENTS else None
        if accent is not None:
            if ch in LATEX_MATH:
                base = LATEX_MATH[ch]
            elif ch.isascii() and ch.isalnum():
                base = ch
            else:
                raise _unmapped(ch + accent, text)
            out.append(rf"\ensuremath{{{LATEX_ACCENTS[accent]}{{{base}}}}}")
            i += 2
            continue
        if ch in LATEX_SPECIAL:
            out.append(LATEX_SPECIAL[ch])
        elif ch.isascii():
            out.append(ch)
        elif ch in LATEX_MATH:
            out.append(rf"\ensuremath{{{LATEX_MATH[ch]}}}")
        elif ch in LATEX_TEXT:
            out.append(LATEX_TEXT[ch])
        elif ch in LATEX_ACCENTS:
            raise _unmapped(ch, text)
        else:
            raise _unmapped(ch, text)
        i += 1
    return "".join(out)


def latex_number(value, digits=4):
    """A number for a LaTeX table: ``digits`` significant digits, powers of ten as ``\\times10^{k}``."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--"
    v = float(value)
    if math.isinf(v):
        return r"$\infty$" if v > 0 else r"$-\infty$"
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    text = f"{v:.{digits}g}"
    m = re.fullmatch(r"(-?[\d.]+)e([-+])0*(\d+)", text)
    if m:
        mant, sign, exp = m.groups()
        return rf"${mant}\times10^{{{'-' if sign == '-' else ''}{exp}}}$"
    return text


def to_latex(frame, wide=("instance", "quantity"), widths=("3.6cm", "4.4cm")):
    """A ``tabular`` of ``frame`` in pure ASCII (no LaTeX package needed): the ``wide`` columns as
    paragraph columns of ``widths``, numbers right-aligned with powers of ten in maths."""
    cols = list(frame.columns)
    width = dict(zip(wide, widths))
    def align(c):
        if c in width:
            return f"p{{{width[c]}}}"
        if c in ("relation", "passed"):
            return "c"
        return "r" if frame[c].dtype.kind in "iuf" else "l"

    spec = "".join(align(c) for c in cols)
    lines = [r"\begin{tabular}{" + spec + "}", r"\hline",
             " & ".join(latex_escape(c) for c in cols) + r" \\", r"\hline"]
    for row in frame.itertuples(index=False):
        cells = [latex_number(v) if isinstance(v, (int, float, bool, np.number, np.bool_)) else latex_escape(v)
                 for v in row]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- notes
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![A-Za-z_\d])")
_SLOT_NAME = re.compile(r"([^\s(;,:]+\s*[=≈]\s*|[^\s(;,:=]+ )$")


def _template(message):
    """(text parts, numbers) of a message: the numbers cut out of it."""
    parts, numbers, pos = [], [], 0
    for m in _NUMBER.finditer(message):
        parts.append(message[pos:m.start()])
        numbers.append(m.group(0))
        pos = m.end()
    parts.append(message[pos:])
    return tuple(parts), numbers


def _splits(note):
    """Candidate (subject, message) splits of a note at each ": " (and the whole note, no subject)."""
    out = [("", note)]
    for m in re.finditer(": ", note):
        out.append((note[:m.start()], note[m.end():]))
    return out


def group_notes(notes, min_count=2):
    """Group notes that say the same thing about different instances into one note each.

    A note reads "subject: message"; notes whose messages agree once their numbers are left out
    (``min_count`` or more of them) become one note: the message, with the numbers that all of
    them share and "…" where they differ, the count, and each subject with its own values of the
    differing numbers. Other notes are kept as they are; the order is that of each group's first
    note.

    >>> group_notes(["a: T2 not applicable, γ = 0.1", "b: T2 not applicable, γ = 0.2", "c: other"])
    ['T2 not applicable, γ = … — 2 instances: a (γ = 0.1) | b (γ = 0.2)', 'c: other']
    """
    notes = [str(n) for n in notes]
    counts = {}
    for note in notes:
        for _, message in _splits(note)[1:]:
            key = _template(message)[0]
            counts[key] = counts.get(key, 0) + 1
    chosen = []
    for note in notes:
        best = None
        for subject, message in _splits(note)[1:]:
            key = _template(message)[0]
            if counts[key] >= min_count and (best is None or counts[key] > counts[best[2]]):
                best = (subject, message, key)
        if best is None:
            key = ("", note)
            chosen.append((None, note, key))
        else:
            chosen.append(best)
    groups = {}
    for subject, message, key in chosen:
        groups.setdefault(key, []).append((subject, message))
    out = []
    for key, members in groups.items():
        if len(members) < min_count or members[0][0] is None:
            if members[0][0] is None and len(members) >= min_count:
                out.append(f"{members[0][1]} (×{len(members)})")
            else:
                out.extend(f"{s}: {m}" if s is not None else m for s, m in members)
            continue
        parts = key
        values = [_template(m)[1] for _, m in members]
        same = [len({v[k] for v in values}) == 1 for k in range(len(parts) - 1)]
        text = parts[0]
        for k in range(len(parts) - 1):
            text += (values[0][k] if same[k] else "…") + parts[k + 1]
        items = []
        for (subject, _), vals in zip(members, values):
            extra = [f"{_slot_name(parts[k])}{vals[k]}" for k in range(len(parts) - 1) if not same[k]]
            items.append(f"{subject} ({', '.join(extra)})" if extra else subject)
        out.append(f"{text} — {len(members)} instances: " + " | ".join(items))
    return out


def _slot_name(text):
    """The "name = " that ends ``text`` (the text before a number), or ""."""
    m = _SLOT_NAME.search(text)
    return m.group(1) if m else ""


# ---------------------------------------------------------------- check tables
def summary_frame(results):
    """One row per check: claim, name, rows passed, verdict, seconds."""
    return pd.DataFrame([{"claim": r.claim, "check": r.name, "rows": len(r.rows),
                          "passed_rows": sum(row["passed"] for row in r.rows),
                          "verdict": "PASS" if r.passed else "FAIL", "seconds": round(r.seconds, 2)}
                         for r in results])


def _markdown(frame):
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        # a "|" inside a cell (|MC − exact| / SE) is escaped, or it would split the cell
        # a NaN (a ratio that means nothing) is a blank cell
        cells = [("" if math.isnan(v) else f"{v:.4g}") if isinstance(v, float) else str(v).replace("|", r"\|")
                 for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(result, out_dir):
    """Write one check's table as CSV, Markdown and LaTeX (pure ASCII, see ``to_latex``); return
    the paths. The Markdown lists the check's notes, repeated ones grouped (``group_notes``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = result.frame()[COLUMNS]
    stem = f"claim{result.claim:02d}_{result.name}"
    paths = {"csv": out / f"{stem}.csv", "md": out / f"{stem}.md", "tex": out / f"{stem}.tex"}
    tex = (f"% kdsim: claim {result.claim} ({latex_escape(result.name)}). Pure ASCII; needs no LaTeX package.\n"
           f"% {latex_escape(result.statement)}\n" + to_latex(frame))
    frame.to_csv(paths["csv"], index=False)
    notes = "".join(f"- {note}\n" for note in group_notes(result.notes))
    notes = f"\nNotes:\n\n{notes}" if notes else ""
    paths["md"].write_text(f"# Claim {result.claim}: {result.name}\n\n{result.statement}\n\n{_markdown(frame)}{notes}")
    paths["tex"].write_text(tex, encoding="ascii")
    return paths


def write_summary(results, out_dir):
    """Summary of all checks as CSV and Markdown; return the Markdown path."""
    out = Path(out_dir)
    frame = summary_frame(results)
    frame.to_csv(out / "summary.csv", index=False)
    path = out / "summary.md"
    path.write_text(_markdown(frame))
    return path
