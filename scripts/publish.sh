#!/usr/bin/env bash
# make publish: train (or skip, when already done) every run of the published studies, then
# write results/<study>/ (leaderboard CSV/Markdown, per-class table, Holm-corrected comparison,
# robustness table, provenance README). Resumable: rerun after an interruption.
# About 30 minutes on one H100 (EXTRA=trainer=gpu_fast); days on 2 CPU cores (the paper's 28²
# ResNet-50 alone: ~20 h per seed), so on a CPU train the cheap rows first and publish what is done.
set -euo pipefail
BIN="${BIN:-.venv/bin}"
STORE="${STORE:-runs/published}"
EXTRA="${EXTRA:-}"
export WANDB_MODE="${WANDB_MODE:-disabled}"
train() { "$BIN/bench-train" -m experiment=medmnist_protocol logger=none paths.runs_dir="$STORE" \
  trainer.enable_progress_bar=false "$@" $EXTRA; }
MODELS_2D=bccnn,mobilenet,xception,resnet50,paper_resnet18,paper_resnet50
# the order of the issue: RetinaMNIST (cheap first), AdrenalMNIST3D, then PneumoniaMNIST
train data=retinamnist model=$MODELS_2D seed=0,1,2
train data=adrenalmnist3d model=cnn3d,resnet18_3d,resnet50_3d seed=0,1,2
train data=adrenalmnist3d data.size=64 model=cnn3d seed=0,1,2
train data=pneumoniamnist model=$MODELS_2D seed=0,1,2
# ISBI 2012 EM segmentation (results/isbi2012_em): 6 networks x 3 seeds + Otsu
# the ETA is read from the published study's measured cost per run (train_time_s x runs per row)
"$BIN/python" - <<'PY'
import pandas as pd
t = pd.read_csv("results/isbi2012_em/leaderboard.csv")
h = (t["train_time_s"] * t["n_runs"]).sum() / 3600
rows = ", ".join(f"{m} {s / 60:.1f}" for m, s in zip(t["model"], t["train_time_s"]))
print(f"ISBI 2012 EM study: ETA {h:.1f} h on the hardware of results/isbi2012_em "
      f"({';'.join(sorted(set(t['device'].astype(str))))}); min per run: {rows}")
PY
"$BIN/bench-train" -m experiment=isbi2012_em logger=none paths.runs_dir="$STORE" \
  trainer.enable_progress_bar=false $EXTRA
"$BIN/bench-train" experiment=isbi2012_em +combo=isbi_otsu logger=none paths.runs_dir="$STORE" \
  trainer.enable_progress_bar=false
"$BIN/bench-train" -m experiment=[medmnist_protocol,cv] data=retinamnist model=bccnn logger=none \
  paths.runs_dir="$STORE" trainer.enable_progress_bar=false $EXTRA
"$BIN/bench-robust" --runs-dir "$STORE" || true  # runs whose checkpoint is elsewhere: skipped
publish() {  # $1 = study name, rest = datasets
  local name=$1; shift
  local notes=(); [ -f "scripts/study_notes/$name.md" ] && notes=(--notes "scripts/study_notes/$name.md")
  "$BIN/bench-leaderboard" --runs-dir "$STORE" --dataset "$@" --name "$name" --reference \
    --ensembles --compare-all --publish --recipe "make publish (scripts/publish.sh)" "${notes[@]}"
}
publish retinamnist retinamnist
"$BIN/bench-robust" --runs-dir "$STORE" --dataset retinamnist --out results/retinamnist/robustness.csv
publish pneumoniamnist pneumoniamnist
"$BIN/bench-robust" --runs-dir "$STORE" --dataset pneumoniamnist \
  --out results/pneumoniamnist/robustness.csv
publish adrenalmnist3d adrenalmnist3d adrenalmnist3d_64
publish isbi2012_em isbi2012_em
# the card's models across the studies (results/README.md, mean ranks, Friedman, CD diagram)
"$BIN/bench-leaderboard" --cross-dataset results --rank-test
