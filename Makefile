# gridgen: `make demo` renders the demo grid, `make test` runs the suite, `make docs` builds the site into site/;
# each sets up .venv first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# No CUDA here: the CPU wheel (on these machines pip finds it on local disk), which has no matching
# torchvision. With an NVIDIA driver: PyPI's default Linux wheels, CUDA builds, torchvision included.
# Override to pick others, e.g.
#   make install TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cu124"
# A torch already installed in .venv is kept.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch torchvision || echo torch==2.13.0)

.PHONY: install demo test lint docs clean

$(VENV)/.installed: pyproject.toml Makefile tests/plugin_backend/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test,docs]" "einops>=0.7"
	# A second backend from its own package, which the tests plug in through the entry point.
	$(PY) -m pip install --quiet -e tests/plugin_backend
	# Both declare torchvision, which would replace the CPU torch with a multi-GB CUDA build. Single-file
	# checkpoints only read the CLIP BPE vocabulary open-clip-torch ships; spandrel's upscalers run
	# without torchvision (gridgen imports spandrel with a stand-in for it when it is missing). Installed
	# last and with --no-deps, so pip's resolver never reports the torchvision they declare; a later
	# `pip install` in this venv prints "spandrel requires torchvision, which is not installed": expected.
	$(PY) -m pip install --quiet --no-deps "open-clip-torch==3.3.0" "spandrel==0.4.2"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/gridgen run grids/demo.yaml --out out/demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

# The documentation site, into site/: open site/index.html from disk, no server needed.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf out site .pytest_cache
