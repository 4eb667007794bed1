"""Paper-ready figures from the curves and figure requests a check returns (no computation here).

Every figure fits a page: at most ``MAX_COLUMNS`` panels a row, ``PAGE_WIDTH`` inches
wide, legends outside the data (below the panels; a colour bar beside them for many series),
maths set with matplotlib's mathtext (``mathtext``), and written as PNG, PDF or SVG
(``fmt``, ``dpi``). Each ``*_plot`` function writes a file; its ``*_figure`` twin returns the
matplotlib Figure (for a notebook, or to adjust before saving).

Curves (``CheckResult.curves``) are long frames with the columns instance (one panel each),
method, step, quantity, mean, ci_low, ci_high and, optionally:

* ``series``: the label of a colour. Curves with the same series share a colour in every panel
  (a Monte Carlo curve and the theory it is compared with, e.g. "λ = 0.4"); ``method`` then says
  what a curve is ("Monte Carlo", "exact recursion (§5)") and sets its line style. Without
  ``series`` each method is a colour of its own.
* ``series_value``: a number per series (λ, γ); with more than ``MAX_LEGEND_SERIES`` series
  the colours come from a continuous colour map with a colour bar instead of a legend.
* ``kind``: "mc" (solid, with its confidence band), "run" (solid: a deterministic run), "theory"
  (dashed) or "bound" (dash-dot);
  without it a method named with "exact", "theory", "flow", "first order" is theory and one named
  with "bound" a bound.

A curve frame's ``attrs`` may carry ``title`` (the figure's title, in words), ``series_name``
(the colour bar's label) and ``floor``: ``{"value": v, "label": text, "short": text}``, a dotted
horizontal line in that frame's panels (the float64 round-off level of a quantity that converges
to 0), named ``short`` on the panel and ``label`` in the legend.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

#: formats a figure can be written in
FORMATS = ("png", "pdf", "svg")
#: resolution of raster output (PNG) unless ``dpi`` is given
DEFAULT_DPI = 200
#: width of a figure with panels (inches): the text width of a two-column page
PAGE_WIDTH = 7.0
#: height of one row of panels (inches)
PANEL_HEIGHT = 2.25
#: most panels in one row
MAX_COLUMNS = 3
#: more series than this are coloured by a continuous colour map with a colour bar
MAX_LEGEND_SERIES = 6
#: line styles by kind of curve
KIND_STYLE = {"mc": {"linestyle": "-", "linewidth": 1.3, "zorder": 3},
              "theory": {"linestyle": "--", "linewidth": 1.5, "zorder": 4},
              "bound": {"linestyle": "-.", "linewidth": 1.3, "zorder": 4},
              "run": {"linestyle": "-", "linewidth": 1.3, "zorder": 3}}

_RC = {"font.size": 8, "axes.titlesize": 7.5, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
       "legend.fontsize": 7, "legend.title_fontsize": 7, "figure.titlesize": 9, "axes.titlepad": 4,
       "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "path", "lines.solid_capstyle": "butt"}


def _style(grid=True):
    rc = dict(sns.axes_style("whitegrid" if grid else "white"))
    rc.update(sns.plotting_context("paper"))
    rc.update(_RC)
    return plt.rc_context(rc)


# ---------------------------------------------------------------- mathtext
_GREEK = {"α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\epsilon", "η": r"\eta",
          "θ": r"\theta", "κ": r"\kappa", "λ": r"\lambda", "μ": r"\mu", "ν": r"\nu", "ξ": r"\xi", "π": r"\pi",
          "ρ": r"\rho", "σ": r"\sigma", "τ": r"\tau", "φ": r"\phi", "χ": r"\chi", "ψ": r"\psi", "ω": r"\omega",
          "Γ": r"\Gamma", "Δ": r"\Delta", "Θ": r"\Theta", "Λ": r"\Lambda", "Σ": r"\Sigma", "Φ": r"\Phi",
          "Ψ": r"\Psi", "Ω": r"\Omega"}
#: superscript characters; a run of them becomes one group ("H⁻¹" → H^{-1}, "gᵀH" → g^{\top}H)
_SUPERSCRIPTS = {"⁰": "0", "¹": "1", "²": "2", "³": "3", "⁴": "4", "⁵": "5", "⁶": "6", "⁷": "7", "⁸": "8",
                 "⁹": "9", "⁺": "+", "⁻": "-", "ⁿ": "n", "ᵀ": r"\top "}
_SYMBOLS = {"−": "-", "‖": r"\|", "·": r"\cdot ", "×": r"\times ",
            "≤": r"\leq ", "≥": r"\geq ", "≈": r"\approx ", "≠": r"\neq ", "∞": r"\infty ", "∇": r"\nabla ",
            "′": r"^\prime ", "→": r"\to ", "∈": r"\in ", "∝": r"\propto ", "𝓛": r"\mathcal{L}",
            "ℒ": r"\mathcal{L}", "𝒯": r"\mathcal{T}", "ℓ": r"\ell ", "…": r"\ldots ", "$": r"\$", "%": r"\%",
            "&": r"\&", "#": r"\#", "{": r"\{", "}": r"\}", "\\": r"\backslash ", "~": r"\sim "}
_ACCENTS = {"\u0302": r"\hat", "\u0303": r"\tilde", "\u0304": r"\bar"}
_NAMED_SUBSCRIPTS = {"max": r"\max", "min": r"\min"}
#: whole expressions with a hand-set form (longest first when matching)
_PHRASES = {
    "E‖x_t − x*‖²": r"$\mathbb{E}\|x_t - x^*\|^2$", "E‖x_T − x*‖²": r"$\mathbb{E}\|x_T - x^*\|^2$",
    "E‖x_∞ − x*‖²": r"$\mathbb{E}\|x_\infty - x^*\|^2$", "E‖x_t − x_λ‖²": r"$\mathbb{E}\|x_t - x_\lambda\|^2$",
    "E[f(x_t) − f*]": r"$\mathbb{E}[f(x_t) - f^*]$", "E f(x_t) − f*": r"$\mathbb{E}\,f(x_t) - f^*$",
    "‖x_t − x*‖²": r"$\|x_t - x^*\|^2$", "‖x_t − θ‖²": r"$\|x_t - \theta\|^2$",
    "‖x_t − x_λ‖²": r"$\|x_t - x_\lambda\|^2$", "f(x_t) − f*": r"$f(x_t) - f^*$",
    "‖W(x_t) − M*‖²": r"$\|W(x_t) - M^*\|_F^2$", "‖θ − x*‖": r"$\|\theta - x^*\|$",
    "γσ²_*(λ,θ)/4": r"$\gamma\sigma^2_*(\lambda,\theta)/4$", "σ²_*(λ,θ)": r"$\sigma^2_*(\lambda,\theta)$",
    "λ²D² + (1 − λ)²MSE_SGD": r"$\lambda^2D^2 + (1-\lambda)^2\,\mathrm{MSE}_{\mathrm{SGD}}$",
    "MSE_SGD": r"$\mathrm{MSE}_{\mathrm{SGD}}$",
}
_PHRASE_RE = re.compile("(" + "|".join(re.escape(p) for p in sorted(_PHRASES, key=len, reverse=True)) + ")")
_MATH_MARKERS = set("_*‖𝓛𝒯") | set(_SUPERSCRIPTS) | set(_ACCENTS) | set(_GREEK)
_ASSIGNMENT = re.compile(r"^[A-Za-z][0-9]?=[-+0-9.eE]+$")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9]+_[A-Za-z]")     # a name such as kd_loss: kept as text


def _subscript(text):
    if text == "*":
        return "*"
    if text in _NAMED_SUBSCRIPTS:
        return _NAMED_SUBSCRIPTS[text]
    if text.isascii() and text.isalnum() and len(text) > 1:
        return rf"\mathrm{{{text}}}"
    return _math_body(text)


def _math_body(token):
    """mathtext (without the dollars) of one token with no spaces."""
    out = []
    i = 0
    while i < len(token):
        ch = token[i]
        if ch in _ACCENTS:
            if out:
                out[-1] = f"{_ACCENTS[ch]}{{{out[-1]}}}"
            i += 1
            continue
        if ch == "_":
            j = i + 1
            if j < len(token) and token[j] in "*∞":
                j += 1
            else:
                while j < len(token) and (token[j].isalnum() or token[j] in _ACCENTS):
                    j += 1
            run = token[i + 1:j]
            out.append(f"_{{{_subscript(run)}}}" if run else r"\_")
            i = j
            continue
        if ch in _SUPERSCRIPTS:
            j = i
            while j < len(token) and token[j] in _SUPERSCRIPTS:
                j += 1
            sup = "".join(_SUPERSCRIPTS[c] for c in token[i:j]).strip()
            out.append("^" + sup if len(sup) == 1 else "^{" + sup + "}")
            i = j
            continue
        if ch == "*":
            out.append("^*")
        elif ch == "^":                                  # a superscript when something follows
            out.append("^" if i + 1 < len(token) else r"\wedge ")
        elif ch in _GREEK:
            out.append(f"{{{_GREEK[ch]}}}")
        elif ch in _SYMBOLS:
            out.append(_SYMBOLS[ch])
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _split_punctuation(token):
    lead, trail = "", ""
    core = token
    changed = True
    while changed and core:
        changed = False
        closing = core[-1] in ")]" and core.count(core[-1]) > core.count("(" if core[-1] == ")" else "[")
        if core[-1] in ",;:." or closing:
            trail, core = core[-1] + trail, core[:-1]
            changed = True
        elif core[0] in "([" and core.count(core[0]) > core.count(")" if core[0] == "(" else "]"):
            lead, core = lead + core[0], core[1:]
            changed = True
    return lead, core, trail


def mathtext(text):
    """``text`` with its mathematical expressions set in matplotlib mathtext.

    Known expressions (‖x_t − x*‖², f(x_t) − f*, …) get a hand-set form; any other word that
    holds a subscript, a star, a square, a norm bar, an accent or a Greek letter ("λ*_T1",
    "σ²_*", "L_max", "λ̂", "γ=0.1") and single-letter assignments ("n=200") become inline
    maths; other words, and names such as "kd_loss" (two or more letters before "_"), stay text.
    A string that already holds a "$" is returned unchanged.
    """
    text = str(text)
    if "$" in text:
        return text
    out = []
    for k, piece in enumerate(_PHRASE_RE.split(text)):
        if k % 2:                                   # a known expression
            out.append(_PHRASES[piece])
            continue
        pos = 0
        for m in re.finditer(r"\S+", piece):
            out.append(piece[pos:m.start()])
            pos = m.end()
            lead, core, trail = _split_punctuation(m.group(0))
            if core and not _IDENTIFIER.match(core) and (set(core) & _MATH_MARKERS or _ASSIGNMENT.match(core)):
                out.append(f"{lead}${_math_body(core)}${trail}")
            else:
                out.append(m.group(0))
        out.append(piece[pos:])
    return "".join(out)


def _display_length(word):
    """Rough width of a word once set: maths spaces out "=" and draws a Greek letter wider."""
    return len(word) + 1.6 * word.count("=") + 0.3 * sum(ch in _GREEK for ch in word)


def _wrap(text, width):
    """Wrap plain text into lines about ``width`` characters wide (as set), then set each line's maths."""
    text = str(text)
    if "$" in text:
        return text
    lines, line, used = [], [], 0.0
    for word in text.split():
        size = _display_length(word)
        if line and used + 1 + size > width:
            lines.append(" ".join(line))
            line, used = [], 0.0
        line.append(word)
        used += size + (1 if len(line) > 1 else 0)
    if line:
        lines.append(" ".join(line))
    return "\n".join(mathtext(line) for line in lines or [""])


