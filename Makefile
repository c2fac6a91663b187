# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint format demo device-wheels clean

# A local CPU build of torch when none is importable: plain `torch` would pull a multi-GB CUDA build.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,train]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) training/demo.py --output_dir demo-output

# For the GPU device machine (benchmarks/gpu_checks.sh): wheels of what its image lacks, at this venv's versions.
DEVICE_PACKAGES := diffusers datasets dill multiprocess huggingface-hub safetensors
device-wheels: $(STAMP)
	rm -rf .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		$$($(PY) -c "from importlib.metadata import version; print(*[p + '==' + version(p) for p in '$(DEVICE_PACKAGES)'.split()])")

clean:
	rm -rf $(VENV) demo-output .pytest_cache build *.egg-info src/*.egg-info
