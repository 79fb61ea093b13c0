# The README's two commands are `make demo` and `make test`. Both create .venv and install what they need.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# torch wheels: these versions lie on the project's machines' disk (pip takes them from there).
TORCH   ?= torch==2.14.1 torchvision==0.29.1
PARAMS  ?= params/demo.yaml
OUT     ?= outputs/demo

.PHONY: demo test setup setup-dev setup-browser lint sync nbtest nbval pytest clean

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

setup-dev: $(VENV)/.installed-dev  ## install aidetect with the test, docs and serving tools
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -e ".[dev,serve]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@ $(VENV)/.installed

demo: setup  ## train on the bundled demo dataset with papermill; the record lands in $(OUT)
	mkdir -p $(OUT)
	$(BIN)/papermill nbs/train.ipynb $(OUT)/train.ipynb -f $(PARAMS) -p out_dir $(OUT)
	@cat $(OUT)/metrics.json | $(BIN)/python -c "import json,sys; m=json.load(sys.stdin); print({k: round(m[k], 4) for k in ('val_acc', 'val_auc', 'val_f1')})"

test: setup-dev setup-browser lint sync nbtest nbval pytest  ## everything CI runs

# The serving tests drive Debian's headless Chromium through Selenium and /usr/bin/chromedriver: nothing is
# downloaded at test time. Idempotent: installs only when either binary is missing (as root, or with sudo).
setup-browser:  ## install chromium and chromedriver from apt for tests/test_serve.py
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then echo "chromium and chromedriver are installed"; \
	else sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; fi

lint:
	$(BIN)/ruff check aidetect tests nbs
	$(BIN)/hadolint Dockerfile

sync:  ## nbdev-export and nbdev-clean must leave aidetect/ and nbs/ as they are
	@before=$$(git status --porcelain -- nbs aidetect); \
	PATH=$(BIN):$$PATH nbdev-export && PATH=$(BIN):$$PATH nbdev-clean; \
	after=$$(git status --porcelain -- nbs aidetect); \
	if [ "$$before" != "$$after" ]; then echo "nbdev-export/nbdev-clean changed:"; git status --short -- nbs aidetect; exit 1; fi
	@$(BIN)/python -c "import json, glob, sys; bad = [f for f in sorted(glob.glob('nbs/*.ipynb')) if any(c.get('outputs') for c in json.load(open(f))['cells'])]; sys.exit(f'commit notebooks without outputs (Jupyter: Clear All Outputs): {bad}' if bad else 0)"

# Library notebooks: their tests run in nbdev-test and again, cell by cell, under nbval. The experiment
# notebooks (train, evaluate, bench, audit) run end to end through papermill in tests/test_papermill.py, test_bench.py
# and test_audit.py.
EXPERIMENTS := ^(train|evaluate|bench|audit)\.ipynb$$
nbtest:
	PATH=$(BIN):$$PATH nbdev-test --n-workers 2 --skip-file-re '$(EXPERIMENTS)'

nbval:
	PATH=$(BIN):$$PATH $(BIN)/pytest -q -p no:cacheprovider --nbval $$(ls nbs/[0-9]*.ipynb)

pytest:
	PATH=$(BIN):$$PATH $(BIN)/pytest -q tests

clean:
	rm -rf $(VENV) outputs/* _docs _proc nbs/_proc
