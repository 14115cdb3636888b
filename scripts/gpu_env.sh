# Sourced by the GPU scripts: a device machine has torch/lightning/timm but not Hydra or medmnist;
# `.gpu/site` (git-ignored) carries those pure-Python packages, `.gpu/data/medmnist` the data.
#   mkdir -p .gpu/site .gpu/data/medmnist && cp -r .venv/lib/python3*/site-packages/{hydra,omegaconf,antlr4,medmnist} .gpu/site/
#   cp -r .venv/lib/python3*/site-packages/hydra_plugins/hydra_joblib_launcher .gpu/site/hydra_plugins/
#   cp ../shared/data/medmnist/*.npz .gpu/data/medmnist/
ROOT=$(pwd)
export PYTHONPATH="$ROOT/.gpu/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export MEDBENCH_DATA_DIR="${MEDBENCH_DATA_DIR:-$ROOT/.gpu/data}"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/medbench-out}"      # what comes back: one archive and a summary
WORK="${WORK:-/tmp/medbench-work}"   # everything else
mkdir -p "$OUT" "$WORK"
PY="${PY:-python3}"
START=$(date +%s)
BUDGET="${BUDGET:-540}"
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
stamp() { echo "[$(( $(date +%s) - START ))s] $*"; }