# ---------------------------------------------------------------- helpers
def log_band_low(mean, ci_low, ci_high):
    """Lower edge of a band on a log axis.

    A t-interval of a positive, heavy-tailed mean can reach below zero; there the band
    shows the log-scale mirror of the upper limit, mean²/ci_high, instead of a drop to
    the bottom of the axis.
    """
    mirror = mean * mean / ci_high.where(ci_high > 0, mean)
    return ci_low.where(ci_low > 0, mirror)


def _kind(method, frame=None):
    if frame is not None and "kind" in frame and frame["kind"].notna().any():
        return str(frame["kind"].dropna().iloc[0])
    low = str(method).lower()
    if "bound" in low:
        return "bound"
    if any(w in low for w in ("exact", "theory", "flow", "first order", "first-order")):
        return "theory"
    return "mc"


def grid_shape(n_panels, max_columns=MAX_COLUMNS):
    """(rows, columns) of a grid of ``n_panels`` panels: at most ``max_columns`` a row (2 × 2 for four)."""
    n = max(int(n_panels), 1)
    cols = 2 if n == 4 else min(n, max_columns)
    return math.ceil(n / cols), cols


def _output_path(path, fmt):
    path = Path(path)
    if fmt is None:
        fmt = path.suffix.lstrip(".").lower() or "png"
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; valid values: {', '.join(FORMATS)}")
    return path.with_suffix(f".{fmt}"), fmt


