# The two commands the README promises on a fresh machine:
#   make run    set up (once) and start the app on its offline default (ONNX Runtime, bundled model)
#   make test   set up (once) and run the whole test suite
# Set-up runs again only when pyproject.toml (or scripts/dev-setup.sh) changed: the editable
# install follows code changes by itself, so `make run` starts the app straight away.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# the benchmarks that run on any machine (CPU); bench/bench_gpu.py needs a GPU: run it by hand
BENCHES := bench/bench_startup.py bench/bench_preprocess.py bench/bench_worker.py bench/bench_int8.py \
           bench/bench_story.py bench/bench_tui.py

.PHONY: run test setup setup-dev lint typecheck bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[story,engines]'
	touch $@

$(DEV_STAMP): pyproject.toml setup.py scripts/dev-setup.sh | $(BIN)/python
	bash scripts/dev-setup.sh $(VENV)
	touch $@ $(RUN_STAMP)

setup: $(RUN_STAMP)

setup-dev: $(DEV_STAMP)

run: setup
	$(BIN)/ncanvas

test: setup-dev
	$(BIN)/python -m pytest -q -ra tests

lint: setup-dev
	$(BIN)/ruff check ncanvas_tui tests scripts bench setup.py

typecheck: setup-dev
	$(BIN)/python -m mypy ncanvas_tui
	$(BIN)/lint-imports

bench: setup-dev
	@set -e; for b in $(BENCHES); do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info ncanvas_tui/_data
