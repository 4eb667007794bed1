"""Baseline (b): JAX, ``jit(vmap(lax.scan))`` — one trajectory written as a scan, vmapped.

A trajectory is ``traj(data, x0, a, c, idx)``: an outer ``lax.scan`` over the record
intervals whose body is an inner ``lax.scan`` over the steps of one interval (the
control-variate step g = ∇f_B(x) − a·T_B + c·T of ``benchmarks.common`` plus kdsim's
divergence guard) followed by the three records of the iterate (float64). It is
vmapped over seeds and then over the λ grid (under common random numbers the λ
axis shares the seed's index stream) and jitted once.

Minibatch indices: **precomputed with kdsim.rng** (``kdsim.rng.minibatch_indices``,
the numpy ground truth) for every (seed, step) and passed in as an int32 array, not
a JAX port of the generator. Their generation time is reported as ``indices_s`` and
is *not* part of the timed run (kdsim draws its indices inside its kernels and its
time includes them, so this favours JAX). fp64 runs use ``jax_enable_x64`` (set on
import); float32 runs keep the iterate arithmetic in float32 and evaluate the
records in float64. Compilation (``jit(...).lower(...).compile()``) is timed
separately (``compile_s``) and excluded from ``run_s``.

MLPs (``kdsim.MLP``): the step is a forward pass of the minibatch (biases, hidden
activation), the combined output residual and back-propagation through the student's
layers, written out as for deep linear nets (no ``jax.grad``: the update is kdsim's
estimator, not the gradient of one loss); the records take a forward pass of every sample.

``available()`` says whether JAX imports; ``build(problem, plan, dtype)`` returns a
``Compiled`` (inputs on the device, compiled executable); ``Compiled.run()`` returns
the arrays of kdsim's engines plus ``timing``; ``run(problem, plan, dtype)`` does both.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .common import RECORDS, all_minibatches, prepare


def available():
    """True when JAX imports (the baseline is optional: ``pip install jax``, extra ``bench``)."""
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def _jax():
    if not available():
        raise ImportError("the JAX baseline needs JAX: pip install 'jax>=0.4.20' (kdsim's extra 'bench')")
    import jax
    jax.config.update("jax_enable_x64", True)
    return jax


def versions():
    """Versions of jax and jaxlib, and the default backend (None when JAX is absent)."""
    if not available():
        return None
    jax = _jax()
    import jaxlib
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()]}


def _functions(spec):
    """(step, record) of one trajectory for the spec's family, as jax.numpy code."""
    import jax.numpy as jnp
    depth, dims = spec.depth, spec.layers
    offs = [int(o) for o in spec.offsets]
    d_in, d_out, b = dims[0], dims[-1], spec.batch
    ls = spec.kind == "least_squares"
    has_teacher = bool(np.any(spec.rt != 0.0)) and bool(np.any(spec.a != 0.0))
    has_full = bool(np.any(spec.c != 0.0))
    has_ridge = bool(np.any(spec.ridge != 0.0))
    alpha, gam, inv_b = spec.l2, spec.step, 1.0 / b

    def layers(x):
        return [x[offs[k]:offs[k + 1]].reshape(dims[k + 1], dims[k]) for k in range(depth)]

    mlp = spec.kind == "mlp"
    bo = [int(o) for o in spec.bias_offsets] if mlp and spec.biases else None

    def biases(x):
        return [None] * depth if bo is None else [x[bo[k]:bo[k + 1]] for k in range(depth)]

    def act(Z):
        if spec.activation == "relu":
            return jnp.maximum(Z, 0.0)
        if spec.activation == "sigmoid":
            E = jnp.exp(-jnp.abs(Z))
            return jnp.where(Z >= 0, 1.0 / (1.0 + E), E / (1.0 + E))
        if spec.activation == "tanh":
            return jnp.tanh(Z)
        return Z

    def act_d1(H):
        if spec.activation == "relu":
            return (H > 0).astype(H.dtype)
        if spec.activation == "sigmoid":
            return H * (1.0 - H)
        if spec.activation == "tanh":
            return 1.0 - H * H
        return jnp.ones_like(H)

    def mlp_forward(x, H):
        """Layer inputs hs (hs[0] = H) and the outputs of the rows of H."""
        Ws, bs = layers(x), biases(x)
        hs = [H]
        for k in range(depth):
            Z = H @ Ws[k].T
            if bs[k] is not None:
                Z = Z + bs[k]
            if k == depth - 1:
                return Ws, hs, Z
            H = act(Z)
            hs.append(H)

    def residual(D, Z, idx, a):
        if spec.loss == "squared":
            R = Z - D["Y"][idx]
        else:
            E = jnp.exp(Z - Z.max(axis=-1, keepdims=True))
            R = E / E.sum(axis=-1, keepdims=True) - D["Y"][idx]
        if has_teacher:
            R = R - a * D["rt"][idx]
        return R * inv_b

    def step(D, x, idx, a, c):
        Ab = D["A"][idx]                                        # (b, d_in)
        if ls:
            r = residual(D, (Ab @ x)[:, None], idx, a)[:, 0]     # (b,)
            G = Ab.T @ r
        elif mlp:
            Ws, hs, Z = mlp_forward(x, Ab)
            delta = residual(D, Z, idx, a)
            blocks, bias_blocks = [None] * depth, [None] * depth
            for k in range(depth - 1, -1, -1):
                blocks[k] = (delta.T @ hs[k]).reshape(-1)
                bias_blocks[k] = delta.sum(axis=0)
                if k > 0:
                    delta = (delta @ Ws[k]) * act_d1(hs[k])
            G = jnp.concatenate(blocks + (bias_blocks if bo is not None else []))
        elif depth == 1:
            W = x.reshape(d_out, d_in)
            G = (residual(D, Ab @ W.T, idx, a).T @ Ab).reshape(-1)
        else:
            Ws = layers(x)
            hs = [Ab]
            for W in Ws:
                hs.append(hs[-1] @ W.T)
            delta = residual(D, hs[-1], idx, a)
            blocks = [None] * depth
            for k in range(depth - 1, -1, -1):
                blocks[k] = delta.T @ hs[k]
                if k > 0:
                    delta = delta @ Ws[k]
            if has_full:
                Q = [None]
                for k in range(depth - 1):
                    Q.append(Ws[k] if Q[-1] is None else Ws[k] @ Q[-1])
                V = c * D["Gt"]
                for k in range(depth - 1, -1, -1):
                    blocks[k] = blocks[k] + (V if Q[k] is None else V @ Q[k].T)
                    if k > 0:
                        V = Ws[k].T @ V
            G = jnp.concatenate([B.reshape(-1) for B in blocks])
        if has_full and depth == 1:
            G = G + c * D["tfull"]
        if alpha != 0.0:
            G = G + alpha * x
        if has_ridge:
            G = G + ((-a) if depth == 1 else (c - a)) * D["ridge"]
        return x - gam * G

    def mlp_record(R64, x):
        Z = mlp_forward(x, R64["A"])[2]                          # (n, d_out)
        C = Z.reshape(-1) / np.sqrt(spec.n) if spec.function_space else x
        e = C - R64["xstar"]
        w = C - R64["theta"]
        if spec.loss == "squared":
            Rz = Z - R64["Y"]
            loss = 0.5 * jnp.sum(Rz * Rz) / spec.n
        else:
            zmax = Z.max(axis=1, keepdims=True)
            lse = zmax[:, 0] + jnp.log(jnp.exp(Z - zmax).sum(axis=1))
            loss = (lse.sum() - jnp.sum(Z * R64["Y"])) / spec.n
        return jnp.stack([e @ e, loss + 0.5 * alpha * (x @ x) - spec.f_star, w @ w])

    def record(R64, x):
        x = x.astype(jnp.float64)
        if mlp:
            return mlp_record(R64, x)
        if ls:
            C = x
        elif spec.kind == "softmax":
            W = x.reshape(d_out, d_in)
            C = (W - W.mean(axis=0, keepdims=True)).reshape(-1)
        else:
            M = None
            for W in layers(x):
                M = W if M is None else W @ M
            C = M.reshape(-1)
        e = C - R64["xstar"]
        d1 = e @ e
        w = C - R64["theta"]
        d3 = w @ w
        if ls:
            fe = R64["F"] @ e
            sub = 0.5 * (fe @ fe + alpha * d1)
        else:
            M = (x if spec.kind == "softmax" else C).reshape(d_out, d_in)
            Z = R64["A"] @ M.T                                   # (n, d_out)
            if spec.loss == "squared":
                Rz = Z - R64["Y"]
                loss = 0.5 * jnp.sum(Rz * Rz) / spec.n
            else:
                zmax = Z.max(axis=1, keepdims=True)
                lse = zmax[:, 0] + jnp.log(jnp.exp(Z - zmax).sum(axis=1))
                loss = (lse.sum() - jnp.sum(Z * R64["Y"])) / spec.n
            sub = loss + 0.5 * alpha * (x @ x) - spec.f_star
        return jnp.stack([d1, sub, d3])

    return step, record


