#!/usr/bin/env bash
# make train-studies: train (or skip, when already done) every run of the published studies,
# cheapest rows first (hours per seed on 2 CPU cores: results/eta/eta.csv), then copy each
# finished run's record, predictions and curve (no weights) into its study's committed store
# (results/<study>/runs) and rebuild the pages (make publish). Resumable: rerun after a stop.
# On a GPU: EXTRA="trainer=gpu_fast" (and execution.pack_seeds=3 trains a row's seeds as one
# network). STOP_AFTER_H: stop starting rows whose measured cost exceeds this many hours.
set -euo pipefail
BIN="${BIN:-.venv/bin}"
STORE="${STORE:-runs/published}"
EXTRA="${EXTRA:-}"
JOBS="${JOBS:-2}"
export WANDB_MODE="${WANDB_MODE:-disabled}"
export MEDBENCH_DATA_DIR="${MEDBENCH_DATA_DIR:-../shared/data}"
# fp32 at the paper's protocol everywhere; channels-last is a memory layout (same arithmetic),
# faster for every 2D model of the card on the CPU (results/speed/cpu_roofline.md)
train2d() { "$BIN/bench-train" -m experiment=medmnist_protocol logger=none paths.runs_dir="$STORE" \
  trainer.enable_progress_bar=false task.channels_last=true hydra/launcher=parallel \
  hydra.launcher.n_jobs="$JOBS" "$@" $EXTRA; }
train() { "$BIN/bench-train" -m logger=none paths.runs_dir="$STORE" \
  trainer.enable_progress_bar=false "$@" $EXTRA; }
# COLLECT=0: train only (the runs stay in $STORE until collected)
collect() { [ "${COLLECT:-1}" = 0 ] || "$BIN/bench-leaderboard" --add-runs "$STORE" --name "$1" \
  --dataset "${@:2}"; }

# 1. the card's four models and the paper's ResNet-18 (28) on the three 2D sets, cheapest first
train2d data=breastmnist model=bccnn,mobilenet,resnet50,xception,paper_resnet18 seed=0,1,2
train2d data=breastmnist data.size=64 model=bccnn,paper_resnet18 seed=0,1,2
collect breastmnist breastmnist breastmnist_64
train2d data=retinamnist model=bccnn,mobilenet,resnet50,xception,paper_resnet18 seed=0,1,2
collect retinamnist retinamnist
train2d data=pneumoniamnist model=bccnn,resnet50,mobilenet,xception seed=0,1,2
collect pneumoniamnist pneumoniamnist
# 2. the paper's ResNet-50 (28) where affordable, the ResNet-18 (28) on PneumoniaMNIST
train2d data=breastmnist model=paper_resnet50 seed=0,1,2
collect breastmnist breastmnist
train2d data=pneumoniamnist model=paper_resnet18 seed=0,1,2
collect pneumoniamnist pneumoniamnist
train2d data=retinamnist model=paper_resnet50 seed=0,1,2
collect retinamnist retinamnist
# 3. BCCNN's 5-fold cross-validation on RetinaMNIST; the ISBI 2012 EM segmentation study
train experiment=[medmnist_protocol,cv] data=retinamnist model=bccnn
collect retinamnist retinamnist  # the study retinamnist_cv reads its folds from there
train experiment=isbi2012_em
train experiment=isbi2012_em +combo=otsu_isbi
collect isbi2012_em isbi2012_em
# 4. the long rows (over 5 h per seed on 2 CPU cores; a GPU machine's work)
train2d data=pneumoniamnist model=paper_resnet50 seed=0,1,2
collect pneumoniamnist pneumoniamnist
train experiment=medmnist_protocol data=adrenalmnist3d model=cnn3d,resnet18_3d,resnet50_3d seed=0,1,2
train experiment=medmnist_protocol data=adrenalmnist3d data.size=64 model=cnn3d seed=0,1,2
collect adrenalmnist3d adrenalmnist3d adrenalmnist3d_64
[ "${COLLECT:-1}" = 0 ] || "$BIN/bench-leaderboard" --publish-all results
