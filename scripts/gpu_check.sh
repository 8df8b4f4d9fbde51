#!/usr/bin/env bash
# Device-machine check of the CUDA rasterizer, in one go: install the carried gsplat 1.5.3 wheel into its own
# target dir (so it never clashes with nerfstudio's gsplat 1.4.0) and JIT-build it in the background, build our
# extension, run the GPU tests, run the benchmarks, print a short table last.
# Usage, from the repo root on the GPU machine:  bash scripts/gpu_check.sh   (logs go to $OUT, else /tmp/gpu_check)
# Env: SKIP_BENCH=1 to stop after the tests; BENCH_ARGS to pass e.g. "--reps 20 --only ab".
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/torch_ext}  # gsplat's JIT build
export STREAMSPLAT_CACHE_DIR=${STREAMSPLAT_CACHE_DIR:-/tmp/streamsplat_cache}  # ours: <cache>/cuda
ARCH=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || { echo "no CUDA device"; exit 1; }
export TORCH_CUDA_ARCH_LIST=$ARCH
export MAX_JOBS=${MAX_JOBS:-12}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/device.txt"

GS=/tmp/gsplat153
GS_WHL=$(ls .whl/gsplat153/gsplat-1.5.3-*.whl 2>/dev/null | head -1)
GSPID=""
if [ -n "$GS_WHL" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$GS" "$GS_WHL"
    # JIT-build gsplat while our own build and tests run (its first import compiles for ~2 min)
    ( PYTHONPATH=$GS timeout 480 python3 -c "import time; t=time.time(); from gsplat.cuda._backend import _C; \
assert _C is not None, 'gsplat JIT build failed'; print(f'gsplat built in {time.time()-t:.0f}s')" \
      >"$OUT/gsplat_build.log" 2>&1 ) &
    GSPID=$!
else
    echo "no .whl/gsplat153/gsplat-1.5.3-*.whl carried: gsplat comparisons will be skipped"
fi

export PYTHONPATH=$PWD
t0=$(date +%s)
# the ahead-of-time build (streamsplat-build-cuda) of the packaged sources (streamsplat_ns/rendering/csrc)
timeout 400 python3 -m streamsplat_ns.cli.build_cuda 2>&1 | tee "$OUT/build.log"
BUILD_RC=${PIPESTATUS[0]}

# test_packaging's GPU test: a wheel installed into a fresh venv builds its own copy and renders
timeout 500 python3 -m pytest -q -rs -p no:cacheprovider -m gpu tests/test_cuda_rasterizer.py tests/test_packaging.py \
    -k "not gsplat" 2>&1 | tee "$OUT/pytest.log"
TEST_RC=${PIPESTATUS[0]}

GS_OK=0
if [ -n "$GSPID" ]; then
    wait "$GSPID" && GS_OK=1
    tail -3 "$OUT/gsplat_build.log"
fi
if [ "$GS_OK" = 1 ]; then
    export PYTHONPATH=$PWD:$GS
fi
timeout 200 python3 -m pytest -q -rs -p no:cacheprovider -m gpu tests/test_cuda_rasterizer.py -k gsplat 2>&1 \
    | tee "$OUT/pytest_gsplat.log"
GS_TEST_RC=${PIPESTATUS[0]}

BENCH_RC=skipped
if [ "${SKIP_BENCH:-0}" != 1 ]; then
    SKIP=""
    [ "$GS_OK" = 1 ] || SKIP="--skip-gsplat"
    timeout 300 python3 -m benchmarks.bench_rasterizer --out "$OUT/bench.jsonl" --profile "$OUT/profile_b.txt" $SKIP ${BENCH_ARGS:-} 2>&1 \
        | tee "$OUT/bench.log"
    BENCH_RC=${PIPESTATUS[0]}
fi

echo
echo "================ summary ($(( $(date +%s) - t0 ))s after gsplat start) ================"
echo "build rc=$BUILD_RC  tests rc=$TEST_RC  gsplat build ok=$GS_OK  gsplat test rc=$GS_TEST_RC  bench rc=$BENCH_RC"
grep -E "passed|failed|error" "$OUT/pytest.log" | tail -1
grep -E "passed|failed|skipped|error" "$OUT/pytest_gsplat.log" | tail -1
grep -E "^FAILED|^ERROR|assert .*relative error" "$OUT/pytest.log" "$OUT/pytest_gsplat.log" | head -20
[ -f "$OUT/bench.log" ] && sed -n '/^device:/,$p' "$OUT/bench.log"
[ "$BUILD_RC" = 0 ] && [ "$TEST_RC" = 0 ]
