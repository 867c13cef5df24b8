#!/usr/bin/env bash
# Run: benchmarks/accelerator.sh [--quick]     (on whatever backend JAX finds; about 8 minutes)
#
# One command for an accelerator (GPU or TPU), also run on CPU: prints the device, runs the
# unit tests that matter on an accelerator (layers in float32 and bfloat16, the attention
# kernels, mixed precision, sharding over the local devices), then the overhead, CNN, GPT
# and data-parallel benchmarks with their ratios and the GPT step's model FLOPs utilisation,
# and the GPT step's peak memory with and without rematerialisation.
# Every part has a time limit, so the whole run stays under 8 minutes; a part that runs out
# of time is reported and the next one starts. --quick: a smoke run (a few tests, the GPT
# and data-parallel scripts at tiny sizes, without PyTorch; not the overhead and CNN
# scripts, which run unchanged in `make bench`), what the test suite runs on CPU to keep this script working;
# its limits are generous, for CI machines shared with other work.
# ACCELERATOR_REPORT=file also writes the output there.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; elif [ -n "${1:-}" ]; then
    echo "usage: benchmarks/accelerator.sh [--quick]" >&2
    exit 2
fi
if [ -n "${ACCELERATOR_REPORT:-}" ]; then exec > >(tee "$ACCELERATOR_REPORT") 2>&1; fi
FAILED=()

# part NAME SECONDS COMMAND...: runs COMMAND with a time limit and records a failure.
part() {
    local name=$1 limit=$2
    shift 2
    echo
    echo "## $name (limit ${limit} s)"
    echo
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "**$name: out of time after ${limit} s**"
        FAILED+=("$name (time)")
    elif [ $rc -ne 0 ]; then
        echo "**$name: failed (exit $rc)**"
        FAILED+=("$name")
    fi
    echo "($name: $((SECONDS - start)) s)"
}

echo "# nnfun on an accelerator: $(date -u +%Y-%m-%dT%H:%MZ)"
read -r BACKEND DEVICES < <("$PY" - <<'PYEOF'
import platform
import sys
import jax
devices = jax.devices()
print(f"jax {jax.__version__}, backend {jax.default_backend()}, {len(devices)} device(s): "
      f"{devices[0].device_kind}; host {platform.processor() or platform.machine()}",
      file=sys.stderr)
print(jax.default_backend(), jax.local_device_count())
PYEOF
)
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
grep -m1 'model name' /proc/cpuinfo 2>/dev/null
# On an accelerator the GPT benchmark takes the size that fills one (d_model 1024, 12 blocks,
# sequence 1024, batch 8); the CPU sizes would measure its dispatch, not its throughput.
if [ "$BACKEND" = cpu ]; then COUNTS=1,2,4,8 GPT=small; else COUNTS=$DEVICES GPT=gpu; fi

# Tests compare with float64 NumPy references: full float32 products on GPUs (no TF32),
# and no preallocation, so the test processes can share the device.
TEST_ENV=(env JAX_DEFAULT_MATMUL_PRECISION=highest XLA_PYTHON_CLIENT_PREALLOCATE=false)
TESTS=(tests/test_layers_basic.py tests/test_conv.py tests/test_norm.py tests/test_attention.py
    tests/test_attention_kernels.py tests/test_transformer.py tests/test_ops.py
    tests/test_precision.py tests/test_parallel.py)
if [ $QUICK = 1 ]; then
    part "unit tests (a sample)" 300 "${TEST_ENV[@]}" "$PY" -m pytest -q -p no:xdist -p no:cacheprovider \
        tests/test_attention_kernels.py::test_auto_picks_by_backend \
        tests/test_attention_kernels.py::test_cudnn_errors_name_what_is_missing \
        tests/test_precision.py::test_dense_in_bfloat16_matches_numpy_reference \
        tests/test_parallel.py::test_data_parallel_step_on_one_device_equals_plain_jit
    part "GPT step (tiny, a smoke run)" 300 "$PY" benchmarks/gpt_step.py --configs tiny \
        --rounds 1 --steps 1 --host-memory this --no-torch
    part "data parallel" 300 "$PY" benchmarks/data_parallel.py --device-counts 1 --rounds 1 \
        --inner 2 --batch 64
else
    # The 8-device sharding tests force host CPU devices: on an accelerator only the
    # tests over the devices it has run (-m "not slow" there).
    MARK=()
    [ "$BACKEND" != cpu ] && MARK=(-m "not slow")
    part "unit tests" 140 "${TEST_ENV[@]}" "$PY" -m pytest -q -p no:xdist -p no:cacheprovider \
        "${MARK[@]}" "${TESTS[@]}"
    part "overhead" 30 "$PY" benchmarks/overhead.py --quick
    part "CNN step" 40 "$PY" benchmarks/cnn_step.py --quick
    part "GPT step" 180 "$PY" benchmarks/gpt_step.py --configs $GPT --rounds 3 --steps 3 \
        --host-memory this
    part "data parallel" 30 "$PY" benchmarks/data_parallel.py --device-counts "$COUNTS" --quick
    part "GPT step memory with and without remat" 60 "$PY" benchmarks/remat_memory.py --gpt-only
fi

echo
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "accelerator check: every part passed"
else
    echo "accelerator check: FAILED: ${FAILED[*]}"
    exit 1
fi
