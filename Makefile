# The README's two commands are `make demo` and `make test`. Both create .venv and install what they need.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# torch and torchvision: the CUDA builds pip takes from its index (override TORCH for another build).
TORCH   ?= torch==2.14.1 torchvision==0.29.1
PARAMS  ?= params/demo.yaml
OUT     ?= outputs/demo

.PHONY: demo test lab setup setup-dev setup-lab setup-browser lint sync nbtest nbval pytest readme readme-check docs-check clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install $(TORCH)
	touch $@

# Stamps: the editable install is redone only when pyproject.toml changes (code changes need no reinstall).
setup: $(VENV)/.installed  ## install aidetect (editable) with its runtime dependencies
$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup-dev: $(VENV)/.installed-dev  ## install aidetect with the test, docs, serving and JupyterLab tools
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -e ".[dev,serve,vertex,lab]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@ $(VENV)/.installed $(VENV)/.installed-lab

setup-lab: $(VENV)/.installed-lab  ## install aidetect (editable) with JupyterLab
$(VENV)/.installed-lab: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -e ".[lab]"
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

test: setup-dev setup-browser lint sync readme-check nbtest nbval pytest  ## everything CI runs

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

# Library notebooks and guides: their tests run in nbdev-test, and the library notebooks again, cell by cell, under
# nbval (one notebook at a time: each ends by running nbdev_export, which rewrites aidetect/). The experiment notebooks run end to end through papermill in tests/ (test_papermill.py, test_bench.py, ...).
EXPERIMENTS := ^(train|evaluate|bench|audit|generalize|compare|drift)\.ipynb$$
nbtest:
	PATH=$(BIN):$$PATH nbdev-test --n-workers 2 --skip-file-re '$(EXPERIMENTS)'

nbval:
	PATH=$(BIN):$$PATH $(BIN)/pytest -q -p no:cacheprovider --nbval $$(ls nbs/[0-9]*.ipynb)

pytest:
	PATH=$(BIN):$$PATH $(BIN)/pytest -q tests

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
