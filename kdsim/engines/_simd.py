"""Explicit SIMD vectors for the numba kernels, as numba intrinsics over LLVM vector types.

LLVM's loop vectoriser on this project's targets stops at 256-bit vectors (the host tuning prefers
them), and a dot product over a short row leaves a scalar remainder and a horizontal sum per output.
Small matrix products are written instead with ``LANES``-element vectors (``_Vec``) that lower to whole
AVX-512 registers (two AVX2 registers, or four SSE ones, on machines without AVX-512), with masked
loads and stores for the last partial vector of a row. Every intrinsic takes a C-contiguous array and
a flat element index into it (no views). ``_borrow``/``_alive`` pass arrays to calls in hot loops
without atomic reference counting.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, models, register_model

#: elements of one explicit vector (``_Vec``): an AVX-512 register of float64
LANES = 8


class _Vec(types.Type):
    """LANES elements of a float dtype held in one LLVM vector value."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"Vec({dtype} x {LANES})")


@register_model(_Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), LANES))


_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _float_array(arr):
    if not (isinstance(arr, types.Array) and arr.layout == "C" and isinstance(arr.dtype, types.Float)):
        raise TypingError(f"explicit vectors need a C-contiguous float array, got {arr}")


def _vname(vty):
    """LLVM's name suffix of a float vector type (v8f64, v8f32)."""
    return f"v{vty.count}f{64 if vty.element == ir.DoubleType() else 32}"


def _elem_ptr(context, builder, aryty, ary, idxty, idx):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.gep(data, [context.cast(builder, idx, idxty, types.intp)])


def _lane_mask(context, builder, nty, n):
    """<LANES x i1>: lane l < n."""
    n = context.cast(builder, n, nty, types.int64)
    vty = ir.VectorType(_I64, LANES)
    nv = builder.insert_element(ir.Constant(vty, ir.Undefined), n, ir.Constant(_I32, 0))
    nv = builder.shuffle_vector(nv, nv, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))
    return builder.icmp_signed("<", ir.Constant(vty, list(range(LANES))), nv)


def wide_vectors():
    """Whether numba compiles for 512-bit vectors (AVX-512F): the features numba itself targets (its
    ``NUMBA_CPU_FEATURES`` override, else the host's)."""
    from numba import config
    from numba.core.codegen import get_host_cpu_features
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return "+avx512f" in features.split(",")


def _splat(builder, vty, s):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), s, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


def _intrinsic(builder, name, ret, args, fastmath=()):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args, fastmath=fastmath)


@intrinsic
def _vload(typingctx, arr, i):
    """arr.flat[i : i + LANES]."""
    _float_array(arr)
    vt = _Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load(builder.bitcast(ptr, context.get_value_type(vt).as_pointer()), align=1)
    return vt(arr, i), codegen


def _whole(context, builder, nty, n):
    """i1: n >= LANES (a whole vector: plain loads and stores, which store forwarding serves; a masked
    store is not forwarded to a later load of the same bytes, which then waits for the store to retire)."""
    n = context.cast(builder, n, nty, types.int64)
    return builder.icmp_signed(">=", n, ir.Constant(_I64, LANES))


@intrinsic
def _vload_n(typingctx, arr, i, n):
    """arr.flat[i : i + n] in the first n lanes (n >= LANES: all), zeros after; reads nothing beyond."""
    _float_array(arr)
    vt = _Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        vty = context.get_value_type(vt)
        with builder.if_else(_whole(context, builder, sig.args[2], args[2])) as (whole, part):
            with whole:
                v0 = builder.load(builder.bitcast(ptr, vty.as_pointer()), align=1)
                b0 = builder.block
            with part:
                mask = _lane_mask(context, builder, sig.args[2], args[2])
                v1 = _intrinsic(builder, f"llvm.masked.load.{_vname(vty)}.p0", vty,
                                [ptr, ir.Constant(_I32, 1), mask, ir.Constant(vty, None)])
                b1 = builder.block
        phi = builder.phi(vty)
        phi.add_incoming(v0, b0)
        phi.add_incoming(v1, b1)
        return phi
    return vt(arr, i, n), codegen


