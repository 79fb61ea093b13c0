# The README's two commands are `make demo` and `make test`. Both create .venv and install what they need.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# torch and torchvision: the CUDA builds from the package index (override TORCH for another build).
TORCH   ?= torch==2.14.1 torchvision==0.29.1
PARAMS  ?= params/demo.yaml
OUT     ?= outputs/demo

# Python keeps the bytecode (.pyc) of what it imports in the venv: uv installs without compiling it (compiling all of
# site-packages takes a minute), so an environment that sets PYTHONDONTWRITEBYTECODE would otherwise compile torch
# and the rest again in every process, which doubles the time of the tests.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test lab setup setup-dev setup-lab setup-browser lint sync nbtest check nbval pytest readme readme-check docs-check clean

# Installs go through uv (pip's work in parallel, without byte-compiling: about half of pip's time for torch and the
# extras; from uv's cache, seconds). uv looks where pip is configured to look: the index, extra indexes,
# find-links and constraints of `pip config list` become uv's options, chosen among as pip does (best match).
UV       = $(BIN)/uv pip install --python $(BIN)/python --index-strategy unsafe-best-match $(PIP_SOURCES)
PIP_SOURCES = $(shell $(PY) -m pip config list 2>/dev/null | $(PY) -c "import sys; \
	opts = [f'--{k} {v}' for k, _, val in (line.split('.', 1)[-1].partition('=') for line in sys.stdin) \
	        if k in ('index-url', 'extra-index-url', 'find-links', 'constraint') for v in val.strip(chr(39) + '\"\n').split()]; \
	print(' '.join(dict.fromkeys(opts)))")

# The venv starts without pip (ensurepip takes seconds); this Python's pip puts uv in it, and uv adds pip.
$(BIN)/uv:
	$(PY) -m venv --without-pip $(VENV)
	$(PY) -m pip --python $(BIN)/python install -q uv || { $(BIN)/python -m ensurepip -q && $(BIN)/pip install -q uv; }

$(VENV)/.torch: $(BIN)/uv
	$(UV) pip $(TORCH)
	touch $@

# Stamps: the editable install is redone only when pyproject.toml changes (code changes need no reinstall).
setup: $(VENV)/.installed  ## install aidetect (editable) with its runtime dependencies
$(VENV)/.installed: pyproject.toml $(VENV)/.torch | $(BIN)/uv
	$(UV) -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup-dev: $(VENV)/.installed-dev  ## install aidetect with the test, docs, serving and JupyterLab tools
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch | $(BIN)/uv
	$(UV) -e ".[dev,serve,vertex,lab]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@ $(VENV)/.installed $(VENV)/.installed-lab

setup-lab: $(VENV)/.installed-lab  ## install aidetect (editable) with JupyterLab
$(VENV)/.installed-lab: pyproject.toml $(VENV)/.torch | $(BIN)/uv
	$(UV) -e ".[lab]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@ $(VENV)/.installed

# The kernel is this virtualenv's python3 (ipykernel installed into it), so notebooks import the editable
# aidetect and tqdm's bars render as widgets (ipywidgets). Only on loopback; the URL printed carries the token.
LAB_PORT ?= 8888
lab: setup-lab  ## open JupyterLab on the project
	$(BIN)/jupyter lab --ServerApp.root_dir=$(CURDIR) --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
		$$([ "$$(id -u)" = 0 ] && echo --allow-root)

demo: setup  ## train on the bundled demo dataset with papermill; the record lands in $(OUT)
	mkdir -p $(OUT)
	$(BIN)/papermill nbs/train.ipynb $(OUT)/train.ipynb -f $(PARAMS) -p out_dir $(OUT)
	@cat $(OUT)/metrics.json | $(BIN)/python -c "import json,sys; m=json.load(sys.stdin); print({k: round(m[k], 4) for k in ('val_acc', 'val_auc', 'val_f1')})"

# The installs (Python packages, and Chromium from apt where it is missing) run side by side, then lint and the
# export check; then the README check (one kernel) beside the pytest session that runs the notebooks and tests/ on
# every core.
test:  ## everything CI runs
	@$(MAKE) --no-print-directory -j2 --output-sync=target setup-dev setup-browser
	@$(MAKE) --no-print-directory -j2 --output-sync=target lint sync
	@$(MAKE) --no-print-directory -j2 readme-check check

