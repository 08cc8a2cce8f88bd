# Two commands for a fresh machine with Python 3.11:  make demo  |  make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch: a local CPU wheel when this machine has one (far smaller than PyPI's CUDA build), else any torch>=2.6.
TORCH_SPEC ?= $(or $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl)),torch>=2.6)

.PHONY: venv demo test teacher clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/edgekd compress --out runs/demo --force

test: venv
	$(PY) -m pytest -q

# Re-train the bundled digits teacher (edgekd/assets); about a minute on 2 cores.
teacher: venv
	$(PY) -m edgekd.default --out edgekd/assets/digits_cnn_teacher.safetensors

clean:
	rm -rf $(VENV) runs .pytest_cache
