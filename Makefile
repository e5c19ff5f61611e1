# The two commands of a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo_output
# Extra arguments for the demo's preprocessing (e.g. DEMO_BEAM_ARGS="--runner=PortableRunner ...").
DEMO_BEAM_ARGS ?=

.PHONY: setup demo test lint format clean-demo

# Reinstall whenever setup.py changes; the stamp file makes reruns instant.
$(VENV)/.installed: setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

# Sample data -> Beam job. Rerunning the same command redoes it from scratch (--overwrite).
demo: setup
	$(BIN)/bonify-sample --output_dir $(DEMO_DIR)/raw
	$(BIN)/bonify-preprocess --input_dir $(DEMO_DIR)/raw --output_dir $(DEMO_DIR)/tfrecords \
		--image_size 128 --overwrite $(DEMO_BEAM_ARGS)

clean-demo:
	rm -rf $(DEMO_DIR)
