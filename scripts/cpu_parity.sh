#!/usr/bin/env bash
# The fast CPU preset's parity on real data (results/speed/precision_parity.csv): BCCNN and the
# paper's ResNet-18 (28) on BreastMNIST and PneumoniaMNIST, seeds 0-2, at the MedMNIST protocol
# with trainer=cpu_fast (bf16 autocast + channels-last for both on a CPU with native bf16). The
# fp32 side is the studies' own runs (results/breastmnist/runs, results/pneumoniamnist/runs:
# fp32, channels-last). Resumable; the runs are collected into results/speed/parity/runs.
set -euo pipefail
BIN="${BIN:-.venv/bin}"
STORE="${STORE:-runs/parity}"
JOBS="${JOBS:-2}"
export WANDB_MODE="${WANDB_MODE:-disabled}"
export MEDBENCH_DATA_DIR="${MEDBENCH_DATA_DIR:-../shared/data}"
fast() { "$BIN/bench-train" -m experiment=medmnist_protocol trainer=cpu_fast trainer.precision=auto \
  task.channels_last=auto logger=none paths.runs_dir="$STORE" trainer.enable_progress_bar=false \
  hydra/launcher=parallel hydra.launcher.n_jobs="$JOBS" "$@"; }
fast data=breastmnist model=bccnn,paper_resnet18 seed=0,1,2
fast data=pneumoniamnist model=bccnn seed=0,1,2
fast data=pneumoniamnist model=paper_resnet18 seed=0,1,2
[ "${COLLECT:-1}" = 0 ] && exit 0
"$BIN/bench-leaderboard" --add-runs "$STORE" --out results/speed/parity
"$BIN/bench-speed" parity --out results/speed
