# labnet: the two commands a fresh machine needs are `make lab` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8888

.PHONY: lab test test-slow test-fast test-browser bench soak files lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[lab,test]'
	touch $(STAMP)

venv: $(STAMP)

files: $(STAMP)
	$(PY) -m labnet make-files --sizes 10MB,50MB,100MB --dest client_files

# JupyterLab refuses to run as root unless told; lab containers often run as root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: files
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --port=$(PORT) $(ROOT_FLAG)

lint: $(STAMP)
	$(VENV)/bin/ruff check labnet tests bench

# The whole suite: lint, unit, integration and notebook tests (quick mode).
test: $(STAMP) lint
	LABNET_QUICK=1 $(PY) -m pytest -q -m "not slow" tests

# The long cases (soak-like loops, slow readers, every dialect x every bad input, the notebooks under nbval,
# the benches' smoke runs): .ci/run runs them after make test.
test-slow: $(STAMP)
	LABNET_QUICK=1 $(PY) -m pytest -q -m slow tests

test-fast: $(STAMP)
	$(PY) -m pytest -q tests -m "not browser" -x

# Real browser: JupyterLab + Playwright + Debian chromium (apt-get install chromium).
test-browser: $(STAMP)
	LABNET_QUICK=1 LABNET_BROWSER=1 $(PY) -m pytest -q -m browser tests/browser

# Every benchmark runs even when an earlier one missed a target; the exit status says if any did.
bench: $(STAMP)
	@rc=0; for b in transfer heavy matrix dialects; do echo "== bench/$$b.py"; $(PY) bench/$$b.py || rc=1; done; exit $$rc

soak: $(STAMP)
	$(PY) bench/soak.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
