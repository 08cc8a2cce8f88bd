# Two commands for a fresh machine with Python 3.11:  make demo  |  make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch: a local CPU wheel when this machine has one (far smaller than PyPI's CUDA build), else any torch>=2.6.
TORCH_SPEC ?= $(or $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl)),torch>=2.6)
# The tests also need torchvision (issue 5's pruning matrix, the torchvision benchmarks). PyPI's torchvision
# does not import beside that CPU wheel, so pip picks a matching torch+torchvision pair instead (on this
# machine torch 2.14.1 + torchvision 0.29.1 from local disk: about a minute and 5.5 GB).

.PHONY: browser venv venv-test demo test teacher clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[dev,vision,data,text]"
	touch $@

venv-test: $(VENV)/.installed-test

demo: venv
	$(VENV)/bin/edgekd compress --out runs/demo --force

# Headless Chromium checks report.html as a browser shows it (tests/test_report_browser.py): Debian's
# package, installed where apt-get may run; elsewhere that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get install -y -q chromium >/dev/null 2>&1 \
		|| echo "note: could not install chromium; the browser check of report.html will be skipped")

test: venv-test browser
	$(PY) -m pytest -q

# Re-train the bundled digits teacher (edgekd/models/assets); about a minute on 2 cores.
teacher: venv
	$(PY) -m edgekd.train.default_teacher --out edgekd/models/assets/digits_cnn_teacher.safetensors

clean:
	rm -rf $(VENV) runs .pytest_cache
