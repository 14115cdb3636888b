#!/usr/bin/env bash
# Reproduce results/pneumoniamnist/: the MedMNIST recipe (Adam 1e-3, batch 128, no augmentation,
# LR x0.1 at 50%/75%, best val AUC) shortened to EPOCHS epochs, five models x three seeds on the
# real PneumoniaMNIST 28² file, then the published leaderboard with paper deltas.
# Resumable: rerunning skips finished runs and resumes interrupted ones.
#   MEDBENCH_DATA_DIR=../shared/data EPOCHS=2 bash scripts/publish_pneumoniamnist.sh
# Extra overrides are passed through to bench-train. Default timm stems for every model (the
# paper's 28² ResNets use a 3x3 stem: model.small_input_stem=true, ~14x the compute).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${EPOCHS:-2}"
RUNS="${RUNS:-runs/pneumoniamnist}"
export MEDBENCH_DATA_DIR="${MEDBENCH_DATA_DIR:-../shared/data}"
BIN="${BIN:-.venv/bin}"
"$BIN/bench-train" -m experiment=medmnist_protocol data=pneumoniamnist data.download=false \
  trainer.max_epochs="$EPOCHS" trainer.enable_progress_bar=false logger=none \
  paths.runs_dir="$RUNS" model=bccnn,mobilenet,resnet18,resnet50,xception seed=0,1,2 "$@" || true
"$BIN/bench-leaderboard" --runs-dir "$RUNS" --name pneumoniamnist --reference --publish \
  --recipe "EPOCHS=$EPOCHS bash scripts/publish_pneumoniamnist.sh"
