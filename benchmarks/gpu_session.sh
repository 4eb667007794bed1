#!/usr/bin/env bash
# The GPU session of the kernels issue in one command, for a lent GPU machine (device time is scarce):
# the machine, then the GPU benchmark (its own deadline), then the GPU tests (the `cudasim` tests run on
# the device when NUMBA_ENABLE_CUDASIM is unset, and the `gpu` tests), each under a time limit.
#
#   bash benchmarks/gpu_session.sh [OUT] [gpu.py options...]
#
# OUT (default benchmarks/results) receives gpu-<device>.{json,md} and gpu-session.log. From a plain
# checkout with the machine's CuPy, numba-cuda, JAX, pandas and pytest (no install, no network).
# Without a GPU: NUMBA_ENABLE_CUDASIM=1 bash benchmarks/gpu_session.sh /tmp/out --simulate --quick
set -u
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
shift $(( $# > 0 ? 1 : 0 ))
mkdir -p "$out"
log="$out/gpu-session.log"
: > "$log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
    python - <<'EOF'
import importlib, platform
mods = ("numpy", "numba", "numba_cuda", "cupy", "jax", "scipy", "pandas", "pytest")
print("python", platform.python_version(), *(f"{m} {getattr(importlib.import_module(m), '__version__', '?')}"
                                            if importlib.util.find_spec(m) else f"{m} missing" for m in mods))
EOF
} 2>&1 | tee -a "$log"
timeout 420 python benchmarks/gpu.py --deadline-s 300 --out "$out" "$@" 2>&1 | tee -a "$log"
bench_rc=${PIPESTATUS[0]}
timeout 240 python -m pytest -q -m "gpu or cudasim" -p no:cacheprovider \
    tests/test_engine_cuda.py tests/test_engine_cupy.py 2>&1 | tee -a "$log"
tests_rc=${PIPESTATUS[0]}
echo "gpu_session: benchmark rc=$bench_rc, tests rc=$tests_rc (124: the time limit)" | tee -a "$log"
[ "$bench_rc" -eq 0 ] && [ "$tests_rc" -eq 0 ]
