# medbench: `make demo` sets up and runs the demo sweep; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the demo and tests log W&B offline unless credentials say otherwise
export WANDB_SILENT := true

.PHONY: install demo test test-fast lint format speed speed-cpu speed-gpu publish train-studies clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/bench-train -m experiment=demo
	$(BIN)/bench-robust --runs-dir runs/demo --severities 3 --out runs/demo/robustness.csv
	$(BIN)/bench-leaderboard --runs-dir runs/demo --out runs/demo/leaderboard
	$(BIN)/bench-report --runs-dir runs/demo --out runs/demo/report.html

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: install
	$(BIN)/ruff check bench tests scripts
	$(BIN)/ruff format --check bench tests scripts
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format bench tests scripts
	$(BIN)/ruff check --fix bench tests scripts

# the published CPU table (results/speed/): about an hour on 2 cores
speed: install
	$(BIN)/bench-speed grid --models bccnn mobilenetv2 resnet50 --reps 3 --precisions 32
	$(BIN)/bench-speed grid --models resnet18_ss --reps 2 --precisions 32 --append

# the CPU roofline pages (results/speed/cpu_*.md, cpu_fast/): peaks and settings per model, the
# harness at the fast setting next to a raw loop, the data path; then cpu_fast.md (about an hour)
speed-cpu: install
	$(BIN)/bench-speed roofline --threads 1 2 --reps 3
	$(BIN)/bench-speed grid --models resnet18_ss --methods harness raw --precisions 32 bf16_cl \
	  --reps 1 --warmup-reps 1 --epochs 2 --train-limit 2048 --out results/speed/cpu_fast
	$(BIN)/bench-speed grid --models bccnn --methods harness raw --precisions 32 bf16_cl --append \
	  --reps 7 --warmup-reps 1 --epochs 4 --train-limit 4096 --out results/speed/cpu_fast
	$(BIN)/bench-speed datapath --threads 1 2 --reps 5
	$(BIN)/bench-speed parity --out results/speed

# the GPU tables (results/speed/gpu/): harness/raw/reference with a profile, the projection of the
# full MedMNIST 2D protocol, K runs packed per GPU
speed-gpu: install
	$(BIN)/bench-speed grid --device cuda --models bccnn resnet18_ss resnet50_ss \
	  --precisions 32 bf16_cl --reps 3 --epochs 3 --out results/speed/gpu \
	  --torch-profile results/speed/gpu/profile_harness_bccnn_h100.txt
	$(BIN)/bench-speed grid --device cuda --methods harness raw --models bccnn resnet18_ss \
	  --precisions 32 --batch-scales 1 4 8 --reps 2 --epochs 3 --out results/speed/gpu/batch
	$(BIN)/bench-speed project medmnist2d --device cuda \
	  --models resnet18_ss resnet50_ss --precisions 32 --epochs 2 --out results/speed/gpu
	$(BIN)/bench-speed colocate 1 2 4 8 --device cuda --jobs 8 \
	  --models resnet18_ss --precisions 32 --epochs 2 --out results/speed/gpu

# the published studies: every page and CSV rebuilt from the runs committed in results/<study>/runs
# (no training; seconds)
publish: install
	$(BIN)/bench-leaderboard --publish-all results

# train the studies' missing rows (resumable; days on 2 CPU cores for all), collect, publish
train-studies: install
	MEDBENCH_DATA_DIR=$${MEDBENCH_DATA_DIR:-../shared/data} bash scripts/train_studies.sh

clean:
	rm -rf outputs multirun runs/demo .pytest_cache
