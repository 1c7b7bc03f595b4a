# ecg_adapt — set-up and the two commands of the README.
#
# TORCH_SPEC chooses the torch build. The default is the CPU build that these machines keep on disk;
# on a GPU machine use e.g. `make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`
# or `make test TORCH_SPEC=torch` to take whatever pip resolves.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The demo: recipe and the folder of real records it predicts on (override: make demo DEMO_RECORDS=/path/to/wfdb).
DEMO_RECIPE ?= recipes/hubert_ecg_lora_ptbxl_superdiagnostic.yaml
DEMO_RECORDS ?= $(firstword $(wildcard ../shared/ecg-samples/cinc2021) $(wildcard examples/records))
PYTEST_ARGS ?=

.PHONY: demo test install install-dev clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/ecg-adapt demo --recipe $(DEMO_RECIPE) $(if $(DEMO_RECORDS),--predict-dir $(DEMO_RECORDS))

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .cache demo_data
