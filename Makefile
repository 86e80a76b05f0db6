# Quick start: `make demo` and `make test` each set up .venv on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-boards clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# (setuptools' UserWarning about editable installs is noise on every fresh set-up)
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m shiftbook.demo

# The report's browser test needs Debian's chromium: installed here when missing and apt-get
# can (root); otherwise that test names what is missing.
test: $(STAMP)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ; } || true
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# ULX3S-85F and iCEBreaker bitstreams with utilization and Fmax (CI runs it; 10-30 min).
bench-boards: $(STAMP)
	$(BIN)/python bench/bench_boards.py

clean:
	rm -rf build sim_build .pytest_cache
