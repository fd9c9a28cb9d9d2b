# Every target works on a fresh clone: the virtualenv is made on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.DEFAULT_GOAL := help
.PHONY: help install test lint fmt dev compose-smoke crash experiments lab clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## make .venv and install the project with its dev tools

test: $(STAMP) ## run the test suite (real redis-server, worker and uvicorn processes)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP) ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

dev: $(STAMP) ## run the six services as local processes (no Docker); Ctrl-C stops them
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m experiments dev

compose-smoke: ## docker compose up, check both sides, kill things, down -v (needs Docker)
	bash scripts/compose-smoke.sh

crash: $(STAMP) ## the crash experiment: what survives a kill, on both sides
	$(PY) -m experiments crash $(ARGS)

experiments: $(STAMP) ## every experiment, report in reports/
	$(PY) -m experiments all $(ARGS)

lab: $(STAMP) ## the live comparison page on http://127.0.0.1:8000
	$(PY) -m experiments lab $(ARGS)

clean: ## remove runtime artefacts
	rm -rf log.txt celerybeat-schedule* dump.rdb reports .dev .pytest_cache .mypy_cache .ruff_cache
