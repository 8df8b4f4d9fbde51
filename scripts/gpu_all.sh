#!/usr/bin/env bash
# One device call for everything GPU-side except the short training run: install the carried wheels
# (nerfstudio set + PyAV), build the CUDA extension, run the GPU tests, the end-to-end reconstruct and live
# benchmarks, then (budget permitting) the kernel, streaming and training benchmarks and a one-GPU ns-train
# smoke run of the paper config; print a summary table last.
# Usage on the device machine, from the repo root:  bash scripts/gpu_all.sh  (carry .whl)
#
# Budget: the device allows 10 minutes per command, so stages run in priority order and a stage starts only
# if its time limit fits in what is left of BUDGET_S (default 560 s); skipped stages say so in the summary.
# With default stage sizes the run takes about 8 minutes (install + build ~1.5, tests ~2, reconstruct ~3.5,
# live ~1); the kernel / streaming / training stages then have no room: run them with SKIP_TESTS=1 SKIP_RECON=1
# SKIP_LIVE=1 (and the other SKIP_* switches), each stage's *_TIMEOUT and *_ARGS as below.
#   SKIP_TESTS      GPU tests (pytest -m gpu; GPU_TESTS overrides the file list)      TESTS_TIMEOUT   (150)
#   SKIP_RECON      benchmarks/bench_reconstruct.py (issue 11), RECON_ARGS, e.g.      RECON_TIMEOUT   (240)
#                   RECON_ARGS="--long 10000 --encoders vits --compare-intervals 4" for the memory run;
#                   RECON_VARIANTS="--depth-short-side 294; NAME=VALUE --flag" extra runs (';'-separated)
#   SKIP_LIVE       benchmarks/bench_live.py (issue 12, if present), LIVE_ARGS        LIVE_TIMEOUT    (100)
#   SKIP_KERNELS    benchmarks/bench_kernels.py                                       KERNELS_TIMEOUT (150)
#   SKIP_STREAM     benchmarks/bench_streaming.py, STREAM_FRAMES (10000), STREAM_ARGS STREAM_TIMEOUT  (260)
#   SKIP_TRAIN_BENCH benchmarks/bench_training.py, TRAIN_ARGS                         TRAIN_TIMEOUT   (240)
#   SKIP_NS_TRAIN   ns-train streamsplat-encoder on 1 GPU                             NS_TRAIN_TIMEOUT (200)
#   SHORT_RUN=<minutes>  experiments/short_training_run.py (off unless set), SHORT_RUN_ARGS  SHORT_RUN_TIMEOUT (480)
# Logs and JSON results go to $OUT (default /tmp/gpu_all).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_all}; mkdir -p "$OUT"
T0=$(date +%s); BUDGET_S=${BUDGET_S:-560}
SUMMARY="$OUT/stages.md"; printf '| stage | result | seconds |\n|---|---|---|\n' > "$SUMMARY"
export PYTHONUNBUFFERED=1 TORCH_EXTENSIONS_DIR=/tmp/torch_ext MAX_JOBS=14
export TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")

# stage NAME SKIPVAR LIMIT_S command...: run under `timeout`, only if enabled and LIMIT_S fits in the budget
stage() {
  local name=$1 skip=$2 limit=$3; shift 3
  if [ "$skip" = 1 ]; then echo "| $name | skipped (switch) | 0 |" >> "$SUMMARY"; return 0; fi
  local left=$(( BUDGET_S - ($(date +%s) - T0) ))
  if [ "$limit" -gt "$left" ]; then
    echo "=== $name: skipped, needs up to ${limit}s, ${left}s of BUDGET_S left"
    echo "| $name | skipped (budget: ${left}s left, limit ${limit}s) | 0 |" >> "$SUMMARY"; return 0
  fi
  echo "=== $name"
  local t=$(date +%s)
  run_limited "$limit" "$@"; local rc=$?
  local res="rc=$rc"; [ $rc = 124 ] && res="TIMED OUT (${limit}s; stacks in its log)"
  echo "| $name | $res | $(( $(date +%s) - t )) |" >> "$SUMMARY"
  return $rc
}

