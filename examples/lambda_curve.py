"""The KD weight λ of one teacher: the Monte Carlo curve beside every optimal weight of the theory.

Least squares with an imperfect teacher (‖θ − x*‖ = 0.3). KD runs over a grid of λ with
common random numbers (every λ sees the same minibatches), the error E‖x_t − x*‖² is
averaged over the second half of each run (its plateau), and the curve is drawn with the
empirical optimum and its 99% interval, λ̂, λ*_T1, λ*_T2, λ*_published and the exact λ_opt
(docs/theory.md §5–§6). Writes lambda_curve.png and lambda_curve.csv.

    python examples/lambda_curve.py [--out DIR]        # default DIR: kdsim-results/examples
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import numpy as np  # noqa: E402

import kdsim  # noqa: E402
from kdsim import teachers  # noqa: E402
from kdsim.problems import synthetic  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="kdsim-results/examples", help="output folder")
    out = Path(parser.parse_args(argv).out)
    out.mkdir(parents=True, exist_ok=True)

    problem = synthetic.least_squares(n=200, d=10, cond=10.0, seed=0)   # μ = 0.1, L = 1
    teacher = teachers.at_distance(problem, r=0.3, seed=1)
    print(problem, teacher, sep="\n")

    # 1/(γμ) = 200 steps: by step 2000 (the plateau's start) the start has been forgotten
    curve = kdsim.lambda_curve(problem, teacher, lams=np.linspace(0.0, 0.8, 9), step=0.05, steps=4000,
                               seeds=500, at="plateau", level=0.99)
    print(curve)
    print(curve.frame.to_string(index=False))
    print(curve.theory_frame().to_string(index=False))

    ax = curve.plot()
    ax.figure.savefig(out / "lambda_curve.png", dpi=150, bbox_inches="tight")
    curve.frame.to_csv(out / "lambda_curve.csv", index=False)
    print(f"wrote {out / 'lambda_curve.png'} and {out / 'lambda_curve.csv'}")


if __name__ == "__main__":
    main()