@intrinsic
def _vstore(typingctx, arr, i, v):
    """arr.flat[i : i + LANES] = v."""
    _float_array(arr)

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        builder.store(args[2], builder.bitcast(ptr, args[2].type.as_pointer()), align=1)
        return context.get_dummy_value()
    return types.none(arr, i, v), codegen


def _masked_store(context, builder, ptr, v, mask):
    _intrinsic(builder, f"llvm.masked.store.{_vname(v.type)}.p0", ir.VoidType(),
               [v, ptr, ir.Constant(_I32, 1), mask])


@intrinsic
def _vstore_n(typingctx, arr, i, v, n):
    """arr.flat[i : i + n] = the first n lanes of v (n >= LANES: all); writes nothing beyond."""
    _float_array(arr)

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        with builder.if_else(_whole(context, builder, sig.args[3], args[3])) as (whole, part):
            with whole:
                builder.store(args[2], builder.bitcast(ptr, args[2].type.as_pointer()), align=1)
            with part:
                _masked_store(context, builder, ptr, args[2], _lane_mask(context, builder, sig.args[3], args[3]))
        return context.get_dummy_value()
    return types.none(arr, i, v, n), codegen


@intrinsic
def _vstore_half_n(typingctx, arr, i, v, half, n):
    """arr.flat[i : i + n] = lanes half·LANES/2 + (0 .. n − 1) of v, n <= LANES/2 taken as at most that."""
    _float_array(arr)
    if not isinstance(half, types.IntegerLiteral):
        raise TypingError("half must be a literal 0 or 1")
    h = half.literal_value

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        q = LANES // 2
        lanes = ir.Constant(ir.VectorType(_I32, q), list(range(h * q, h * q + q)))
        sub = builder.shuffle_vector(args[2], args[2], lanes)
        n = context.cast(builder, args[4], sig.args[4], types.int64)
        vty = ir.VectorType(_I64, q)
        nv = builder.insert_element(ir.Constant(vty, ir.Undefined), n, ir.Constant(_I32, 0))
        nv = builder.shuffle_vector(nv, nv, ir.Constant(ir.VectorType(_I32, q), [0] * q))
        _masked_store(context, builder, ptr, sub, builder.icmp_signed("<", ir.Constant(vty, list(range(q))), nv))
        return context.get_dummy_value()
    return types.none(arr, i, v, half, n), codegen


@intrinsic
def _vbcast(typingctx, arr, i):
    """arr.flat[i] in every lane."""
    _float_array(arr)
    vt = _Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return _splat(builder, context.get_value_type(vt), builder.load(ptr))
    return vt(arr, i), codegen


@intrinsic
def _vsplat(typingctx, s):
    """s in every lane."""
    if not isinstance(s, types.Float):
        raise TypingError(f"_vsplat needs a float, got {s}")
    vt = _Vec(s)

    def codegen(context, builder, sig, args):
        return _splat(builder, context.get_value_type(vt), args[0])
    return vt(s), codegen


@intrinsic
def _vfma(typingctx, a, b, c):
    """a·b + c, fused."""
    def codegen(context, builder, sig, args):
        return _intrinsic(builder, f"llvm.fma.{_vname(args[0].type)}", args[0].type, list(args))
    return a(a, b, c), codegen


def _vbinop(op):
    @intrinsic
    def f(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])
        return a(a, b), codegen
    return f


_vadd, _vsub, _vmul, _vdiv = (_vbinop(op) for op in ("fadd", "fsub", "fmul", "fdiv"))


@intrinsic
def _vsum(typingctx, v):
    """Σ of the lanes (tree order)."""
    def codegen(context, builder, sig, args):
        el = args[0].type.element
        return _intrinsic(builder, f"llvm.vector.reduce.fadd.{_vname(args[0].type)}", el,
                          [ir.Constant(el, -0.0), args[0]], fastmath=("reassoc",))
    return v.dtype(v), codegen


