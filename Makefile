# Every target works on a fresh clone: uv and the virtualenv are made on first use,
# and everything is installed from uv.lock (never resolved anew: `make lock` does that).
VENV ?= .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
# uv: the one on PATH if there is one, else a pinned copy installed here (from PyPI).
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
# The machine's python3 (>= 3.11); uv never downloads an interpreter.
export UV_PYTHON_DOWNLOADS := never
# Trust the machine's CA store (where a proxy's CA would be), as pip does.
export UV_SYSTEM_CERTS := 1
export UV_PROJECT_ENVIRONMENT := $(VENV)
UV_PYTHON := --python python3
STAMP := $(VENV)/.synced-$(shell cat pyproject.toml uv.lock | sha1sum | cut -c1-12)

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint lock-check fmt lock check-floors dev compose-smoke crash \
	experiments lab docs clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked $(UV_PYTHON) --extra experiments --group dev
	rm -f $(VENV)/.synced-* && touch $@

install: $(STAMP) ## make .venv from uv.lock: the services, the experiments, the test tools

# The integration tests that wait (most of them) run side by side; how many at once.
# 4: the two cores are busy throughout already; at 6 each test's waits stretched
# past their windows on a slow day (3 of 3 runs had a timing failure).
TEST_JOBS ?= 4
JUNIT = test-artifacts/junit

test: $(STAMP) ## everything, failing fast: unit tests, then the timing tests alone, then the rest side by side
	@rm -rf $(JUNIT) && mkdir -p $(JUNIT)
	@# 1. Seconds, no process: a failure here stops the run before any process starts.
	$(PY) -m pytest tests/unit -q -x --junitxml=$(JUNIT)/unit.xml $(PYTEST_ARGS)
	@# 2. Timing or CPU is their subject: one at a time, alone on the machine.
	$(PY) -m pytest tests/integration -m serial -q --junitxml=$(JUNIT)/serial.xml $(PYTEST_ARGS)
	@# 3. The rest wait on processes: side by side (a group shares one worker).
	$(PY) -m pytest tests/integration -m "not serial" -q -n $(TEST_JOBS) --dist loadgroup \
		--junitxml=$(JUNIT)/parallel.xml $(PYTEST_ARGS)
	@$(PY) -m tests.slowest $(JUNIT)/unit.xml $(JUNIT)/serial.xml $(JUNIT)/parallel.xml

test-fast: $(STAMP) ## the unit tests only: no process, no redis-server needed, seconds
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

lint: $(STAMP) lock-check ## ruff, mypy (strict on the services), shellcheck, the lock matches pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	shellcheck scripts/*.sh .ci/run
	$(VENV)/bin/pre-commit validate-config

lock-check: | $(UV) ## uv.lock matches pyproject.toml (nothing resolved, nothing written)
	$(UV) lock --check $(UV_PYTHON)

fmt: $(STAMP) ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

lock: | $(UV) ## update uv.lock after a change to pyproject.toml's dependencies
	$(UV) lock $(UV_PYTHON)

check-floors: | $(UV) ## the unit tests on the lowest versions pyproject.toml allows
	rm -rf .venv-floors
	$(UV) venv --quiet $(UV_PYTHON) .venv-floors
	# `uv pip`, not `uv sync`: a resolution of its own, uv.lock untouched.
	$(UV) pip install --quiet --python .venv-floors/bin/python --resolution lowest-direct \
		-r pyproject.toml --extra experiments --group dev
	PYTHONPATH=$(CURDIR) .venv-floors/bin/python -m pytest tests/unit -q -p no:cacheprovider

dev: $(STAMP) ## run the six services as local processes (no Docker); Ctrl-C stops them
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m harness.dev $(ARGS)

compose-smoke: ## docker compose up, check both sides, kill things, down -v (needs Docker)
	bash scripts/compose-smoke.sh

crash: $(STAMP) ## the crash experiment: what survives a kill, on both sides
	$(PY) -m experiments crash $(ARGS)

experiments: $(STAMP) ## every experiment, report in reports/
	$(PY) -m experiments all $(ARGS)

lab: $(STAMP) ## the live page, a column per implementation (ARGS=--implementations=bg,celery,taskiq)
	$(PY) -m lab $(ARGS)

docs: $(STAMP) ## regenerate the measured tables in docs/ from reports/*.json
	$(PY) -m experiments docs $(ARGS)

clean: ## remove runtime artefacts
	rm -rf log.txt log.txt.index celerybeat-schedule* dump.rdb .dev .pytest_cache \
		.mypy_cache .ruff_cache test-artifacts .venv-floors
