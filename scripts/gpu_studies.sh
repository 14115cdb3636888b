#!/usr/bin/env bash
# The published studies at the official MedMNIST protocol on one GPU, in one call:
#   OUT=... BUDGET=520 bash scripts/gpu_studies.sh
# A: RetinaMNIST and PneumoniaMNIST, 5 models x 3 seeds, packed K at once (hydra/launcher=colocate);
# B: AdrenalMNIST3D 28^3, the 3D CNN x 3 seeds, alongside; C: a plain PyTorch loop at the same
# protocol (RetinaMNIST, ResNet-18 (28), seeds 0-2) alongside, as the check of the harness;
# then robustness of the PneumoniaMNIST models (bench-robust), and the run stores (records,
# predictions, curves; no checkpoints) packed into $OUT. Everything is resumable by rerunning.
# EPOCHS/PACK/SEEDS shrink it for a CPU dry run (EPOCHS=1 DEVICE=cpu ...).
set -u
source scripts/gpu_env.sh
EPOCHS="${EPOCHS:-100}"; K="${PACK:-8}"; SEEDS="${SEEDS:-0,1,2}"; DEVICE="${DEVICE:-gpu}"
LIMIT="${LIMIT:-}"
RUNS="$WORK/runs"
ACC="trainer.accelerator=$DEVICE trainer.benchmark=$([ "$DEVICE" = gpu ] && echo true || echo false)"
extra=(); [ -n "$LIMIT" ] && extra+=("data.limit=$LIMIT")
stamp "start: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo cpu)"
$PY -c "import torch, lightning, timm, hydra, medmnist; print('torch', torch.__version__, 'lightning', lightning.__version__, 'timm', timm.__version__, 'tf32 conv', torch.backends.cudnn.allow_tf32)" | tee "$WORK/versions.txt"

study() {  # $1 = name, rest = overrides
  local name=$1; shift
  timeout $(( $(left) - 90 )) $PY -m bench.hydra_main -m hydra/launcher=colocate experiment=medmnist_protocol \
    paths.runs_dir="$RUNS/$name" paths.log_dir="$WORK/logs/$name" logger=none $ACC \
    trainer.max_epochs=$EPOCHS "$@" "${extra[@]}" > "$WORK/$name.log" 2>&1
  stamp "$name finished (exit $?)"
}
study 3d data=adrenalmnist3d model=cnn3d hydra.launcher.n_jobs=3 seed=$SEEDS &
B=$!
( timeout $(( $(left) - 90 )) $PY -m bench.commands.speed protocol retinamnist \
    --model paper_resnet18 --seeds ${SEEDS//,/ } --protocol-epochs $EPOCHS \
    --device $([ "$DEVICE" = gpu ] && echo cuda || echo cpu) --out "$WORK/plain" > "$WORK/plain.log" 2>&1;
  stamp "plain protocol loop finished (exit $?)" ) &
C=$!
study 2d data=retinamnist,pneumoniamnist model=bccnn,mobilenet,xception,paper_resnet18,paper_resnet50 \
  hydra.launcher.n_jobs=$K seed=$SEEDS
wait $B $C
stamp "studies done; $(left) s left"
if [ "$(left)" -gt 40 ]; then
  timeout $(( $(left) - 25 )) $PY -m bench.evaluate.robust --runs-dir "$RUNS/2d" \
    --device $([ "$DEVICE" = gpu ] && echo cuda || echo cpu) > "$WORK/robust.log" 2>&1
  stamp "robustness finished (exit $?)"
fi
{ grep -h "job .* of\|sweep finished\|error\|colocate" "$WORK"/2d.log "$WORK"/3d.log
  tail -n 4 "$WORK/plain.log" "$WORK/robust.log"; } > "$WORK/summary.txt" 2>&1
tar czf "$OUT/studies.tgz" -C "$WORK" --exclude='*.ckpt' --exclude='.lock' --exclude='wandb' .
cp "$WORK/summary.txt" "$OUT/"
tail -40 "$WORK/summary.txt"
stamp "end"
