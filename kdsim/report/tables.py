"""Tables of check results as CSV, Markdown and LaTeX."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..checks.base import COLUMNS


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
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(result, out_dir):
    """Write one check's table as CSV, Markdown and LaTeX; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = result.frame()[COLUMNS]
    stem = f"claim{result.claim:02d}_{result.name}"
    paths = {"csv": out / f"{stem}.csv", "md": out / f"{stem}.md", "tex": out / f"{stem}.tex"}
    frame.to_csv(paths["csv"], index=False)
    notes = "".join(f"- {note}\n" for note in result.notes)
    notes = f"\nNotes:\n\n{notes}" if notes else ""
    paths["md"].write_text(f"# Claim {result.claim}: {result.name}\n\n{result.statement}\n\n{_markdown(frame)}{notes}")
    paths["tex"].write_text(frame.to_latex(index=False, float_format="%.3e", escape=True))
    return paths


def write_summary(results, out_dir):
    """Summary of all checks as CSV and Markdown; return the Markdown path."""
    out = Path(out_dir)
    frame = summary_frame(results)
    frame.to_csv(out / "summary.csv", index=False)
    path = out / "summary.md"
    path.write_text(_markdown(frame))
    return path
