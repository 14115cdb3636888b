#!/usr/bin/env bash
# The GPU speed measurements of the speed issue, in priority order, each only if time is left:
#   OUT=... BUDGET=200 bash scripts/gpu_speed.sh        (make speed-gpu)
# 1. harness vs raw loop vs the official pipeline, fp32 and bf16+channels_last, 3 models, with a
#    torch.profiler table of one harness epoch; 2. K = 1, 2, 4, 8 runs packed on the GPU;
# 3. the projection of the whole MedMNIST v2 2D protocol; 4. torch.compile.
set -u
source scripts/gpu_env.sh
SPEED="$WORK/speed"
DEV="${DEVICE:-cuda}"; EPOCHS="${EPOCHS:-3}"; LIMIT="${LIMIT:-}"
lim=(); [ -n "$LIMIT" ] && lim=(--train-limit "$LIMIT")
run() {  # $1 = seconds it needs at least, $2 = bench-speed mode, rest = its arguments
  local need=$1 mode=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then stamp "skipped (needs ${need}s, $(left)s left): $*"; return; fi
  timeout $(( $(left) - 10 )) $PY -m bench.commands.speed "$mode" --device "$DEV" --out "$SPEED" "$@" \
    >> "$WORK/speed.log" 2>&1
  stamp "exit $?: $*"
}
run 60 grid --models bccnn resnet18_ss resnet50_ss --precisions 32 bf16_cl --reps 1 --warmup-reps 0 \
  --epochs "$EPOCHS" "${lim[@]}" --torch-profile "$SPEED/profile_harness_resnet18_ss.txt"
run 40 colocate 1 2 4 8 --jobs 8 --models resnet18_ss --precisions bf16_cl --epochs 2 "${lim[@]}"
run 40 project medmnist2d --models resnet18_ss resnet50_ss --precisions bf16_cl --epochs 2 \
  --colocate-from "$SPEED/colocate.csv"
run 60 grid --models resnet18_ss --precisions bf16_cl_compile --methods harness raw --reps 1 \
  --warmup-reps 0 --epochs "$EPOCHS" "${lim[@]}" --out "$SPEED/compile"
nvidia-smi > "$SPEED/nvidia_smi.txt" 2>&1
tar czf "$OUT/speed.tgz" -C "$WORK" speed speed.log
grep -v "^\s*$" "$WORK/speed.log" | grep -E "^\||rep |harness|speedup|method|^ *k " | tail -40
stamp "end"
