# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv data test lint format demo device-wheels clean

# Fashion-MNIST (docs/method.md §8) from Debian's package: installed where we can (root with apt-get), else explained.
# Under CI=true a missing data set is an error, so CI always tests the real loader on the real files.
FMNIST_PACKAGE := dataset-fashion-mnist
FMNIST_DIR := /usr/share/datasets/fashion-mnist

# A local CPU build of torch when none is importable: plain `torch` would pull a multi-GB CUDA build.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,train]"
	touch $(STAMP)

venv: $(STAMP)

data:
	@if [ ! -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ] && [ -z "$$FASHION_MNIST_DIR" ] && \
		[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q $(FMNIST_PACKAGE) >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(FMNIST_PACKAGE) >/dev/null 2>&1; } || true; \
	fi
	@if [ -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ] || [ -n "$$FASHION_MNIST_DIR" ]; then \
		echo "Fashion-MNIST: $${FASHION_MNIST_DIR:-$(FMNIST_DIR)}"; \
	else \
		echo "Fashion-MNIST is missing: run 'sudo apt-get install -y $(FMNIST_PACKAGE)' (files in $(FMNIST_DIR)),"; \
		echo "or set FASHION_MNIST_DIR to a folder holding its four IDX files; tests that need it are skipped."; \
		[ "$$CI" != "true" ]; \
	fi

# ruff, then the import contracts of .importlinter: the library's rooms import only downwards, and no import circles.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=benchmarks $(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: data lint
	$(PY) -m pytest -q tests

demo: data $(STAMP)
	$(PY) training/demo.py --output_dir demo-output

# For the GPU device machine (benchmarks/gpu_checks.sh): wheels of what its image lacks, at this venv's versions.
# Not huggingface-hub: the image's (1.33) satisfies diffusers and datasets, and a 2.x would break its transformers.
DEVICE_PACKAGES := diffusers datasets dill multiprocess safetensors
device-wheels: $(STAMP)
	rm -rf .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		$$($(PY) -c "from importlib.metadata import version; print(*[p + '==' + version(p) for p in '$(DEVICE_PACKAGES)'.split()])")

clean:
	rm -rf $(VENV) demo-output .pytest_cache build *.egg-info src/*.egg-info
