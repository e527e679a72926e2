# Two entry points for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Bytecode caches on, whatever the shell says: without them every test worker and every CLI process a
# test starts compiles the package (and pytest rewrites every test module) again, about 6 s of CPU each.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test lint typecheck pytest bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	@rm -rf demo-reports
	@$(BIN)/evs-snapshot create samples/volumes.csv --emulator --report demo-reports/demo.jsonl; \
	  code=$$?; \
	  echo; echo "exit code: $$code (1 = the run finished and some rows did not succeed, as the sample intends)"; \
	  echo "report (the run header, a \"sending\" line as each request leaves, one record per manifest row):"; cat demo-reports/demo.jsonl; echo; \
	  $(BIN)/evs-snapshot summary demo-reports/demo.jsonl; \
	  test $$code -le 1

lint: $(STAMP)
	$(BIN)/ruff format --check orchestrator tests benchmarks docs
	$(BIN)/ruff check orchestrator tests benchmarks docs

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest rewrites each test module's asserts when it first imports it, and keeps the result in
# tests/__pycache__. In a fresh clone each of the workers would rewrite all of them, under coverage's
# tracer: 14-16 s of CPU a worker, against 3.5 s for a worker that finds them written. One collection
# without workers or coverage writes them first (about 9 s of CPU, once, beside mypy on the other core);
# it runs again only when a test file changed. The package's bytecode is written before the tests too:
# otherwise the first process to import a module writes it, and a test that runs the CLI under a file
# size limit must not be that process.
REWRITTEN := tests/__pycache__/.rewritten

$(REWRITTEN): $(STAMP) $(wildcard tests/*.py)
	$(BIN)/python -m compileall -q orchestrator
	$(BIN)/pytest -q --collect-only -p no:xdist -p no:cov > /dev/null
	@touch $@

# hypothesis builds its tables of Unicode characters (and of those UTF-8 encodes) on the first draw of a
# text and keeps them in .hypothesis/unicode_data. In a fresh clone the first worker that draws one built
# them under coverage's tracer: 5.7 s of CPU in one test, against 1.3 s here, once, beside mypy.
UNICODE := .hypothesis/unicode_data

$(UNICODE): $(STAMP)
	$(BIN)/python -W ignore -c 'from hypothesis import strategies as s; s.text().example(); s.characters(codec="utf-8").example()'

# Six workers on two cores: most tests wait (real processes, signals, settle windows), so two workers
# left the cores idle half the time, and four about a quarter of it. Each worker more costs about 2 s of
# CPU (its start and collection); six against four, `make test` in a fresh clone's state, interleaved
# (2026-12-07, loads 1.3-9): 61/64/80/90 s against 73/68/98 s (benchmarks/results.md, session 12).
# The coverage report comes from `coverage report`, not from pytest-cov: pytest-cov analyses every source
# file twice (once for its total, once for the table), 1.7 s of CPU each. What is measured is set in
# pyproject's [tool.coverage]: branches of orchestrator/. Under 97% of them covered fails the target.
pytest: $(REWRITTEN)
	$(BIN)/python -m compileall -q orchestrator
	$(BIN)/pytest -q -n 6 --dist worksteal --cov --cov-report=
	$(BIN)/coverage report --fail-under=97

# mypy runs on one core; the collection that writes the rewritten test modules, and hypothesis's tables,
# take the other.
test: lint
	@$(MAKE) --no-print-directory -j2 typecheck $(REWRITTEN) $(UNICODE)
	@$(MAKE) --no-print-directory pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

docs: $(STAMP)
	$(BIN)/python docs/generate.py

clean:
	rm -rf $(VENV) demo-reports reports .mypy_cache .ruff_cache
