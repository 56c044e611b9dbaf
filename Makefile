# EquiRecon. `make run` serves on 127.0.0.1:8000; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint export openapi bench calibrate train clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime only (no torch): what the service needs.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Build time + tests: torch==2.13.0 (CPU wheel), onnx, scikit-image, pytest, ruff, mypy.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[build,dev]'
	touch $(VENV)/.runtime $@

# Real T1 brain volumes for the "brain" training/validation source (Debian, ~16 MB).
BRAIN := /usr/share/mricron/templates/ch2.nii.gz
$(BRAIN):
	apt-get install -y mricron-data || (apt-get update && apt-get install -y mricron-data)

# A real redis-server for the scale-out tests (started by the fixtures on a free port).
REDIS := /usr/bin/redis-server
$(REDIS):
	apt-get install -y redis-server || (apt-get update && apt-get install -y redis-server)

run: $(VENV)/.runtime
	$(BIN)/equirecon serve --host $(HOST) --port $(PORT)

test: $(VENV)/.dev $(BRAIN) $(REDIS)
	$(BIN)/ruff check service models tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	$(BIN)/python -m pytest -q

lint: $(VENV)/.dev
	$(BIN)/ruff check service models tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

# Re-export every ONNX graph, card and the manifest into models/zoo.
export: $(VENV)/.dev
	$(BIN)/python -m models.export

openapi: $(VENV)/.runtime
	$(BIN)/python -m service.openapi

# Every benchmark (bench/README.md), then bench/results/latest.{json,md}. Tens of minutes.
bench: $(VENV)/.dev
	$(BIN)/python -m bench.run_all

calibrate: $(VENV)/.dev
	$(BIN)/python -m bench.calibrate_tv

# Train, export and evaluate every learned model (hours on 2 CPU cores; CUDA when present).
RECIPES := ct-ei ct-mc ct-sup mri-ei mri-mc mri-sup inpainting-ei inpainting-mc inpainting-sup denoising-p4m
# The CT models then continue with the data-consistency stage, as shipped (their cards hold
# both commands; docs/training-log.md "CT: one filtered-back-projection correction").
CT_DC := --lr 0.0002 --dc-step 0.5 --precision fp32 --runs runs/dc --export
train: $(VENV)/.dev $(BRAIN)
	for r in $(RECIPES); do $(BIN)/python -m models.train $$r --export || exit 1; done
	$(BIN)/python -m models.train ct-ei --init runs/ct-ei/weights.npz --steps 197 $(CT_DC)
	$(BIN)/python -m models.train ct-sup --init runs/ct-sup/weights.npz --steps 586 --tv-weight 0.004 $(CT_DC)
	$(BIN)/python -m models.train ct-mc --init runs/ct-mc/weights.npz --steps 397 --tv-weight 0.004 $(CT_DC)
	for f in inpainting ct mri denoising; do $(BIN)/python -m models.evaluate $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