# run_limited LIMIT_S command...: the command in its own process group (so worker processes are found).
# GRACE_S (15) before the limit every thread's Python stack is dumped to the stage's log: workers get
# SIGABRT (PYTHONFAULTHANDLER prints the stacks, then they die and free the GPU), the leader SIGUSR1 when it
# catches it (benchmarks/__init__.py registers it; the run goes on) else SIGABRT; then SIGTERM (benchmarks
# print what they measured), and SIGKILL for the whole group at the limit. Exit 124 when the limit was hit.
# Whatever is left of the group afterwards (orphans) is killed so it cannot hold the GPU for the next stage.
export PYTHONFAULTHANDLER=1
group_pids() {  # pids of process group $1, from /proc (procps may be missing on the device image)
  local f
  for f in /proc/[0-9]*/stat; do
    awk -v g="$1" '{ sub(/^.*\) /, ""); if ($3 == g) print FILENAME }' "$f" 2>/dev/null
  done | sed 's#/proc/\([0-9]*\)/stat#\1#'
}
run_limited() {
  local limit=$1; shift
  local grace=${GRACE_S:-15}; [ "$grace" -ge "$limit" ] && grace=$(( limit / 2 ))
  setsid "$@" &
  local pid=$! t0=$(date +%s) hit=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ $(( $(date +%s) - t0 )) -ge $(( limit - grace )) ]; then hit=1; break; fi
    sleep 1
  done
  if [ $hit = 1 ]; then
    echo "=== time limit in ${grace}s: dumping Python stacks of process group $pid" >&2
    local p
    for p in $(group_pids "$pid"); do [ "$p" != "$pid" ] && kill -ABRT "$p" 2>/dev/null; done
    local caught; caught=$(awk '/^SigCgt/ {print $2}' /proc/$pid/status 2>/dev/null)
    if [ -n "$caught" ] && (( (16#$caught >> 9) & 1 )); then kill -USR1 "$pid" 2>/dev/null; else kill -ABRT "$pid" 2>/dev/null; fi
    sleep 3; kill -TERM "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do sleep 1; done
  fi
  kill -KILL -- "-$pid" 2>/dev/null  # orphans (a worker whose parent died) must not keep the GPU
  wait "$pid"; local rc=$?
  [ $hit = 1 ] && rc=124
  return $rc
}

# wheels: the nerfstudio set and PyAV (the lead copies them into .whl/ns; shared/device-wheels is the fallback)
WHEELS=(.whl/ns/*.whl)
if ! ls .whl/ns/av-*.whl > /dev/null 2>&1; then
  AV=$(ls shared/device-wheels/av-*.whl ../shared/device-wheels/av-*.whl 2>/dev/null | head -1)
  if [ -n "$AV" ]; then WHEELS+=("$AV"); else echo "no PyAV wheel carried (.whl/ns/av-*.whl): video stages will fail"; fi
fi
t=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "${WHEELS[@]}" || exit 1
export PYTHONPATH=$PWD:/tmp/site
python3 -c "import av; print('PyAV', av.__version__)" || echo "PyAV not importable"
# tyro (carried) imports typeguard when it checks CLI defaults; the image lacks it and ../shared/device-wheels
# does not hold it: without it every CLI (streamsplat-reconstruct, streamsplat-build-cuda, ...) fails to parse
python3 -c "import typeguard" 2>/dev/null || { echo "typeguard missing: carry typeguard-*.whl in .whl/ns (pip download --no-deps --python-version 3.12 --only-binary=:all: typeguard -d .whl/ns)"; exit 1; }
echo "| install wheels | ${#WHEELS[@]} wheels | $(( $(date +%s) - t )) |" >> "$SUMMARY"
# the package is on PYTHONPATH, not pip-installed: register its entry points the nerfstudio way
export NERFSTUDIO_METHOD_CONFIGS="streamsplat-encoder=streamsplat_ns.method_configs.methods:streamsplat_encoder,streamsplat-decoder=streamsplat_ns.method_configs.methods:streamsplat_decoder"
export NERFSTUDIO_DATAPARSER_CONFIGS="davis-data=streamsplat_ns.dataparsers.specs:davis,video-data=streamsplat_ns.dataparsers.specs:video"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
t=$(date +%s)
python3 -m streamsplat_ns.cli.build_cuda 2>&1 | tail -3  # kernels from streamsplat_ns/rendering/csrc into the cache
echo "extension built in $(( $(date +%s) - t ))s"
echo "| build CUDA extension | done | $(( $(date +%s) - t )) |" >> "$SUMMARY"

GPU_TESTS=${GPU_TESTS:-"tests/test_cuda_rasterizer.py tests/test_streaming.py tests/test_networks.py tests/test_depth.py tests/test_live.py $(ls tests/test_inference*.py tests/test_engine*.py 2>/dev/null | tr '\n' ' ')"}
stage "GPU tests" "${SKIP_TESTS:-0}" "${TESTS_TIMEOUT:-150}" python3 -m pytest -v -p no:cacheprovider -m gpu -rsP --durations=20 $GPU_TESTS \
    -k "not gsplat" -o faulthandler_timeout=60 > "$OUT/pytest.log" 2>&1
grep "^DA-V2" "$OUT/pytest.log" 2>/dev/null; tail -4 "$OUT/pytest.log" 2>/dev/null
# issue 11: streamsplat-reconstruct end to end with default flags, DA-V2 ViT-S and ViT-L
RECON_TIMEOUT=${RECON_TIMEOUT:-240}
# RECON_ARGS is word-split: flag sets with spaces go in RECON_VARIANTS, ';'-separated (one --variants entry each)
RV=(); if [ -n "${RECON_VARIANTS:-}" ]; then IFS=';' read -ra RV <<< "$RECON_VARIANTS"; RV=(--variants "${RV[@]}"); fi
stage "bench_reconstruct" "${SKIP_RECON:-0}" "$RECON_TIMEOUT" python3 -m benchmarks.bench_reconstruct --work /tmp/bench_recon \
    --budget-s $(( RECON_TIMEOUT - 60 )) --json "$OUT/reconstruct.json" ${RECON_ARGS:-} "${RV[@]}" > "$OUT/reconstruct.log" 2>&1
cp /tmp/bench_recon/log_*.txt "$OUT/" 2>/dev/null  # each worker's full stdout / stderr (stack dumps of a hang)
# the kernel choices the runs timed (in logs.tgz): copied into streamsplat_ns/inference/tuned/ they serve a fresh
# machine of exactly this environment (inference.choices.tuned_choices)
for f in /tmp/bench_recon/cache*/kernel_choices-*.json; do [ -f "$f" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")")_$(basename "$f")"; done
grep -v "^W1\|Warn\|warn" "$OUT/reconstruct.log" 2>/dev/null | grep -B2 -A30 "^| encoder" | tail -30
# issue 12: live latency (frame arrival -> viewer update) on a 30 frames/s source
if [ -f benchmarks/bench_live.py ]; then
  stage "bench_live" "${SKIP_LIVE:-0}" "${LIVE_TIMEOUT:-100}" python3 -m benchmarks.bench_live --json "$OUT/live.json" ${LIVE_ARGS:-} \
      > "$OUT/live.log" 2>&1
  grep "^|" "$OUT/live.log" 2>/dev/null | tail -20
else
  echo "| bench_live | skipped (benchmarks/bench_live.py not present) | 0 |" >> "$SUMMARY"
fi
stage "bench_kernels" "${SKIP_KERNELS:-0}" "${KERNELS_TIMEOUT:-150}" python3 -m benchmarks.bench_kernels > "$OUT/kernels.log" 2>&1
grep "^|" "$OUT/kernels.log" 2>/dev/null | tail -45
stage "bench_streaming" "${SKIP_STREAM:-0}" "${STREAM_TIMEOUT:-260}" python3 -m benchmarks.bench_streaming --frames ${STREAM_FRAMES:-10000} \
    --no-render ${STREAM_ARGS:-} > "$OUT/streaming.log" 2>&1
stage "bench_training" "${SKIP_TRAIN_BENCH:-0}" "${TRAIN_TIMEOUT:-240}" python3 -m benchmarks.bench_training --steps 8 --workers 12 \
    ${TRAIN_ARGS:-} --json "$OUT/training.json" > "$OUT/training.log" 2>&1
# issue 6, the part one GPU allows: the paper-config method trains through ns-train on one GPU
stage "ns-train 1 GPU" "${SKIP_NS_TRAIN:-0}" "${NS_TRAIN_TIMEOUT:-200}" python3 -m nerfstudio.scripts.train streamsplat-encoder \
    --output-dir /tmp/ns1 --max-num-iterations 30 --steps-per-save 20 --pipeline.datamanager.num-workers 8 \
    --machine.num-devices 1 > "$OUT/ns_train_1gpu.log" 2>&1
[ -f "$OUT/ns_train_1gpu.log" ] && echo "ns-train checkpoints: $(ls /tmp/ns1/unnamed/streamsplat-encoder/*/nerfstudio_models 2>/dev/null)"
grep -o "[0-9]* ([0-9.]*%) *[0-9.]* ms\|Train Rays / Sec.*" "$OUT/ns_train_1gpu.log" 2>/dev/null | tail -3
if [ -n "${SHORT_RUN:-}" ]; then
  # results accumulate in /tmp/short (kept while the machine stays warm), one stage per command if needed
  stage "short training run" 0 "${SHORT_RUN_TIMEOUT:-480}" python3 experiments/short_training_run.py --out /tmp/short \
      --minutes $SHORT_RUN ${SHORT_RUN_ARGS:-} --json /tmp/short/results.json > "$OUT/short_run.log" 2>&1
  cp /tmp/short/results.json "$OUT/short_run.json" 2>/dev/null
  grep -A4 "^| stage" "$OUT/short_run.log"; grep -v "Warn\|warn" "$OUT/short_run.log" | tail -5
fi

# issue 13: one stage of the demo weights (experiments/demo_weights.py), for whatever is left of BUDGET_S;
# /tmp/demo_run persists while the machine stays warm, so the decoder stage of the next call finds stage 1
if [ -n "${DEMO_STAGE:-}" ]; then
  left=$(( BUDGET_S - ($(date +%s) - T0) - 5 ))
  stage "demo weights ($DEMO_STAGE)" 0 "$left" python3 experiments/demo_weights.py --work /tmp/demo_run \
      --stage "$DEMO_STAGE" --deadline-minutes "$(python3 -c "print(round(($left - 20) / 60, 2))")" \
      --out "$OUT/demo" ${DEMO_ARGS:-} > "$OUT/demo_$DEMO_STAGE.log" 2>&1
  grep -v "Warn\|warn\|it/s\]" "$OUT/demo_$DEMO_STAGE.log" | grep -i "steps/s\|done\|held-out\|fp16\|error\|Traceback" | tail -8
  # the weights come back beside the logs (stage 1 as fp16: a fresh machine can take it with --encoder-checkpoint)
  [ -f "$OUT/demo/demo_weights.safetensors" ] && mv "$OUT/demo/demo_weights.safetensors" "$OUT/"
  [ -f "$OUT/demo/stage1.safetensors" ] && python3 -c "
import sys; sys.path.insert(0, 'experiments'); from pathlib import Path; from demo_weights import export_fp16
export_fp16(Path('$OUT/demo/stage1.safetensors'), Path('$OUT/stage1_fp16.safetensors'), {})" && rm "$OUT/demo/stage1.safetensors"
fi

echo "=== summary ($(( $(date +%s) - T0 ))s in all)"
[ -f "$OUT/pytest.log" ] && grep "^DA-V2" "$OUT/pytest.log"; [ -f "$OUT/pytest.log" ] && tail -1 "$OUT/pytest.log"
grep -A9 "^| stage" "$OUT/training.log" 2>/dev/null; grep "^loader" "$OUT/training.log" 2>/dev/null
grep -v "^W1\|Warn\|warn" "$OUT/streaming.log" 2>/dev/null | tail -12
grep "^|" "$OUT/live.log" 2>/dev/null | tail -8
grep -v "^W1\|Warn\|warn" "$OUT/reconstruct.log" 2>/dev/null | sed -n '/^| encoder/,$p'
echo
cat "$SUMMARY"

# the device returns at most 8 files from $OUT: everything goes into logs.tgz, the summaries stay beside it
( cd "$OUT" && tar czf /tmp/gpu_all_logs.tgz . 2>/dev/null && mv /tmp/gpu_all_logs.tgz logs.tgz \
  && find . -maxdepth 1 -type f ! -name logs.tgz ! -name stages.md ! -name reconstruct.json ! -name live.json \
       ! -name pytest.log ! -name demo_weights.safetensors ! -name stage1_fp16.safetensors -delete )
( cd "$OUT" && rm -rf demo )
