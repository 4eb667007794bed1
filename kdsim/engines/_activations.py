"""Hidden-layer activations of the MLP kernels, written once in plain Python and compiled twice: by
numba for the CPU kernels (``_kernels_layered``) and by numba-cuda as device functions (``_kernels_cuda``).
Codes: ``kdsim.kernelspec.ACTIVATION_CODES`` (0 identity, 1 ReLU, 2 sigmoid, 3 tanh)."""
from __future__ import annotations

import math


def activate(act, z):
    """σ(z) of a hidden layer."""
    if act == 1:
        return z if z > 0 else z - z
    if act == 2:
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)
    if act == 3:
        return math.tanh(z)
    return z


def activation_d1(act, h):
    """σ'(z) from h = σ(z) (ReLU: 1 where h > 0, i.e. z > 0)."""
    if act == 1:
        return h - h + 1 if h > 0 else h - h
    if act == 2:
        return h * (1 - h)
    if act == 3:
        return 1 - h * h
    return h - h + 1
