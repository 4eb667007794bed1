"""docs/theory.md §8 — the claim is stated in the docstring of kdsim.checks (module for 'power').

Usage: python theory_checks/14_power.py [--quick] [--seeds N] [--backend NAME]
Prints the comparison table and exits 1 when any row fails.
"""
import sys

from kdsim.checks import script_main

if __name__ == "__main__":
    sys.exit(script_main("power"))