@dataclass
class Compiled:
    """A compiled JAX run: call ``run()`` (repeatable) for the records and the timing."""

    spec: object
    executable: object
    args: tuple
    compile_s: float
    indices_s: float

    def run(self):
        t0 = time.perf_counter()
        recs, div, x = self.executable(*self.args)
        recs.block_until_ready()
        run_s = time.perf_counter() - t0
        recs = np.asarray(recs)
        out = {name: recs[..., q].copy() for q, name in enumerate(RECORDS)}
        div = np.asarray(div).astype(np.int64)
        for name in RECORDS:
            after = (div[:, :, None] >= 0) & (self.spec.record_steps[None, None, :] >= div[:, :, None])
            out[name][after] = np.nan
        return {**out, "diverged_step": div, "x_final": np.asarray(x).astype(np.float64),
                "timing": {"run_s": run_s, "compile_s": self.compile_s, "indices_s": self.indices_s}}


def build(problem, plan, dtype="float64", indices=None):
    """Prepare, jit and compile the run of a validated plan; ``indices`` (optional) are
    ``benchmarks.common.all_minibatches`` of the plan, to reuse across dtypes."""
    jax = _jax()
    import jax.numpy as jnp
    from jax import lax

    spec = prepare(problem, plan, dtype)
    t0 = time.perf_counter()
    idx = all_minibatches(spec) if indices is None else indices
    indices_s = time.perf_counter() - t0 if indices is None else 0.0
    wd = jnp.float32 if dtype == "float32" else jnp.float64
    step, record = _functions(spec)
    steps = spec.steps
    k = int(spec.record_steps[1] - spec.record_steps[0]) if len(spec.record_steps) > 1 else steps
    n_full, tail = steps // k, steps % k
    limit = spec.limit

    def traj(D, R64, x0, a, c, head, rest):
        def inner(carry, idx_t):
            x, div, t = carry
            xn = step(D, x, idx_t, a, c)
            nx = jnp.sum(xn * xn)
            div = jnp.where((~(nx <= limit)) & (div < 0), t + 1, div)
            xn = jnp.where(div >= 0, jnp.nan, xn).astype(x.dtype)
            return (xn, div, t + 1), None

        def outer(carry, idx_block):
            carry, _ = lax.scan(inner, carry, idx_block)
            return carry, record(R64, carry[0])

        carry = (x0, jnp.int32(-1), jnp.int32(0))
        parts = [record(R64, x0)[None]]
        carry, recs = lax.scan(outer, carry, head)
        parts.append(recs)
        if tail:
            carry, _ = lax.scan(inner, carry, rest)
            parts.append(record(R64, carry[0])[None])
        return jnp.concatenate(parts), carry[1], carry[0]

    # indices laid out step-major: head (n_full, k, [L,] S, b), rest (tail, [L,] S, b)
    if spec.crn:
        seq = np.moveaxis(idx, 0, 1)                               # (steps, S, b)
        over_seeds = jax.vmap(traj, in_axes=(None, None, None, None, None, 2, 1))
        f = jax.vmap(over_seeds, in_axes=(None, None, None, 0, 0, None, None))
    else:
        seq = np.moveaxis(idx, 2, 0)                               # (steps, L, S, b)
        over_seeds = jax.vmap(traj, in_axes=(None, None, None, None, None, 2, 1))
        f = jax.vmap(over_seeds, in_axes=(None, None, None, 0, 0, 2, 1))
    head = np.ascontiguousarray(seq[:n_full * k].reshape((n_full, k) + seq.shape[1:]))
    rest = np.ascontiguousarray(seq[n_full * k:])
    D = {"A": spec.A, "Y": spec.targets, "rt": spec.rt, "Gt": spec.Gt, "ridge": spec.ridge,
         "tfull": spec.Gt.reshape(-1) + spec.ridge if spec.depth == 1 else spec.ridge}
    D = {key: jnp.asarray(v, dtype=wd) for key, v in D.items()}
    R64 = {"xstar": spec.xstar_c, "theta": spec.theta_c, "F": spec.F if spec.F.size else np.zeros((1, 1)),
           "A": spec.A, "Y": spec.targets}
    R64 = {key: jnp.asarray(v, dtype=jnp.float64) for key, v in R64.items()}
    args = (D, R64, jnp.asarray(spec.x0, dtype=wd), jnp.asarray(spec.a, dtype=wd),
            jnp.asarray(spec.c, dtype=wd), jnp.asarray(head), jnp.asarray(rest))
    args = jax.device_put(args)
    jax.block_until_ready(args)
    t0 = time.perf_counter()
    executable = jax.jit(f).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    return Compiled(spec, executable, args, compile_s, indices_s)


def run(problem, plan, dtype="float64"):
    """Build and run once; the arrays of kdsim's engines plus ``timing`` (run_s, compile_s, indices_s)."""
    return build(problem, plan, dtype).run()
