#!/usr/bin/env bash
# Issue 13 on one GPU: several stage-2 recipe variants of the demo weights trained side by side, each from the
# frozen encoder inside the packaged demo weights (session 6's stage 1, 33.4 dB held-out key PSNR). The demo
# model is small enough that per-step overhead, not FLOPs, limits one run, so parallel runs share the GPU
# well. Each prints its held-out middle-frame PSNR against the linear blend; the best file becomes the
# packaged weights. Usage on the device machine, from the repo root (carry .whl):
#   VARIANTS="--decoder-depth 4; --cross-pixel; --decoder-depth 8 --cross-pixel" bash scripts/gpu_demo_variants.sh
#   VARIANTS   ';'-separated flag sets of experiments/demo_weights.py (default: the recipe as it is)
#   BUDGET_S   (570) the whole command; every variant ends by then
#   ENCODER_CHECKPOINT (the packaged demo weights) the frozen encoder the variants start from
#   COMMON_ARGS flags for every command, e.g. the CPU smoke test of this script (after a smoke stage 1):
#     S="--smoke --max-steps 3 --sequences 8 --batch-size 2 --eval-clips 2 --eval-frames 6"
#     python3 experiments/demo_weights.py --work /tmp/demo_run $S --stage encoder --out /tmp/s1
#     COMMON_ARGS="$S" ENCODER_CHECKPOINT=/tmp/s1/stage1.safetensors VARIANTS="--decoder-depth 1; --lr 5e-4" \
#       BUDGET_S=300 bash scripts/gpu_demo_variants.sh
# Back in $OUT: v<i>.safetensors (each variant's fp16 weights), summary.md, demo_variants.tgz (logs, records).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_demo}; mkdir -p "$OUT"
T0=$(date +%s); BUDGET_S=${BUDGET_S:-570}
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 TORCH_EXTENSIONS_DIR=/tmp/torch_ext MAX_JOBS=14
TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null) \
  && export TORCH_CUDA_ARCH_LIST
if ! python3 -c "import nerfstudio" 2>/dev/null && [ ! -d /tmp/site/nerfstudio ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/ns/*.whl || exit 1
fi
export PYTHONPATH=$PWD:/tmp/site
# data, held-out sample and the rasterizer once, before the parallel runs (they would race on them)
python3 experiments/demo_weights.py --work /tmp/demo_run --stage data --out /tmp/demo_data ${COMMON_ARGS:-} > "$OUT/data.log" 2>&1 \
  || { tail -20 "$OUT/data.log"; exit 1; }
tail -1 "$OUT/data.log"
IFS=';' read -ra V <<< "${VARIANTS:- }"
n=${#V[@]}
workers=$(( $(nproc) / n - 1 )); [ "$workers" -lt 1 ] && workers=1
minutes=$(python3 -c "print(round(($BUDGET_S - ($(date +%s) - $T0) - 25) / 60, 2))")
if ! python3 -c "import sys; sys.exit(0 if $minutes >= 0.5 else 1)"; then
  echo "=== BUDGET_S=$BUDGET_S leaves $minutes minutes per variant: nothing to train (session 7 lost a call this way)"; exit 1
fi
echo "=== $n variants, $workers data workers each, $minutes minutes each"
pids=()
for i in "${!V[@]}"; do
  # shellcheck disable=SC2086  # a variant is a flag set
  python3 experiments/demo_weights.py --work /tmp/demo_run --stage decoder --run-name "v$i" \
      --encoder-checkpoint "${ENCODER_CHECKPOINT:-streamsplat_ns/assets/demo_weights.safetensors}" --workers "$workers" \
      --deadline-minutes "$minutes" --out "/tmp/demo_v$i" ${COMMON_ARGS:-} ${V[$i]} > "$OUT/v$i.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
{
  echo "| variant | flags | result |"
  echo "|---|---|---|"
  for i in "${!V[@]}"; do
    echo "| v$i | ${V[$i]} | $(grep -h "held-out embedded sample" "$OUT/v$i.log" | tail -1 | sed 's/^.*held-out/held-out/') |"
  done
} > "$OUT/summary.md"
cat "$OUT/summary.md"
for i in "${!V[@]}"; do
  [ -f "/tmp/demo_v$i/demo_weights.safetensors" ] && cp "/tmp/demo_v$i/demo_weights.safetensors" "$OUT/v$i.safetensors"
  cp "/tmp/demo_v$i/demo_weights.json" "$OUT/v$i.json" 2>/dev/null
done
( cd "$OUT" && tar czf demo_variants.tgz $(ls ./*.log ./*.json 2>/dev/null) && rm -f ./*.log ./*.json )
echo "=== $(( $(date +%s) - T0 ))s in all"
