# Both targets work from a fresh clone: they create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test install install-dev real-deps clean

# The real programs that tests and the real-process experiments drive (Debian packages), and
# a C compiler for the static test target: installed where we are root and have apt-get;
# elsewhere the tests that need them skip, saying why.
REAL_DEPS := redis-server redis-tools gcc libc6-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

demo: install
	$(BIN)/cowbench demo --out results/demo

real-deps:
	@if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null && command -v cc >/dev/null; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q $(REAL_DEPS) >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q $(REAL_DEPS) >/dev/null; }; \
	else \
	  echo "make real-deps: $(REAL_DEPS) not all installed, and not root with apt-get: the tests that need them skip"; \
	fi

test: install-dev real-deps
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
