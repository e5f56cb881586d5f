# One command to run the app, one to run the tests. Both create or refresh .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run test test-all lint clean browser-deps reliability bench

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

run: venv
	$(PY) app.py

test: venv
	$(PY) -m pytest

test-all: venv
	$(PY) -m pytest -m ''

# Every reliability check (slow ones too); rewrites docs/RELIABILITY.md.
reliability: venv
	bash scripts/reliability_report.sh

bench: venv
	$(PY) -m metaseg bench --threads 1

lint: venv
	$(PY) -m ruff check .

# Debian Chromium for the browser tests (never `playwright install`).
browser-deps:
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

clean:
	rm -rf $(VENV) .pytest_cache
