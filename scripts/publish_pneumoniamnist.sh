#!/usr/bin/env bash
# Reproduce results/pneumoniamnist/: the MedMNIST recipe shortened to EPOCHS epochs (milestones
# at 50%/75%), five models x three seeds on the real PneumoniaMNIST 28² file, then the published
# leaderboard with paper deltas. Resumable: rerunning skips finished runs.
#   MEDBENCH_DATA_DIR=../shared/data EPOCHS=3 bash scripts/publish_pneumoniamnist.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${EPOCHS:-3}"
RUNS="${RUNS:-runs/pneumoniamnist}"
export MEDBENCH_DATA_DIR="${MEDBENCH_DATA_DIR:-../shared/data}"
BIN="${BIN:-.venv/bin}"
COMMON=(experiment=medmnist_protocol data=pneumoniamnist data.download=false
        trainer.max_epochs="$EPOCHS" trainer=fast task.channels_last=true
        trainer.enable_progress_bar=false logger=none paths.runs_dir="$RUNS" seed=0,1,2)
# the MedMNIST paper's 28² ResNets use a 3x3 stride-1 stem without max-pool
"$BIN/bench-train" -m "${COMMON[@]}" model=resnet18,resnet50 model.small_input_stem=true || true
"$BIN/bench-train" -m "${COMMON[@]}" model=bccnn,mobilenet,xception || true
"$BIN/bench-leaderboard" --runs-dir "$RUNS" --name pneumoniamnist --reference --publish
