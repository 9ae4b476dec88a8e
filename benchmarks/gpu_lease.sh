#!/usr/bin/env bash
# The GPU proof's runs (docs/benchmarks.md, GPU section) in one command per lease of a
# CUDA machine: each part has a time limit, stops the parts after it once the lease's
# time is spent, and leaves its log under $RESULTS (default ./gpu-results).
#
#   FOCUS_REFERENCE=... LEASE_S=570 bash benchmarks/gpu_lease.sh env build compile giant
#
# Parts: env (GPU, driver, torch, compilers), build (both kernels, self-checked),
# cuda-tests (the CUDA, golden and precision tests), tests (the whole suite but the GUI,
# in parallel), golden (golden + agreement), large / giant (pipelined throughput),
# compile / compile-graphs (torch.compile, default and reduce-overhead), profile (at
# PROFILE_BATCH, default 8). Exits with the worst exit status of its parts.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# a compiler wrapper that points g++ at another GCC's libraries (seen as CXX on the
# H100 machine) turns every C++ exception into a crash: the kernels refuse it
[ -x /usr/bin/g++ ] && export CXX=/usr/bin/g++
RESULTS=${RESULTS:-gpu-results}
mkdir -p "$RESULTS"
start=$(date +%s)
lease=${LEASE_S:-570}
worst=0

part() {  # name limit_s command...: runs unless the lease is nearly spent
    local name=$1 limit=$2 left; shift 2
    left=$((lease - ($(date +%s) - start)))
    if ((left < 30)); then echo "[$name: skipped, $left s of the lease left]"; return; fi
    ((limit > left)) && limit=$left
    echo "=== $name (at most $limit s)"
    local t0; t0=$(date +%s)
    timeout --signal=INT --kill-after=15 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
    local rc=$?
    ((rc > worst)) && worst=$rc
    echo "[$name: exit $rc after $(($(date +%s) - t0)) s]"
    grep -E '^\||passed|failed|^(FAILED|ERROR)|^[A-Za-z]' "$RESULTS/$name.log" | tail -n 40
}

bench=(python3 benchmarks/bench_gpu.py)
# two torch threads per test process: 8 processes on all cores each starve each other
tests=(env OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 python3 -m pytest -q -p no:cacheprovider -rfEs)
known=" env build cuda-tests tests golden large giant compile compile-graphs profile "
for name in "$@"; do  # every name is checked before any part spends the lease
    [[ $known == *" $name "* ]] || { echo "unknown part: $name (parts:$known)" >&2; exit 2; }
done
for name in "$@"; do
    case $name in
    env) part env 60 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
        python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
        command -v nvcc g++' ;;
    build) part build 240 python3 -m napari_focus doctor --build ;;
    cuda-tests) part cuda-tests 240 "${tests[@]}" -n 6 tests/test_ops_cuda.py \
        tests/test_golden_cuda.py tests/test_precision.py tests/test_ops_compiled.py \
        tests/test_ops_selfcheck.py ;;
    tests) part tests 540 "${tests[@]}" -n 8 --durations=20 tests --ignore-glob='tests/test_gui*' ;;
    golden) part golden 150 "${bench[@]}" --parts golden,agreement --max-images 15 \
        --out "$RESULTS" ;;
    large) part large 200 "${bench[@]}" --parts throughput --batch-sizes 1,4,8,16 \
        --images 64 --rounds 1 --out "$RESULTS" ;;
    giant) part giant 150 "${bench[@]}" --parts throughput --sizes giant \
        --precisions float16,float32 --batch-sizes 1,8 --images 32 --rounds 1 --out "$RESULTS" ;;
    compile) part compile 300 "${bench[@]}" --parts compile --precisions float16 \
        --compile-batch 8 --images 64 --rounds 1 --out "$RESULTS" ;;
    compile-graphs) part compile-graphs 300 "${bench[@]}" --parts compile \
        --compile-mode reduce-overhead --precisions float16 --compile-batch 8 --images 64 \
        --rounds 1 --out "$RESULTS/graphs" ;;
    profile) part profile 120 "${bench[@]}" --parts profile --precisions float16,float32 \
        --profile-batch "${PROFILE_BATCH:-8}" --out "$RESULTS" ;;
    esac
done
exit "$worst"