def _save(fig, path, fmt=None, dpi=None):
    """Write ``fig`` to ``path`` as ``fmt`` (default: the suffix of ``path``) and close it; return the path."""
    try:
        path, fmt = _output_path(path, fmt)
        if dpi is not None and (isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not dpi > 0):
            raise ValueError(f"dpi must be a positive number; got {dpi!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with _style():
            fig.savefig(path, format=fmt, dpi=dpi or DEFAULT_DPI, metadata={"Creator": "kdsim"})
    finally:
        plt.close(fig)
    return path


def _sci(value, _pos=None):
    """A tick label in powers of ten: 10^k, or m×10^k."""
    if not np.isfinite(value) or value <= 0:
        return ""
    exp = int(math.floor(math.log10(value) + 1e-9))
    mant = value / 10 ** exp
    if abs(mant - round(mant)) < 1e-6:
        mant = round(mant)
    if mant == 1:
        return rf"$10^{{{exp}}}$"
    return rf"${mant:g}\times10^{{{exp}}}$"


#: mantissas of log-axis ticks, roundest first
_MANTISSAS = (1.0, 5.0, 2.0, 3.0, 1.5, 2.5, 4.0, 6.0, 7.0, 8.0, 9.0)


def log_ticks(lo, hi, most=6):
    """Round tick values for a log axis over [lo, hi], at most ``most``, never closer than
    1/``most`` of the range (so that their labels do not collide): powers of ten (every k-th
    for k in 1, 2, 3, 5, 10 when the range spans three decades or more), else the roundest
    mantissas first (1, 5, 2, 3, …) × 10^k."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 or hi <= lo:
        return []
    a, b = math.log10(lo), math.log10(hi)
    span = b - a
    if span >= 3:
        for step in (1, 2, 3, 5, 10, 20, 50, 100):
            exps = [e for e in range(math.ceil(a - 1e-9), math.floor(b + 1e-9) + 1) if e % step == 0]
            if len(exps) <= most:
                return [10.0 ** e for e in exps]
    gap = span / most
    kept = []
    for m in _MANTISSAS:
        for e in range(math.floor(a) - 1, math.ceil(b) + 1):
            v = m * 10.0 ** e
            x = math.log10(v)
            if a - 1e-9 <= x <= b + 1e-9 and all(abs(x - math.log10(k)) >= gap for k in kept):
                kept.append(v)
    return sorted(kept)[:most]


def _log_ticks(ax):
    """Readable log-axis ticks (``log_ticks``), labelled 10^k or m×10^k; minor ticks unlabelled."""
    ticks = log_ticks(*ax.get_ylim())
    if ticks:
        ax.yaxis.set_major_locator(ticker.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_sci))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _step_ticks(ax):
    """At most five step ticks, written in full up to 9999 and with a ×10^k offset beyond."""
    ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=4, integer=True, min_n_ticks=3))
    fmt = ticker.ScalarFormatter(useMathText=True)
    fmt.set_powerlimits((-3, 4))
    ax.xaxis.set_major_formatter(fmt)


def _series_colours(labels, values, cmap="viridis"):
    """{label: colour}, the colour map (or None) and its normalisation."""
    numeric = values is not None and len(labels) > MAX_LEGEND_SERIES and all(
        v is not None and np.isfinite(v) for v in values)
    if numeric:
        norm = matplotlib.colors.Normalize(min(values), max(values) if max(values) > min(values) else min(values) + 1)
        cm = plt.get_cmap(cmap)
        return {lab: cm(0.9 * norm(v)) for lab, v in zip(labels, values)}, cm, norm
    palette = sns.color_palette("colorblind", n_colors=max(len(labels), 1))
    if len(labels) > len(palette):
        palette = sns.color_palette("husl", n_colors=len(labels))
    return dict(zip(labels, palette)), None, None


def check_title(result):
    """A check's figure title in words: the title its curves carry (``attrs["title"]``), or its
    statement without the reference to the theory page ("Claim 2: the optimal teacher …")."""
    for curve in getattr(result, "curves", []) or []:
        title = getattr(curve, "attrs", {}).get("title")
        if title:
            return title
    statement = re.sub(r"\s*\(THEORY\.md §\d+\)", "", str(result.statement)).strip().rstrip(".")
    return statement or f"Claim {result.claim}"


# ---------------------------------------------------------------- figures
def convergence_plot(curves, path, title=None, fmt=None, dpi=None):
    """Mean curves with confidence bands on a log scale, one panel per instance, in a grid
    (``convergence_figure``), written to ``path``.

    Parameters
    ----------
    curves : list of DataFrame
        Long frames (see the module docstring); a panel per distinct ``instance``.
    path : path
        Where to write; its suffix is replaced by ``fmt`` when given.
    title : str, optional
        The figure's title; default the ``title`` the curves carry in ``attrs``.
    fmt : {"png", "pdf", "svg"}, optional
        Default: the suffix of ``path`` (PNG when it has none).
    dpi : float, optional
        Resolution of raster output (default ``DEFAULT_DPI``).

    Returns
    -------
    Path of the written file.

    Where a lower confidence limit is not positive the band's lower edge is the log-scale
    mirror of the upper one (``log_band_low``). Curves of one ``series`` share a colour across
    panels; Monte Carlo curves are solid with their band, theory dashed, bounds dash-dot; the
    legend sits below the panels, or a colour bar right of them for many numeric series.
    """
    return _save(convergence_figure(curves, title), path, fmt, dpi)


def convergence_figure(curves, title=None):
    """The figure of ``convergence_plot`` (a matplotlib Figure, not saved)."""
    meta, floors = {}, {}
    for c in curves:
        for key, value in getattr(c, "attrs", {}).items():
            meta.setdefault(key, value)
        if "floor" in getattr(c, "attrs", {}):
            for inst in dict.fromkeys(c["instance"]):
                floors[inst] = c.attrs["floor"]
    frame = pd.concat(curves, ignore_index=True)
    if "series" not in frame:
        frame["series"] = frame["method"]
    frame["series"] = frame["series"].fillna(frame["method"])
    instances = list(dict.fromkeys(frame["instance"]))
    labels = list(dict.fromkeys(frame["series"]))
    values = None
    if "series_value" in frame:
        first = frame.groupby("series", sort=False)["series_value"].first()
        values = [float(first[lab]) if pd.notna(first[lab]) else None for lab in labels]
    colours, cmap, norm = _series_colours(labels, values)
    rows, cols = grid_shape(len(instances))
    title = title if title is not None else meta.get("title", "")
    with _style():
        fig, axes = plt.subplots(rows, cols, figsize=(PAGE_WIDTH, PANEL_HEIGHT * rows + 0.9), squeeze=False,
                                 layout="constrained")
        seen_floor = None
        for k, inst in enumerate(instances):
            ax = axes.flat[k]
            sub = frame[frame["instance"] == inst]
            for (series, method), g in sub.groupby(["series", "method"], sort=False):
                kind = _kind(method, g)
                style = dict(KIND_STYLE.get(kind, KIND_STYLE["mc"]))
                if cmap is not None:                    # many series: thinner lines, no bands
                    style["linewidth"] *= 0.7
                pos = g["mean"] > 0
                colour = colours[series]
                ax.plot(g["step"][pos], g["mean"][pos], color=colour, gid=f"{series}|{method}", **style)
                band = cmap is None and kind == "mc" and _has_band(g)
                if band:
                    ax.fill_between(g["step"][pos], log_band_low(g["mean"], g["ci_low"], g["ci_high"])[pos],
                                    g["ci_high"][pos], color=colour, alpha=0.2, linewidth=0, zorder=1)
            ax.set_yscale("log")
            if inst in floors:
                fl = floors[inst]
                ax.axhline(fl["value"], color="0.3", linestyle=":", linewidth=1.0, zorder=2)
                lo, hi = ax.get_ylim()
                room = 10 ** (0.14 * math.log10(max(hi, fl["value"]) / min(lo, fl["value"])))
                ax.set_ylim(min(lo, fl["value"] / room), hi)
                ax.text(0.03, fl["value"], fl.get("short", "float64 round-off"), color="0.25", fontsize=6,
                        ha="left", va="top", transform=ax.get_yaxis_transform(), zorder=6)
                seen_floor = fl
            _log_ticks(ax)
            _step_ticks(ax)
            ax.set_title(_wrap(inst, {1: 90, 2: 54}.get(cols, 34)))
            quantities = list(dict.fromkeys(sub["quantity"]))
            if k % cols == 0 or len(set(frame["quantity"])) > 1:
                ax.set_ylabel(mathtext(", ".join(quantities)))
            if k + cols >= len(instances):
                ax.set_xlabel(mathtext("step t"))
        for ax in axes.flat[len(instances):]:
            ax.set_visible(False)
        handles = _legend_handles(frame, colours, cmap is not None, seen_floor)
        if cmap is not None:
            handles.append(Line2D([], [], linestyle="none", label=f"(confidence bands left out for more than "
                                                                  f"{MAX_LEGEND_SERIES} series)"))
        if cmap is not None:
            sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=matplotlib.colors.ListedColormap(
                cmap(np.linspace(0, 0.9, 256))))
            bar = fig.colorbar(sm, ax=axes[:, :].ravel().tolist()[:len(instances)], shrink=0.9, pad=0.01)
            bar.set_label(mathtext(meta.get("series_name", "value")))
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(handles), frameon=False)
        if title:
            fig.suptitle(_wrap(title, 110))
        return fig


def _legend_columns(handles, width=PAGE_WIDTH):
    """As many legend columns as fit ``width`` inches (an estimate from the labels' lengths)."""
    widths = sorted((0.45 + 0.052 * len(re.sub(r"\\[a-zA-Z]+|[${}^_]", "", h.get_label())) for h in handles),
                    reverse=True)
    for cols in range(len(handles), 0, -1):
        if sum(widths[:cols]) <= width - 0.3:
            return cols
    return 1


def _has_band(g):
    return bool(((g["ci_high"] - g["ci_low"]).abs() > 0).any())


def _line(kind, colour):
    return Line2D([], [], color=colour, **{k: v for k, v in KIND_STYLE[kind].items() if k != "zorder"})


def _entry(kind, colour, label, band):
    """A legend entry: the line of ``kind`` (over its band when ``band``)."""
    line = _line(kind, colour)
    if band:
        return _BandHandle(line, Patch(color=colour, alpha=0.2, linewidth=0), mathtext(f"{label} (mean, 99% CI band)"))
    line.set_label(mathtext(label))
    return line


def _legend_handles(frame, colours, continuous, floor):
    """Colour entries (one per series) and style entries (one per method of the paired series)."""
    handles, paired_methods = [], []
    for series in dict.fromkeys(frame["series"]):
        rows = frame[frame["series"] == series]
        methods = list(dict.fromkeys(rows["method"]))
        if methods == [series]:                          # a curve of its own colour and style
            handles.append(_entry(_kind(series, rows), colours[series], series,
                                  _kind(series, rows) == "mc" and _has_band(rows)))
            continue
        paired_methods.extend(m for m in methods if m not in paired_methods)
        if not continuous:
            handles.append(Line2D([], [], color=colours[series], linewidth=2.4, label=mathtext(series)))
    for method in paired_methods:
        rows = frame[(frame["method"] == method) & (frame["series"] != frame["method"])]
        kind = _kind(method, rows)
        handles.append(_entry(kind, "0.15", method, kind == "mc" and _has_band(rows) and not continuous))
    if floor is not None:
        handles.append(Line2D([], [], color="0.3", linestyle=":", linewidth=1.0, label=mathtext(floor["label"])))
    return handles


class _BandHandle(Line2D):
    """A legend entry drawn as a line over its band."""

    def __init__(self, line, patch, label):
        super().__init__([], [], color=line.get_color(), linestyle=line.get_linestyle(),
                         linewidth=line.get_linewidth(), label=label)
        self.band = patch


class _BandHandler(matplotlib.legend_handler.HandlerLine2D):
    def create_artists(self, legend, orig_handle, xdescent, ydescent, width, height, fontsize, trans):
        artists = super().create_artists(legend, orig_handle, xdescent, ydescent, width, height, fontsize, trans)
        rect = matplotlib.patches.Rectangle((-xdescent, -ydescent + 0.15 * height), width, 0.7 * height,
                                            facecolor=orig_handle.band.get_facecolor(), linewidth=0,
                                            transform=trans)
        return [rect, *artists]


matplotlib.legend.Legend.update_default_handler_map({_BandHandle: _BandHandler()})


_MARKER_STYLES = (":", "--", "-.", (0, (5, 1.5)), (0, (3, 1, 1, 1)), (0, (1, 1)))
#: colours of the λ markers (Okabe–Ito, without the light ones, then purple and brown)
_MARKER_COLOURS = ("#E69F00", "#009E73", "#D55E00", "#CC79A7", "#6A3D9A", "#8C564B", "#0072B2")
_MARKER_SYMBOLS = ("o", "s", "^", "D", "v", "P", "X")


def lambda_sweep_plot(data, path, title, markers=None, optimum=None, ylabel="E‖x_T − x*‖²", fmt=None, dpi=None):
    """Error against λ (mean with CI band), the λ variants as vertical lines and the
    empirical optimum with its interval as a shaded span.

    ``data``: frame with columns instance, lam, mean, ci_low, ci_high (and optionally
    method: a line per method; a method whose interval is empty, or named "exact", is theory,
    drawn dashed without a band). ``markers``: {label: λ}, vertical lines drawn above the
    bands, each with its own colour, line style and a symbol on the curve (a marker beyond a
    quarter of the data's λ span from it is listed in the legend as "off the axis", without a
    line, and a NaN one as "n/a"); ``optimum``: (λ, low, high). The legend sits below the axis.
    """
    return _save(lambda_sweep_figure(data, title, markers, optimum, ylabel), path, fmt, dpi)


def lambda_sweep_figure(data, title, markers=None, optimum=None, ylabel="E‖x_T − x*‖²"):
    """The figure of ``lambda_sweep_plot`` (a matplotlib Figure, not saved)."""
    methods = list(data["method"].unique()) if "method" in data else [None]
    with _style():
        fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 4.0), layout="constrained")
        method_colours = ["#1f5fa8", "0.1", "#8c4f9f"]
        curves = []                               # where the markers' symbols sit: theory first
        for k, method in enumerate(methods):
            g = (data if method is None else data[data["method"] == method]).sort_values("lam")
            theory_curve = method == "exact" or bool(np.allclose(g["ci_low"], g["ci_high"]) and
                                                      np.allclose(g["mean"], g["ci_high"]))
            colour = method_colours[k % len(method_colours)]
            label = mathtext("exact (§5)" if method == "exact" else method or "Monte Carlo mean")
            if theory_curve:
                ax.plot(g["lam"], g["mean"], "--", color=colour, linewidth=1.5, zorder=3, label=label)
                curves.insert(0, g)
            else:
                ax.plot(g["lam"], g["mean"], "-", color=colour, linewidth=1.4, zorder=3)
                ax.add_line(_BandHandle(Line2D([], [], color=colour, linewidth=1.4),
                                        Patch(color=colour, alpha=0.2, linewidth=0),
                                        mathtext(f"{method or 'Monte Carlo mean'}, 99% CI band")))
                ax.fill_between(g["lam"], g["ci_low"], g["ci_high"], color=colour, alpha=0.2, linewidth=0, zorder=1)
                curves.append(g)
        if optimum is not None:
            lam, lo, hi = optimum
            ax.axvspan(lo, hi, color="0.55", alpha=0.22, linewidth=0, zorder=0.5,
                       label=mathtext(f"empirical optimum λ = {lam:.3g}, CI [{lo:.3g}, {hi:.3g}]"))
        palette = _MARKER_COLOURS
        ax.set_yscale("log")
        span_lo, span_hi = float(data["lam"].min()), float(data["lam"].max())
        reach = 0.25 * max(span_hi - span_lo, 1e-12)
        for k, (label, lam) in enumerate((markers or {}).items()):
            colour = palette[k % len(palette)]
            style = _MARKER_STYLES[k % len(_MARKER_STYLES)]
            handle = Line2D([], [], color=colour, linestyle=style, linewidth=1.6,
                            marker=_MARKER_SYMBOLS[k % len(_MARKER_SYMBOLS)], markersize=5,
                            label=f"{mathtext(label)} = {lam:.3g}")
            if not np.isfinite(lam) or not span_lo - reach <= lam <= span_hi + reach:
                handle.set_label(f"{mathtext(label)} = {lam:.3g} (off the axis)" if np.isfinite(lam)
                                 else f"{mathtext(label)}: n/a")
                ax.add_line(handle)
                continue
            ax.axvline(lam, color=colour, linestyle=style, linewidth=1.6, zorder=5)
            for g in curves:
                xs, ys = g["lam"].to_numpy(), g["mean"].to_numpy()
                if len(xs) < 2 or not xs.min() <= lam <= xs.max():
                    continue
                y = float(np.exp(np.interp(lam, xs, np.log(np.where(ys > 0, ys, np.nan)))))
                if np.isfinite(y):
                    ax.plot([lam], [y], marker=_MARKER_SYMBOLS[k % len(_MARKER_SYMBOLS)], color=colour,
                            markersize=5, markeredgecolor="white", markeredgewidth=0.6, zorder=6, linestyle="none")
                    break
            ax.add_line(handle)
        _log_ticks(ax)
        ax.set_xlabel(mathtext("KD weight λ"))
        ax.set_ylabel(mathtext(ylabel))
        fig.suptitle(_wrap(title, 100))
        handles = ax.get_legend_handles_labels()[0]
        fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(handles), frameon=False)
        return fig