@intrinsic
def _vhsum8(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):
    """The vector of the lane sums (Σ a0, …, Σ a7): a transposing reduction, 7 adds for 8 sums."""
    if LANES != 8:
        raise TypingError("_vhsum8 is written for 8 lanes")

    def codegen(context, builder, sig, args):
        def shuf(x, y, idx):
            return builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(_I32, 8), idx))

        def level(x, y, lo, hi):
            return builder.fadd(shuf(x, y, lo), shuf(x, y, hi))
        s = [level(args[2 * p], args[2 * p + 1], [0, 8, 2, 10, 4, 12, 6, 14], [1, 9, 3, 11, 5, 13, 7, 15])
             for p in range(4)]
        t = [level(s[2 * p], s[2 * p + 1], [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
             for p in range(2)]
        return level(t[0], t[1], [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15])
    return a0(a0, a1, a2, a3, a4, a5, a6, a7), codegen


@intrinsic
def _vtranspose8(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):
    """The 8×8 transpose of the rows a0 … a7: a tuple of the 8 columns (24 shuffles)."""
    if LANES != 8:
        raise TypingError("_vtranspose8 is written for 8 lanes")
    rt = types.UniTuple(a0, 8)

    def codegen(context, builder, sig, args):
        def shuf(x, y, idx):
            return builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(_I32, 8), idx))
        t = []
        for p in range(4):
            t += [shuf(args[2 * p], args[2 * p + 1], [0, 8, 2, 10, 4, 12, 6, 14]),
                  shuf(args[2 * p], args[2 * p + 1], [1, 9, 3, 11, 5, 13, 7, 15])]
        u = []
        for h in range(2):             # rows 0-3, rows 4-7
            t0, t1, t2, t3 = t[4 * h:4 * h + 4]
            u += [shuf(t0, t2, [0, 1, 8, 9, 4, 5, 12, 13]), shuf(t1, t3, [0, 1, 8, 9, 4, 5, 12, 13]),
                  shuf(t0, t2, [2, 3, 10, 11, 6, 7, 14, 15]), shuf(t1, t3, [2, 3, 10, 11, 6, 7, 14, 15])]
        lo, hi = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
        cols = [shuf(u[c], u[4 + c], lo) for c in range(4)] + [shuf(u[c], u[4 + c], hi) for c in range(4)]
        return context.make_tuple(builder, sig.return_type, cols)
    return rt(a0, a1, a2, a3, a4, a5, a6, a7), codegen


@intrinsic
def _vkeep_n(typingctx, v, n):
    """v in the first n lanes, zeros after."""
    def codegen(context, builder, sig, args):
        mask = _lane_mask(context, builder, sig.args[1], args[1])
        return builder.select(mask, args[0], ir.Constant(args[0].type, None))
    return v(v, n), codegen


#: ln 2^-1022: ``_vexp`` is 0 below it (no subnormal results)
_EXP_MIN = -708.3964185322641

#: Taylor coefficients 1/k! of e^r, k = 0 .. 13: on |r| <= ln2/2 the truncation is below 1e-17 relative
_EXP_COEFS = [1.0 / math.factorial(k) for k in range(14)]


