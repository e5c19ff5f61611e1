# The two commands of a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo_output
# Extra arguments for the demo's preprocessing (e.g. DEMO_BEAM_ARGS="--runner=PortableRunner ...").
DEMO_BEAM_ARGS ?=

.PHONY: setup demo test test-fast lint format clean-demo tensorboard app serve browser-deps

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

test: lint browser-deps
	$(BIN)/python -m pytest

# The browser test of bonify-app drives Debian's chromium + chromium-driver. As root (CI,
# containers) install them when missing; otherwise that test skips naming the packages.
browser-deps:
	@if [ "$$(id -u)" = 0 ] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver; \
	fi

# The suite without the end-to-end runs marked slow (a few minutes instead of the whole suite).
test-fast: lint
	$(BIN)/python -m pytest -m "not slow"

# The demo: sample data -> Beam job -> trainer (which ends by fitting the operating point,
# threshold and temperature, on the validation split into the model card) -> evaluator on
# the test split at that operating point (its summary prints study kappa at 0.5 and at the
# card's threshold). Each step leaves a marker file written last (the sample's stamp, the
# Beam job's manifest.json), so rerunning `make demo` after a kill redoes only unfinished
# steps; the trainer resumes from its checkpoints.
DEMO_IMAGE_SIZE := 128

$(DEMO_DIR)/raw/.complete: $(VENV)/.installed
	$(BIN)/bonify-sample --output_dir $(DEMO_DIR)/raw --overwrite
	touch $@

$(DEMO_DIR)/tfrecords/manifest.json: $(DEMO_DIR)/raw/.complete
	$(BIN)/bonify-preprocess --input_dir $(DEMO_DIR)/raw --output_dir $(DEMO_DIR)/tfrecords \
		--image_size $(DEMO_IMAGE_SIZE) --overwrite $(DEMO_BEAM_ARGS)

demo: setup $(DEMO_DIR)/tfrecords/manifest.json
	$(BIN)/bonify-train --data_dir $(DEMO_DIR)/tfrecords --job_dir $(DEMO_DIR)/job --config sample_cpu
	$(BIN)/bonify-eval --model $(DEMO_DIR)/job/model/final.keras --data_dir $(DEMO_DIR)/tfrecords \
		--split test --output_dir $(DEMO_DIR)/eval
	@echo "TensorBoard: make tensorboard JOB=$(DEMO_DIR)/job   (then open http://127.0.0.1:6006)"
	@echo "Data report: $(DEMO_DIR)/tfrecords/data_report.html"
	@echo "Report:      $(DEMO_DIR)/eval/report.html"

# Serve a training job's TensorBoard logs on this machine: make tensorboard JOB=demo_output/job
JOB ?= $(DEMO_DIR)/job
TENSORBOARD_PORT ?= 6006
tensorboard: setup
	$(BIN)/tensorboard --logdir $(JOB)/tensorboard --host 127.0.0.1 --port $(TENSORBOARD_PORT)

# The upload page on the demo's model (after `make demo`): open http://127.0.0.1:$(APP_PORT)
APP_PORT ?= 8501
app: setup
	$(BIN)/bonify-app --model $(DEMO_DIR)/job --host 127.0.0.1 --port $(APP_PORT)

# The HTTP API on the demo's model (after `make demo`), loopback only and so without a token:
# curl -F files=@image.png http://127.0.0.1:$(API_PORT)/predict
API_PORT ?= 8000
serve: setup
	$(BIN)/bonify-serve --model $(DEMO_DIR)/job --host 127.0.0.1 --port $(API_PORT)

clean-demo:
	rm -rf $(DEMO_DIR)
