#!/usr/bin/env bash
# One device call for everything GPU-side except the short training run: install the carried
# nerfstudio wheels, build the CUDA extension, run the GPU tests, the streaming and training
# benchmarks, and a one-GPU ns-train smoke run of the paper config; print a short table last.
# Usage on the device machine, from the repo root:  bash scripts/gpu_all.sh  (carry .whl)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_all}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_EXTENSIONS_DIR=/tmp/torch_ext MAX_JOBS=14
export TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/ns/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site
# the package is on PYTHONPATH, not pip-installed: register its entry points the nerfstudio way
export NERFSTUDIO_METHOD_CONFIGS="streamsplat-encoder=streamsplat_ns.method_configs.methods:streamsplat_encoder,streamsplat-decoder=streamsplat_ns.method_configs.methods:streamsplat_decoder"
export NERFSTUDIO_DATAPARSER_CONFIGS="davis-data=streamsplat_ns.dataparsers.specs:davis,video-data=streamsplat_ns.dataparsers.specs:video"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
t=$(date +%s)
python3 -c "from streamsplat_ns.rendering import _cuda; _cuda.load_extension()" 2>&1 | tail -3
echo "extension built in $(( $(date +%s) - t ))s"
[ "${SKIP_TESTS:-0}" = 1 ] || timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_rasterizer.py tests/test_streaming.py tests/test_networks.py \
    -k "not gsplat" 2>&1 | tee "$OUT/pytest.log" | tail -4
[ "${SKIP_KERNELS:-0}" = 1 ] || timeout ${KERNELS_TIMEOUT:-150} python3 benchmarks/bench_kernels.py 2>&1 | tee "$OUT/kernels.log" \
    | grep "^|" | tail -45
[ "${SKIP_STREAM:-0}" = 1 ] || timeout ${STREAM_TIMEOUT:-260} python3 benchmarks/bench_streaming.py --frames ${STREAM_FRAMES:-10000} \
    --no-render ${STREAM_ARGS:-} 2>&1 | tee "$OUT/streaming.log" | grep -v "^W1\|Warn\|warn" | tail -40
[ "${SKIP_TRAIN_BENCH:-0}" = 1 ] || timeout ${TRAIN_TIMEOUT:-240} python3 benchmarks/bench_training.py --steps 8 --workers 12 ${TRAIN_ARGS:-} --json "$OUT/training.json" 2>&1 \
    | tee "$OUT/training.log" | grep -v Warn | tail -14
# issue 6, the part one GPU allows: the paper-config method trains through ns-train on one GPU
[ "${SKIP_NS_TRAIN:-0}" = 1 ] || timeout 200 python3 -m nerfstudio.scripts.train streamsplat-encoder --output-dir /tmp/ns1 --max-num-iterations 30 \
    --steps-per-save 20 --pipeline.datamanager.num-workers 8 --machine.num-devices 1 > "$OUT/ns_train_1gpu.log" 2>&1
echo "ns-train streamsplat-encoder on 1 GPU: rc=$? $(ls /tmp/ns1/unnamed/streamsplat-encoder/*/nerfstudio_models 2>/dev/null)"
grep -o "[0-9]* ([0-9.]*%) *[0-9.]* ms\|Train Rays / Sec.*" "$OUT/ns_train_1gpu.log" | tail -3
if [ -n "${SHORT_RUN:-}" ]; then
  # results accumulate in /tmp/short (kept while the machine stays warm), one stage per command if needed
  timeout ${SHORT_RUN_TIMEOUT:-480} python3 benchmarks/short_training_run.py --out /tmp/short --minutes $SHORT_RUN \
      ${SHORT_RUN_ARGS:-} --json /tmp/short/results.json > "$OUT/short_run.log" 2>&1
  echo "short training run: rc=$?"; cp /tmp/short/results.json "$OUT/short_run.json" 2>/dev/null
  grep -A4 "^| stage" "$OUT/short_run.log"; grep -v "Warn\|warn" "$OUT/short_run.log" | tail -5
fi
echo "=== summary"; tail -3 "$OUT/pytest.log" 2>/dev/null; grep -A9 "^| stage" "$OUT/training.log"; grep "^loader" "$OUT/training.log"
tail -12 "$OUT/streaming.log" 2>/dev/null