# The serving tests drive Debian's headless Chromium through Selenium and /usr/bin/chromedriver: nothing is
# downloaded at test time. Idempotent: installs only when either binary is missing (as root, or with sudo).
setup-browser:  ## install chromium and chromedriver from apt for tests/test_serve.py
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then echo "chromium and chromedriver are installed"; \
	else sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; fi

lint:
	$(BIN)/ruff check aidetect tests nbs tools benchmarks
	$(BIN)/hadolint Dockerfile

sync:  ## nbdev-export and nbdev-clean must leave aidetect/ and nbs/ as they are
	@before=$$(git status --porcelain -- nbs aidetect); \
	PATH=$(BIN):$$PATH nbdev-export && PATH=$(BIN):$$PATH nbdev-clean; \
	after=$$(git status --porcelain -- nbs aidetect); \
	if [ "$$before" != "$$after" ]; then echo "nbdev-export/nbdev-clean changed:"; git status --short -- nbs aidetect; exit 1; fi
	@$(BIN)/python -c "import json, glob, sys; bad = [f for f in sorted(glob.glob('nbs/**/*.ipynb', recursive=True)) if any(c.get('outputs') for c in json.load(open(f))['cells'])]; sys.exit(f'commit notebooks without outputs (Jupyter: Clear All Outputs): {bad}' if bad else 0)"

# Every library notebook and guide runs once, cell by cell, under nbval; tests/ holds the papermill runs of the
# experiment notebooks, the real server, browser and JupyterLab tests. pytest-xdist runs them on all cores: a notebook's
# cells stay together in one worker (--dist loadscope), in the order tests/conftest.py gives (the longest first). Each
# notebook's last cell (nbdev_export, which rewrites aidetect/) carries the nbval-skip tag, so notebooks run side by
# side. `make nbtest` (nbdev-test) runs the notebooks' tests the nbdev way, for contributors; CI runs `check`.
NOTEBOOKS = $(wildcard nbs/[0-9]*.ipynb) $(wildcard nbs/tutorials/*.ipynb)
# One worker more than cores: a worker waiting on a kernel, a server or a browser leaves its core to the others
# (measured on 2 cores: 3 workers 284 s, 2 workers 313 s).
WORKERS  ?= $(shell echo $$(( $$(nproc) + 1 )))
PYTEST    = PATH=$(BIN):$$PATH OMP_NUM_THREADS=1 $(BIN)/pytest -p no:cacheprovider -n $(WORKERS) --dist loadscope \
            --no-loadscope-reorder
EXPERIMENTS := ^(train|evaluate|bench|audit|generalize|compare|drift)\.ipynb$$
nbtest:
	PATH=$(BIN):$$PATH nbdev-test --n-workers 2 --skip-file-re '$(EXPERIMENTS)'

check:  ## the notebooks under nbval and tests/, in one pytest session; the ten slowest are listed
	$(PYTEST) -q --durations=10 --nbval $(NOTEBOOKS) tests

nbval:  ## the library notebooks and guides under nbval
	$(PYTEST) -q --nbval $(NOTEBOOKS)

pytest:  ## tests/
	$(PYTEST) -q --durations=10 tests

# README.md is generated from nbs/index.ipynb. nbdev-readme needs Quarto (the docs workflow runs it); these run
# the same nbdev processing without Quarto (tools/docs.py), executing index.ipynb so the README shows its outputs.
readme:  ## write README.md (and index_files/) from nbs/index.ipynb
	PATH=$(BIN):$$PATH $(BIN)/python tools/docs.py readme

readme-check:  ## fail if README.md is not what nbs/index.ipynb gives
	PATH=$(BIN):$$PATH $(BIN)/python tools/docs.py readme --check

# Execute the index, the guides and the data notebook as the docs workflow does, process them with nbdev into
# _proc/ and check that every page with code shows outputs (about 35 s on 2 cores).
DOCS_CHECK ?= index tutorials $(notdir $(wildcard nbs/*_data.ipynb))
docs-check:  ## execute and nbdev-process the docs pages, report their outputs
	PATH=$(BIN):$$PATH $(BIN)/python tools/docs.py check $(DOCS_CHECK)

clean:
	rm -rf $(VENV) outputs/* _docs _proc _exec nbs/_proc
