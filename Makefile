# gridgen: `make demo` renders the demo grid, `make test` runs the suite; both set up .venv first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# No CUDA here: the CPU wheel (on these machines pip finds it on local disk). With an NVIDIA driver:
# PyPI's default Linux wheel, which is a CUDA build. Override to pick another, e.g.
#   make install TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
# A torch already installed in .venv is kept.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: install demo test lint clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	# Single-file checkpoints need CLIP's BPE vocabulary, which open-clip-torch ships; only that file is
	# read, so its dependencies (torchvision, timm) are left out.
	$(PY) -m pip install --quiet --no-deps "open-clip-torch==3.3.0"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/gridgen run grids/demo.yaml --out out/demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf out .pytest_cache