@intrinsic
def _vexp(typingctx, v):
    """e^v per lane, computed in float64: v = k·ln2 + r (Cody–Waite, |r| <= ln2/2), e^r by its Taylor
    polynomial, 2^k applied as two exponent-field scalings (overflow to inf); within one ulp of the
    correctly rounded value (fast-math ``afn`` allows as much of ``np.exp``), except that results below
    the smallest normal number are 0; NaN stays NaN."""
    def codegen(context, builder, sig, args):
        x = args[0]
        vin = x.type
        vd = ir.VectorType(ir.DoubleType(), LANES)
        vi = ir.VectorType(_I64, LANES)
        if vin.element != ir.DoubleType():
            x = builder.fpext(x, vd)

        def c(val):
            return ir.Constant(vd, [val] * LANES)
        # below ln 2^-1022 the result is 0, not a subnormal: computing subnormals costs a microcode
        # assist per instruction (the clamped lanes are computed too, so they stay normal)
        small = builder.fcmp_ordered("<", x, c(_EXP_MIN))
        xc = builder.select(small, c(_EXP_MIN + 0.01), x)
        xc = builder.select(builder.fcmp_ordered(">", xc, c(710.0)), c(710.0), xc)
        fma = f"llvm.fma.{_vname(vd)}"
        k = _intrinsic(builder, f"llvm.rint.{_vname(vd)}", vd, [builder.fmul(xc, c(1.4426950408889634))])
        r = _intrinsic(builder, fma, vd, [builder.fneg(k), c(6.93147180369123816490e-01), xc])   # ln2 hi
        r = _intrinsic(builder, fma, vd, [builder.fneg(k), c(1.90821492927058770002e-10), r])    # ln2 lo
        p = c(_EXP_COEFS[-1])
        for coef in reversed(_EXP_COEFS[:-1]):
            p = _intrinsic(builder, fma, vd, [p, r, c(coef)])
        if LANES == 8 and wide_vectors():
            # AVX-512's vscalefpd: p·2^k in one instruction (the same exact products as below)
            p = _intrinsic(builder, "llvm.x86.avx512.mask.scalef.pd.512", vd,
                           [p, k, ir.Constant(vd, None), ir.Constant(ir.IntType(8), -1), ir.Constant(_I32, 4)])
        else:
            ki = builder.fptosi(k, vi)
            k1 = builder.ashr(ki, ir.Constant(vi, [1] * LANES))
            k2 = builder.sub(ki, k1)
            for kk in (k1, k2):
                bits = builder.shl(builder.add(kk, ir.Constant(vi, [1023] * LANES)), ir.Constant(vi, [52] * LANES))
                p = builder.fmul(p, builder.bitcast(bits, vd))
        p = builder.select(small, c(0.0), p)
        p = builder.select(builder.fcmp_unordered("uno", x, x), x, p)
        return p if vin.element == ir.DoubleType() else builder.fptrunc(p, vin)
    return v(v), codegen


#: 1/(2j + 1), j = 0 .. 10: log m = 2 atanh(s) = 2s Σ_j s^(2j)/(2j + 1) with |s| <= (√2 − 1)/(√2 + 1), where
#: s² < 0.0295 and the truncation is below 1e-18 relative
_LOG_COEFS = [1.0 / (2 * j + 1) for j in range(11)]


@intrinsic
def _vlog(typingctx, v):
    """log v per lane for positive normal v (within two ulp), −inf at 0, +inf at +inf, NaN below 0 and at NaN
    (subnormal v is outside its domain): v = 2^e·m with √½ <= m < √2, log m by its atanh series in
    s = (m − 1)/(m + 1), then e·ln2 (Cody–Waite) added."""
    if not (isinstance(v, _Vec) and v.dtype == types.float64):
        raise TypingError(f"_vlog is written for float64 vectors, got {v}")

    def codegen(context, builder, sig, args):
        x = args[0]
        vd = x.type
        vi = ir.VectorType(_I64, LANES)

        def c(val):
            return ir.Constant(vd, [val] * LANES)

        def ci(val):
            return ir.Constant(vi, [val] * LANES)
        bits = builder.bitcast(x, vi)
        e = builder.sub(builder.ashr(bits, ci(52)), ci(1023))
        m = builder.bitcast(builder.or_(builder.and_(bits, ci((1 << 52) - 1)), ci(1023 << 52)), vd)
        big = builder.fcmp_ordered(">", m, c(math.sqrt(2.0)))
        m = builder.select(big, builder.fmul(m, c(0.5)), m)
        e = builder.add(e, builder.zext(big, vi))
        ef = builder.sitofp(e, vd)
        s = builder.fdiv(builder.fsub(m, c(1.0)), builder.fadd(m, c(1.0)))
        s2 = builder.fmul(s, s)
        fma = f"llvm.fma.{_vname(vd)}"
        q = c(_LOG_COEFS[-1])
        for coef in reversed(_LOG_COEFS[:-1]):
            q = _intrinsic(builder, fma, vd, [q, s2, c(coef)])
        lm = builder.fmul(builder.fadd(s, s), q)
        out = _intrinsic(builder, fma, vd, [ef, c(1.90821492927058770002e-10), lm])      # ln2 lo
        out = _intrinsic(builder, fma, vd, [ef, c(6.93147180369123816490e-01), out])     # ln2 hi
        out = builder.select(builder.fcmp_ordered("==", x, c(0.0)), c(-math.inf), out)
        out = builder.select(builder.fcmp_ordered("==", x, c(math.inf)), c(math.inf), out)
        return builder.select(builder.fcmp_unordered("<", x, c(0.0)), c(math.nan), out)
    return v(v), codegen


