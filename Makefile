# The README's two commands: `make train` and `make test`. Each works alone on a fresh machine:
# it creates the virtual environment if missing, installs the package, makes sure the default data
# (Fashion-MNIST from Debian's dataset-fashion-mnist) is there, then trains / runs the tests.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.jaxmlp-installed
FASHION_DIR := /usr/share/datasets/fashion-mnist
TRAIN_ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist processes: XLA compiles on one core, so two workers nearly halve `make test` on 2 cores
TEST_WORKERS ?= 2

.PHONY: train test test-all lint mutants data setup experiments bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

data:
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ] || [ -n "$$JAXMLP_DATA" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
		(apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) || \
		{ echo "error: could not install dataset-fashion-mnist with apt-get" >&2; exit 1; }; \
	else \
		echo "Fashion-MNIST is not in $(FASHION_DIR). Install it with" >&2; \
		echo "  sudo apt-get install dataset-fashion-mnist" >&2; \
		echo "or set JAXMLP_DATA to a folder holding the four IDX files (jaxmlp can also download them)." >&2; \
		exit 1; \
	fi

# The default run is the bare command: Fashion-MNIST, 784-512-512-10 ReLU, dropout 0.3, Adam 1e-3 with a
# cosine schedule, parameter EMA 0.999, batch 128, 30 epochs (`jaxmlp train --help`; accuracy and time
# in benchmarks/RESULTS.md).
train: $(STAMP) data
	$(BIN)/jaxmlp train --out runs/default --overwrite $(TRAIN_ARGS)

# Lint (ruff check + format check, configured in pyproject.toml), then the fast suite (slow tests
# deselected); `make test-all` runs everything.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Fast suite (slow tests deselected); `make test-all` runs everything.
test: lint data
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-all: $(STAMP) data
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# Mutation testing (not part of `make test`): one-line bugs in the backward, optimizer, schedule, step
# and data code, each run against the tests that should catch it (tests/mutants.py; ≈ 10 min).
mutants: $(STAMP) data
	$(BIN)/python tests/mutants.py

# Every experiment of experiments/ (figures + experiments/RESULTS.md); --quick runs are part of `make test`.
experiments: $(STAMP) data
	$(BIN)/python -m experiments

# The CPU rows of benchmarks/RESULTS.md (≈ 20 min on 2 cores; run on a quiet machine). GPU rows:
# OUT=DIR bash benchmarks/gpu.sh on the GPU machine.
bench: $(STAMP) data
	$(BIN)/python benchmarks/step_speed.py --batch 128 --repeats 21 --json benchmarks/step_speed_cpu.json
	$(BIN)/python benchmarks/step_speed.py --batch 32,128,1024 --repeats 15 --json benchmarks/step_speed_cpu_batches.json
	$(BIN)/python benchmarks/step_speed.py --hidden 100 --batch 128 --repeats 15 --json benchmarks/step_speed_cpu_seed_net.json
	$(BIN)/python benchmarks/step_speed.py --batch 128 --matmul-dtype bfloat16 --repeats 9 --json benchmarks/step_speed_cpu_bf16.json
	$(BIN)/python benchmarks/profile_step.py --repeats 9 --trace runs/trace-w --hlo-dir runs/hlo-w --json benchmarks/profile_w_cpu.json
	$(BIN)/python benchmarks/profile_step.py --hidden 100 --repeats 9 --trace runs/trace-seed --json benchmarks/profile_seed_cpu.json
	$(BIN)/python benchmarks/sweep_speed.py --members 1,4,16,64 --repeats 3 --json benchmarks/sweep_speed_cpu.json
	$(BIN)/python benchmarks/sweep_speed.py --members 1,4,16 --repeats 7 --json benchmarks/sweep_speed_cpu_7rounds.json
	$(BIN)/python benchmarks/sweep_products.py --repeats 9 --json benchmarks/sweep_products_cpu.json

clean:
	rm -rf $(VENV) runs .pytest_cache
