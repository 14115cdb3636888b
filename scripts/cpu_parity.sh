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
# without native bf16 the preset trains fp32 (bench/job/cpu_fast.py): there would be no bf16 side
if ! "$BIN/python" -c 'import sys; from bench.hardware import cpu_bf16_native as n; sys.exit(not n())'; then
  echo "cpu_parity.sh: this CPU has no native bf16 (AVX512-BF16 or AMX), so trainer=cpu_fast" \
    "trains fp32 here and there is no bf16 side to compare; run it on a CPU whose lscpu flags" \
    "list avx512_bf16 or amx_tile" >&2
  exit 2
fi
fast() { "$BIN/bench-train" -m experiment=medmnist_protocol trainer=cpu_fast trainer.precision=auto \
  task.channels_last=auto logger=none paths.runs_dir="$STORE" trainer.enable_progress_bar=false \
  hydra/launcher=parallel hydra.launcher.n_jobs="$JOBS" "$@"; }
fast data=breastmnist model=bccnn,paper_resnet18 seed=0,1,2
fast data=pneumoniamnist model=bccnn seed=0,1,2
fast data=pneumoniamnist model=paper_resnet18 seed=0,1,2
[ "${COLLECT:-1}" = 0 ] && exit 0
"$BIN/bench-leaderboard" --add-runs "$STORE" --out results/speed/parity
"$BIN/bench-speed" parity --out results/speed