@intrinsic
def _vzero(typingctx, arr):
    """Zeros in arr's dtype."""
    _float_array(arr)
    vt = _Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)
    return vt(arr), codegen


@intrinsic
def _address(typingctx, arr):
    """The address of arr's data."""
    def codegen(context, builder, sig, args):
        return builder.ptrtoint(context.make_array(sig.args[0])(context, builder, args[0]).data, _I64)
    return types.int64(arr), codegen


@intrinsic
def _borrow(typingctx, arr):
    """arr without its owner reference (a null meminfo): a function called with it skips the atomic
    reference counting of its array arguments (NRT_incref/decref return at once on null). The owner
    must outlive it (``_alive``)."""
    if not isinstance(arr, types.Array):
        raise TypingError(f"_borrow needs an array, got {arr}")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        dst = context.make_array(sig.return_type)(context, builder)
        for name in ("data", "shape", "strides", "itemsize", "nitems"):
            setattr(dst, name, getattr(src, name))
        dst.meminfo = cgutils.get_null_value(dst.meminfo.type)
        dst.parent = cgutils.get_null_value(dst.parent.type)
        return dst._getvalue()
    return arr(arr), codegen


@intrinsic
def _alive(typingctx, arr):
    """Nothing: a use of arr (an array or a tuple of them) that keeps it, the owner of ``_borrow`` views,
    alive until here (numba releases a variable after its last use)."""
    def codegen(context, builder, sig, args):
        return context.get_dummy_value()
    return types.none(arr), codegen


#: bytes of a cache line: vectors of a row that starts on one are never split across two
ALIGN = 64


def aligned_zeros(shape, dtype, align=ALIGN):
    """A zero C-contiguous array whose data starts on a cache line: rows of whole vectors are then whole
    lines, and no vector load of a kernel straddles two."""
    size = int(np.prod(shape))
    item = np.dtype(dtype).itemsize
    buf = np.zeros(size + align // item, dtype=dtype)
    off = (-buf.ctypes.data) % align // item
    return buf[off:off + size].reshape(shape)


@njit(cache=True, nogil=True)
def _aligned_empty(rows, cols, like):
    """An uninitialised (rows, cols) array of like's dtype whose data starts on a cache line (numba's
    own allocations are 32-byte aligned): a row of cols a multiple of LANES is then whole lines."""
    item = like.itemsize
    buf = np.empty(rows * cols + ALIGN // item, dtype=like.dtype)
    off = (-_address(buf)) % ALIGN // item
    return buf[off:off + rows * cols].reshape((rows, cols))


@intrinsic
def _vf64(typingctx, v):
    """v in float64 (exact; v itself when it is float64)."""
    if not isinstance(v, _Vec):
        raise TypingError(f"_vf64 needs an explicit vector, got {v}")
    vt = _Vec(types.float64)

    def codegen(context, builder, sig, args):
        vd = context.get_value_type(vt)
        return args[0] if args[0].type == vd else builder.fpext(args[0], vd)
    return vt(v), codegen


@intrinsic
def _vabs(typingctx, v):
    """|v| per lane."""
    def codegen(context, builder, sig, args):
        return _intrinsic(builder, f"llvm.fabs.{_vname(args[0].type)}", args[0].type, [args[0]])
    return v(v), codegen


@intrinsic
def _vnonneg(typingctx, v):
    """1 where v >= 0 and 0 elsewhere, NaN included (an ordered comparison), in v's dtype."""
    def codegen(context, builder, sig, args):
        vty = args[0].type
        ok = builder.fcmp_ordered(">=", args[0], ir.Constant(vty, None))
        return builder.select(ok, ir.Constant(vty, [1.0] * LANES), ir.Constant(vty, None))
    return v(v), codegen


#: |z| bounds within which e^z, sums of up to 2·LANES such terms and their reciprocals are normal numbers
#: (float64: e^±700, 16·e^700 < 1.8e308; float32: e^±80, 16·e^80 < 3.4e38)
EXP_SAFE = {64: 700.0, 32: 80.0}


@intrinsic
def _vexp_safe(typingctx, v):
    """True when every lane has |v| <= ``EXP_SAFE`` of v's dtype (a NaN lane fails): a softmax of such
    logits needs no shift by their max. One compare into a mask, no reduction chain."""
    def codegen(context, builder, sig, args):
        vty = args[0].type
        bits = 64 if vty.element == ir.DoubleType() else 32
        absv = _intrinsic(builder, f"llvm.fabs.{_vname(vty)}", vty, [args[0]])
        ok = builder.fcmp_ordered("<=", absv, ir.Constant(vty, [EXP_SAFE[bits]] * LANES))
        mask = builder.bitcast(ok, ir.IntType(LANES))
        return builder.icmp_unsigned("==", mask, ir.Constant(ir.IntType(LANES), (1 << LANES) - 1))
    return types.boolean(v), codegen


@intrinsic
def _vmax(typingctx, a, b):
    """max(a, b) per lane (b where a is NaN)."""
    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[0], args[1])
    return a(a, b), codegen


@intrinsic
def _vwhere_gt(typingctx, a, b, x, y):
    """x where a > b, y elsewhere (NaN compares false), per lane."""
    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[2], args[3])
    return x(a, b, x, y), codegen


