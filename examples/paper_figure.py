"""A publication-style figure: E‖x_t − x*‖² against t for three KD weights, Monte Carlo beside exact theory.

Least squares, KD with an imperfect teacher at λ = 0 (SGD), the exact optimal weight λ_opt
and λ = 1. Monte Carlo means with 99% bands (``SimResult.summary``) are drawn under the exact
curves of the second-moment recursion (``kdsim.theory.exact_moments``, docs/theory.md §5),
which carry no Monte Carlo noise. Writes paper_figure.pdf (vector) sized for one column.

    python examples/paper_figure.py [--out DIR]         # default DIR: kdsim-results/examples
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import kdsim  # noqa: E402
from kdsim import teachers, theory  # noqa: E402
from kdsim.problems import synthetic  # noqa: E402

STYLE = {  # a one-column figure: small serif text, thin lines, embedded TrueType fonts
    "font.family": "serif", "font.size": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.linewidth": 0.6, "lines.linewidth": 1.0,
    "pdf.fonttype": 42, "figure.dpi": 150,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="kdsim-results/examples", help="output folder")
    out = Path(parser.parse_args(argv).out)
    out.mkdir(parents=True, exist_ok=True)

    problem = synthetic.least_squares(n=200, d=10, cond=10.0, seed=0)
    teacher = teachers.at_distance(problem, r=0.3, seed=1)
    step, steps, every, b = 0.05, 1500, 10, 1
    lam_opt = theory.lambda_opt(problem, teacher.theta, step, b)
    lams = [0.0, lam_opt, 1.0]

    res = kdsim.simulate(problem, teacher.theta, lams, step, steps, seeds=1000, batch_size=b, record_every=every)
    mc = res.summary(level=0.99, records="dist2_opt")
    exact = [theory.exact_moments(problem, teacher.theta, lam, step, steps, b, record_every=every) for lam in lams]

    labels = [r"$\lambda = 0$ (SGD)", rf"$\lambda = \lambda_{{\rm opt}} = {lam_opt:.2f}$", r"$\lambda = 1$"]
    colours = ["#0072B2", "#D55E00", "#009E73"]          # colour-blind safe
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(3.4, 2.5), layout="constrained")
        for lam, ex, label, colour in zip(lams, exact, labels, colours):
            g = mc[mc["lam"] == lam]
            ax.fill_between(g["step"], g["ci_low"].clip(lower=1e-12), g["ci_high"], color=colour, alpha=0.25,
                            linewidth=0)
            ax.plot(g["step"], g["mean"], color=colour, label=label)
            ax.plot(ex.steps, ex.dist2_opt, color="black", linestyle=(0, (3, 2)), linewidth=0.8)
        ax.plot([], [], color="black", linestyle=(0, (3, 2)), linewidth=0.8, label="exact (§5)")
        ax.set_yscale("log")
        ax.set_xlabel("iteration t")
        ax.set_ylabel(r"$\mathbb{E}\,\|x_t - x^\star\|^2$")
        ax.legend(frameon=False, loc="upper right")
        ax.grid(True, which="major", linewidth=0.3, alpha=0.5)
        fig.savefig(out / "paper_figure.pdf")
    plt.close(fig)

    # how far the Monte Carlo means sit from the exact curves, in standard errors
    z = max(np.nanmax(np.abs(mc[mc["lam"] == lam]["mean"].to_numpy() - ex.dist2_opt)[1:]
                      / mc[mc["lam"] == lam]["sem"].to_numpy()[1:]) for lam, ex in zip(lams, exact))
    print(res)
    print(f"largest |Monte Carlo − exact| over the records: {z:.2f} standard errors")
    print(f"wrote {out / 'paper_figure.pdf'}")


if __name__ == "__main__":
    main()
