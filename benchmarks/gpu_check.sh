#!/usr/bin/env bash
# The GPU check: what optimlab's CUDA paths do on a real GPU, in one run of under 8 minutes, into one report.
#
# No GPU has been lent to this project yet, so the Triton kernels and the CUDA paths have only run under Triton's
# interpreter (CI) and this script is what the first GPU machine runs:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]          # default OUT_DIR: gpu-check-<UTC date and time>
#     GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh   # the same steps on CPU (Triton's interpreter, tiny sizes)
#
# Steps (each under its own time limit; a step that fails is reported and the next one still runs):
#   1. environment: GPU (nvidia-smi), Python, torch, CUDA, Triton, optimlab's commit, into env.txt;
#   2. tests on the device: tests/test_gpu.py (every dispatch row forced on CUDA against the CPU plain loop, every
#      optimizer and configuration of tests/optim_db.py; Triton kernels compiled for the device) and
#      tests/test_every_optimizer.py::test_cuda_matches_cpu (the default path on CUDA against the CPU loop);
#   3. the GPU benchmark: benchmarks/step_speed.py --gpu (every element-wise optimizer at 100M fp32 parameters
#      against the device's measured copy bandwidth; optimlab on Triton and on its default path against torch's
#      fused and foreach implementations and the peers; the first step of a fresh optimizer, cold Triton cache);
#   and report.md: each step's command, time, exit status and output.
#
# What it needs: a Python whose torch sees a CUDA device (any torch build; the script installs no torch), pytest,
# numpy, scipy and Triton. Where a package index is reachable it installs optimlab's own test requirements that are
# missing (`pip install --no-deps` of the names below); where none is (an offline machine) it uses what is there
# and says what is missing. optimlab itself is used from this checkout (PYTHONPATH=src), not installed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-gpu-check-$(date -u +%Y%m%d-%H%M)}
SMOKE=${GPU_CHECK_SMOKE:-0}
REPORT="$OUT/report.md"
export PYTHONPATH="$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="$OUT/triton-cache"   # a fresh cache: first-step times include compiling

if [ "$SMOKE" = 1 ]; then
    export TRITON_INTERPRET=1
    mkdir -p "$OUT"
    echo "# optimlab GPU check: SMOKE RUN on CPU (Triton's interpreter); no GPU number here" > "$REPORT"
elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False); nothing to check." >&2
    echo "gpu_check: GPU_CHECK_SMOKE=1 runs the same steps on CPU under Triton's interpreter." >&2
    exit 2
else
    unset TRITON_INTERPRET
    mkdir -p "$OUT"
    echo "# optimlab GPU check" > "$REPORT"
fi

missing=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(n for n in ("pytest", "numpy", "scipy", "triton") if importlib.util.find_spec(n) is None))
EOF
)
if [ -n "$missing" ]; then
    echo "gpu_check: installing the missing $missing"
    "$PY" -m pip install -q --no-deps $missing || echo "gpu_check: could not install $missing (offline?); going on"
fi

step() {  # step TITLE LIMIT_SECONDS COMMAND...: run, time, record in the report
    local title=$1 limit=$2
    shift 2
    local log="$OUT/$(echo "$title" | tr -c 'A-Za-z0-9\n' '-' | tr -s '-').log"
    echo "== $title (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$log" 2>&1
    local rc=$?
    local dt=$((SECONDS - t0))
    [ $rc = 124 ] && echo "(stopped at the ${limit} s limit)" >> "$log"
    echo "   exit $rc after ${dt}s; log: $log"
    {
        echo
        echo "## $title"
        echo
        echo "\`$*\`: exit status $rc, ${dt} s (limit ${limit} s)"
        echo
        echo '```'
        tail -c 60000 "$log"
        echo '```'
    } >> "$REPORT"
}

{
    echo
    echo "Date (UTC): $(date -u '+%Y-%m-%d %H:%M')"
    echo "Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
} >> "$REPORT"
echo "== environment"
{
    nvidia-smi 2>/dev/null || echo "nvidia-smi: not found"
    "$PY" -c "
import platform, torch
print('python', platform.python_version(), '| torch', torch.__version__, '| CUDA', torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print('device:', p.name, '|', p.multi_processor_count, 'SMs |', round(p.total_memory / 2**30, 1), 'GiB')
try:
    import triton
    print('triton', triton.__version__)
except ImportError:
    print('triton: not installed')
import optimlab
print('optimlab', optimlab.__version__, 'from', optimlab.__file__)
"
} > "$OUT/env.txt" 2>&1
{
    echo
    echo "## environment"
    echo
    echo '```'
    cat "$OUT/env.txt"
    echo '```'
} >> "$REPORT"

if [ "$SMOKE" = 1 ]; then
    step "tests on the device" 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py
    step "GPU benchmark" 240 "$PY" benchmarks/step_speed.py --gpu --gpu-smoke --no-peers --only Adam,AdamW,Lion
else
    step "tests on the device" 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py \
        "tests/test_every_optimizer.py::test_cuda_matches_cpu"
    step "GPU benchmark" 240 "$PY" benchmarks/step_speed.py --gpu --gpu-size 100e6
fi
echo
echo "report: $REPORT"