@intrinsic
def _vzero_beyond1(typingctx, v):
    """v where |v| <= 1 (and NaN), 0 where |v| > 1."""
    def codegen(context, builder, sig, args):
        vty = args[0].type
        absv = _intrinsic(builder, f"llvm.fabs.{_vname(vty)}", vty, [args[0]])
        big = builder.fcmp_ordered(">", absv, ir.Constant(vty, [1.0] * LANES))
        return builder.select(big, ir.Constant(vty, None), args[0])
    return v(v), codegen


@intrinsic
def _vmax_all(typingctx, v):
    """The largest lane in every lane: log2(LANES) swaps of halves, each with a lane-wise ``_vmax`` (LLVM's
    ``reduce.fmax`` became a serial chain of scalar max with NaN tests). A NaN lane may or may not win."""
    def codegen(context, builder, sig, args):
        x = args[0]
        half = LANES // 2
        while half >= 1:
            idx = [lane ^ half for lane in range(LANES)]
            y = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, LANES), idx))
            x = builder.select(builder.fcmp_ordered(">", x, y), x, y)
            half //= 2
        return x
    return v(v), codegen


@intrinsic
def _vblend_n(typingctx, v, n, w):
    """v in the first n lanes, w's lanes in the others."""
    def codegen(context, builder, sig, args):
        return builder.select(_lane_mask(context, builder, sig.args[1], args[1]), args[0], args[2])
    return v(v, n, w), codegen


@intrinsic
def _vsplat_recip(typingctx, s):
    """1/s (one scalar division, in s's dtype) in every lane."""
    if not isinstance(s, types.Float):
        raise TypingError(f"_vsplat_recip needs a float, got {s}")
    vt = _Vec(s)

    def codegen(context, builder, sig, args):
        return _splat(builder, context.get_value_type(vt), builder.fdiv(ir.Constant(args[0].type, 1.0), args[0]))
    return vt(s), codegen


@intrinsic
def _vjoin_low(typingctx, a, b):
    """Lanes 0 .. LANES/2 − 1 of a, then lanes 0 .. LANES/2 − 1 of b."""
    def codegen(context, builder, sig, args):
        h = LANES // 2
        idx = list(range(h)) + [LANES + k for k in range(h)]
        return builder.shuffle_vector(args[0], args[1], ir.Constant(ir.VectorType(_I32, LANES), idx))
    return a(a, b), codegen


@intrinsic
def _vhigh_to_low(typingctx, v):
    """Lanes LANES/2 .. LANES − 1 of v in lanes 0 .. LANES/2 − 1, zeros after."""
    def codegen(context, builder, sig, args):
        h = LANES // 2
        idx = [h + k for k in range(h)] + [LANES + k for k in range(h)]
        return builder.shuffle_vector(args[0], ir.Constant(args[0].type, None),
                                      ir.Constant(ir.VectorType(_I32, LANES), idx))
    return v(v), codegen