def heatmap_plot(data, path, title, x, y, value, xlabel=None, ylabel=None, value_label=None, annot_fmt=".2f",
                 fmt=None, dpi=None):
    """Annotated heatmap of ``value`` over the grid (``x``, ``y``) of a long frame (cells written with
    ``annot_fmt``; ``xlabel``, ``ylabel`` and ``value_label`` default to the column names)."""
    return _save(heatmap_figure(data, title, x, y, value, xlabel, ylabel, value_label, annot_fmt), path, fmt, dpi)


def heatmap_figure(data, title, x, y, value, xlabel=None, ylabel=None, value_label=None, annot_fmt=".2f"):
    """The figure of ``heatmap_plot`` (a matplotlib Figure, not saved)."""
    table = data.pivot(index=y, columns=x, values=value).sort_index(ascending=False)
    with _style(grid=False):
        fig, ax = plt.subplots(figsize=(min(PAGE_WIDTH, 1.6 + 0.75 * table.shape[1]),
                                        min(6.0, 1.3 + 0.42 * table.shape[0])), layout="constrained")
        sns.heatmap(table, annot=True, fmt=annot_fmt, cmap="viridis", ax=ax, annot_kws={"fontsize": 7},
                    cbar_kws={"label": mathtext(value_label or value)})
        ax.set_xticklabels([f"{float(t.get_text()):.3g}" for t in ax.get_xticklabels()], rotation=0)
        ax.set_yticklabels([f"{float(t.get_text()):.3g}" for t in ax.get_yticklabels()], rotation=0)
        ax.set_xlabel(mathtext(xlabel or x))
        ax.set_ylabel(mathtext(ylabel or y))
        ax.set_title(_wrap(title, 70))
        return fig


