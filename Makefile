# monitord — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint bench soak clean

# Create .venv when it is missing and (re)install when pyproject.toml or the C source changed
# (an editable install builds monitord/accesslog/_nginxscan.c in place). The bytecode is compiled
# then, as a regular install does: an editable one leaves it to the first run, and where
# PYTHONDONTWRITEBYTECODE is set every start would compile every module again (~60 ms).
$(STAMP): pyproject.toml monitord/accesslog/_nginxscan.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m compileall -q monitord rules probes alerts reports >/dev/null
	@touch $(STAMP)

## run: the demo — a portal and services on loopback, and the daemon working on them (Ctrl-C stops)
run: $(STAMP)
	$(BIN)/monitord demo

## test: the whole test suite, on two workers (most of its time is daemons and servers waiting)
test: $(STAMP)
	$(BIN)/python -m pytest --numprocesses 2 --dist loadfile

## lint: ruff and mypy, as CI's reviewers expect them
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy monitord

## bench: the benchmarks under bench/, each printing its figures (bench/_*.py are their helpers)
bench: $(STAMP)
	@for script in bench/[!_]*.py; do \
	  test $$script = bench/soak.py && continue; \
	  echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

## soak: three daemons, 2,000 services, a fault every few minutes, for an hour (bench/soak.py)
soak: $(STAMP)
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info var build monitord/accesslog/*.so
