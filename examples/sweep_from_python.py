"""A tiny sweep from Python: a TOML spec written to a temporary folder, run in-process.

Two step sizes × two teachers = 4 cells of least squares, each running every λ of the grid
in one ``simulate`` call. ``kdsim.sweeps.run`` stores one summary row per (cell, λ, record)
with the theory beside it (docs/sweeps.md) and returns them as a frame; running it again
would reuse the stored cells. Needs the ``dask`` extra for its parquet store
(``pip install -e ".[dask]"``); without pyarrow the script says so and exits 0.
Writes sweep_summary.csv (the plateau of E‖x_t − x*‖² per cell and λ, beside the exact one).

    python examples/sweep_from_python.py [--out DIR]    # default DIR: kdsim-results/examples
"""
import argparse
import importlib.util
import tempfile
from pathlib import Path

SPEC = """
[sweep]
name = "tiny"
master_seed = 0
backend = "auto"

[problem]
family = "least_squares"
n = 100
d = 5
cond = 10.0

[[teachers]]
kind = "optimum"

[[teachers]]
kind = "at_distance"
r = 0.3

[grid]
lams = [0.0, 0.5, 1.0]
step_fraction = [0.25, 0.5]   # γ = fraction / 𝓛(b)
batch_size = 1
estimator = "kd"
seeds = 32
steps = 8000                  # 1/(γμ) ≤ 400 steps: the plateau (last half) is stationary
record_every = 80
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="kdsim-results/examples", help="output folder")
    out = Path(parser.parse_args(argv).out)
    missing = [m for m in ("pyarrow",) if importlib.util.find_spec(m) is None]
    if missing:
        print(f"skipped: the sweep store needs {', '.join(missing)} (pip install -e '.[dask]')")
        return
    import kdsim.sweeps

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "tiny.toml"
        spec.write_text(SPEC)
        frame = kdsim.sweeps.run(spec, out=Path(tmp) / "store", workers=1, progress=False)
    print(f"{len(frame)} rows (one per cell, λ and record step); {len(frame.columns)} columns")
    print({k: v for k, v in frame.attrs["run"].items() if k in ("total", "written", "skipped", "seconds")})
    # one line per (cell, λ): the Monte Carlo plateau of ‖x_t − x*‖² beside the exact one (§5)
    cols = ["teacher_label", "gamma", "lam", "plateau_dist2_opt_mean", "plateau_dist2_opt_ci_low",
            "plateau_dist2_opt_ci_high", "exact_plateau_dist2_opt", "lambda_opt"]
    table = frame[frame["step"] == frame["step"].max()][cols].sort_values(["teacher_label", "gamma", "lam"])
    table.to_csv(out / "sweep_summary.csv", index=False)
    print(table.to_string(index=False))
    print(f"wrote {out / 'sweep_summary.csv'}")


if __name__ == "__main__":
    main()