def scatter_plot(data, path, title, xlabel="theoretical", ylabel="empirical", log=True, fmt=None, dpi=None):
    """Empirical against theoretical values (with CI error bars) and the line y = x.

    ``data``: frame with columns theoretical, empirical, ci_low, ci_high, instance; optionally
    ``group`` (the colour and legend entry: default the instance) and ``marker`` (a symbol per
    value, also in the legend).
    """
    return _save(scatter_figure(data, title, xlabel, ylabel, log), path, fmt, dpi)


def scatter_figure(data, title, xlabel="theoretical", ylabel="empirical", log=True):
    """The figure of ``scatter_plot`` (a matplotlib Figure, not saved)."""
    group = data["group"] if "group" in data else data["instance"]
    data = data.assign(_group=group, _marker=data["marker"] if "marker" in data else "")
    groups = list(dict.fromkeys(data["_group"]))
    symbols = list(dict.fromkeys(data["_marker"]))
    colours = dict(zip(groups, sns.color_palette("colorblind", max(len(groups), 1))))
    shapes = dict(zip(symbols, _MARKER_SYMBOLS * (len(symbols) // len(_MARKER_SYMBOLS) + 1)))
    with _style():
        fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 4.2), layout="constrained")
        for (grp, mk), g in data.groupby(["_group", "_marker"], sort=False):
            err = [(g["empirical"] - g["ci_low"]).clip(lower=0), (g["ci_high"] - g["empirical"]).clip(lower=0)]
            ax.errorbar(g["theoretical"], g["empirical"], yerr=err, fmt=shapes[mk], color=colours[grp], ms=4,
                        elinewidth=0.8, capsize=1.5, zorder=3)
        lo = min(data["theoretical"].min(), data["ci_low"].clip(lower=1e-300).min())
        hi = max(data["theoretical"].max(), data["ci_high"].max())
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.9, zorder=2)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(mathtext(xlabel))
        ax.set_ylabel(mathtext(ylabel))
        fig.suptitle(_wrap(title, 100))
        handles = [Line2D([], [], color=colours[g], marker="o", linestyle="none", ms=4, label=_wrap(g, 48))
                   for g in groups]
        if len(symbols) > 1:
            handles += [Line2D([], [], color="0.3", marker=shapes[s], linestyle="none", ms=4, label=mathtext(s))
                        for s in symbols]
        handles.append(Line2D([], [], color="black", linewidth=0.9, label=r"$y = x$"))
        fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(handles), frameon=False)
        return fig


#: figure kinds a check may request in ``CheckResult.figures``
RENDERERS = {"lambda_sweep": lambda_sweep_plot, "heatmap": heatmap_plot, "scatter": scatter_plot}


def render(figure, out_dir, fmt="png", dpi=None):
    """Draw one figure request {"kind", "name", "data", "title", ...kind-specific keywords}
    into ``out_dir``/``name``.``fmt``; return the path."""
    spec = dict(figure)
    kind, name = spec.pop("kind"), spec.pop("name")
    if kind not in RENDERERS:
        raise ValueError(f"unknown figure kind {kind!r}; valid values: {', '.join(RENDERERS)}")
    data, title = spec.pop("data"), spec.pop("title")
    path, fmt = _output_path(Path(out_dir) / f"{name}.{fmt or 'png'}", fmt)
    return RENDERERS[kind](data, path, title, fmt=fmt, dpi=dpi, **spec)
