#!/usr/bin/env bash
# Packed seeds on one GPU, in one call (the GPU cells of the packed-seeds issue, then the study
# rows that wait for a GPU), each step only if time is left:
#   OUT=... BUDGET=540 bash scripts/gpu_packed.sh
# 1. bench-speed packed: K = 1, 2, 3, 4, 8 seeds packed (vmap and grouped convolutions) vs K
#    separate networks, BCCNN / ResNet-18 (28) / ResNet-50 (28) / 3D CNN -> speed/packed.csv;
# 2. the full MedMNIST 2D protocol projection with its packed-seeds column, from the H100 rates of
#    results/speed/gpu/projection_rates.jsonl and step 1's K=3 speed-ups;
# 3. the study rows that need a GPU, three seeds packed per row (execution.pack_seeds=3):
#    PneumoniaMNIST xception, paper_resnet18, paper_resnet50; AdrenalMNIST3D resnet18_3d,
#    resnet50_3d. Resumable: rerun the script, done seeds are skipped.
# DEVICE=cpu EPOCHS=1 LIMIT=64 STEPS=1 KS="1 2" BATCH=8 BUDGET=300 is a dry run on a CPU.
set -u
source scripts/gpu_env.sh
SPEED="$WORK/speed"; RUNS="$WORK/runs"
DEV="${DEVICE:-cuda}"; EPOCHS="${EPOCHS:-100}"; STEPS="${STEPS:-10}"; KS="${KS:-1 2 3 4 8}"
BATCH="${BATCH:-128}"
LIMIT="${LIMIT:-}"
ACC="trainer.accelerator=$([ "$DEV" = cuda ] && echo gpu || echo cpu)"
extra=(); [ -n "$LIMIT" ] && extra+=("data.limit=$LIMIT")
mkdir -p "$SPEED"
stamp "start: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo cpu)"
if [ "$(left)" -gt 120 ]; then
  # shellcheck disable=SC2086
  timeout $(( $(left) - 60 )) $PY -m bench.commands.speed packed $KS --device "$DEV" \
    --packed-models bccnn resnet18_28 resnet50_28 cnn3d --steps "$STEPS" --batch "$BATCH" \
    --out "$SPEED" \
    > "$WORK/packed.log" 2>&1
  stamp "packed table (exit $?)"
fi
$PY -m bench.commands.speed project medmnist2d --device "$DEV" \
  --rates-from results/speed/gpu/projection_rates.jsonl \
  --packed-seeds-from "$SPEED/packed.csv" --out "$SPEED" > "$WORK/project.log" 2>&1
stamp "projection (exit $?)"
row() {  # $1 = name, rest = overrides; three seeds as one network
  local name=$1; shift
  if [ "$(left)" -lt 90 ]; then stamp "skipped $name ($(left)s left)"; return; fi
  timeout $(( $(left) - 60 )) $PY -m bench.hydra_main experiment=medmnist_protocol logger=none \
    paths.runs_dir="$RUNS" paths.log_dir="$WORK/logs" $ACC trainer.max_epochs="$EPOCHS" \
    trainer.enable_progress_bar=false seed=0 execution.pack_seeds=3 "$@" "${extra[@]}" \
    > "$WORK/$name.log" 2>&1
  stamp "$name (exit $?)"
}
row pneumoniamnist_xception data=pneumoniamnist model=xception
row pneumoniamnist_paper_resnet18 data=pneumoniamnist model=paper_resnet18
row adrenalmnist3d_resnet18_3d data=adrenalmnist3d model=resnet18_3d
row pneumoniamnist_paper_resnet50 data=pneumoniamnist model=paper_resnet50
row adrenalmnist3d_resnet50_3d data=adrenalmnist3d model=resnet50_3d
# records, curves and predictions come back; checkpoints stay (weights never travel)
tar czf "$OUT/packed.tgz" -C "$WORK" --exclude='*.ckpt' speed runs logs packed.log project.log \
  $(cd "$WORK" && ls ./*_*.log 2>/dev/null) 2>/dev/null
cat "$SPEED/packed.md" 2>/dev/null; cat "$SPEED/projection_totals.csv" 2>/dev/null
stamp "end"
