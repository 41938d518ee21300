# Everything runs inside .venv/ in the repo root; `make install` creates it with tools/install.sh, which picks
# the interpreter: PYTHON when given (make install PYTHON=python3.12), else the newest supported one found.
PYTHON ?=
VENV ?= .venv
export PYTHON VENV
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/tfod-wrap

# make tfrecords: annotations -> TFRecords (see README, "Step 1")
INPUT ?= data/annotations
IMAGES ?=
DATA ?= data/records
FORMAT ?= auto
SPLIT ?= train=0.8,val=0.2
SHARDS ?= 1
SEED ?= 0
LABEL_MAP ?=

# make train: template -> pipeline.config -> training (see README, "Step 3")
MODEL ?= ssd_mobilenet_v2
RUN ?= runs/$(MODEL)
STEPS ?= 2000
BATCH ?= 8
FREEZE ?= backbone
# set (to anything) to freeze FREEZE even where no checkpoint restored it: `train` refuses that by default
ALLOW_RANDOM_FROZEN ?=
CHECKPOINT ?=
RESUME ?=
# TIME=10m trains for that long with the adaptive recipe (README, "Step 3"): the steps fill the budget, and freezing
# is chosen for the model unless FREEZE is given on the command line. TRAIN_SEED=N makes the run repeatable.
TIME ?=
TRAIN_SEED ?=

# make export-tfjs / make serve: a run's checkpoint -> SavedModel + TF.js -> the webcam page (see README, "Step 5")
EXPORT ?= $(RUN)/export
QUANTIZE ?= none
TFJS ?= $(EXPORT)/tfjs
PORT ?= 8000
HOST ?= 127.0.0.1
# make site: the export plus the webcam page as a static site in SITE (README, "Step 5"); its TF.js weights are the
# smallest of uint8, float16, float32 whose mAP@0.5 stays within 0.02 of the checkpoint's (measured by --verify),
# unless QUANTIZE is given on the command line
SITE ?= $(RUN)/site

# make demo: the whole path on generated sample data, from the pretrained SSD MobileNet V2 (see README, "The demo")
DEMO ?= runs/demo
DEMO_DATA ?= data/sample
DEMO_COUNT ?= 300
# The demo trains as `make train TIME=...` does: the adaptive recipe (input size, anchors, freezing and rates chosen
# from the model, the batch of DEMO_BATCH and the records) for a time budget, TIME (default DEMO_TIME: the whole demo
# then takes about 11 minutes on 2 cores), seeded with DEMO_SEED. DEMO_STEPS=N trains N steps with the registered
# `demo` recipe instead (tfod_wrap/core/recipe.py). Each of DEMO_LR, DEMO_WARMUP_LR and DEMO_FREEZE overrides its
# field in either (DEMO_FREEZE is left undefined here on purpose, so that DEMO_FREEZE= , set but empty, freezes
# nothing). RESUME=1 continues an interrupted demo for the steps its run planned.
DEMO_TIME ?= 8m
DEMO_SEED ?= 0
DEMO_BATCH ?= 8
DEMO_STEPS ?=
DEMO_LR ?=
DEMO_WARMUP_LR ?=
DEMO_LENGTH = $(if $(DEMO_STEPS),--recipe demo --num-steps $(DEMO_STEPS),--time-budget $(or $(TIME),$(DEMO_TIME)))
DEMO_RECIPE = $(if $(RESUME),--resume,$(strip $(DEMO_LENGTH) --seed $(DEMO_SEED) --batch-size $(DEMO_BATCH) \
	$(if $(DEMO_LR),--learning-rate $(DEMO_LR)) $(if $(DEMO_WARMUP_LR),--warmup-rate $(DEMO_WARMUP_LR)) \
	$(if $(filter undefined,$(origin DEMO_FREEZE)),,$(if $(DEMO_FREEZE),$(foreach spec,$(DEMO_FREEZE),--freeze $(spec)),--no-freeze))))
PRETRAINED ?= models/objectron_ssd_mobilenet_v2


.PHONY: install install-mediapipe check check-installs check-templates check-python310 check-wheel test lint tfrecords train eval export-tfjs serve site demo bench bench-demo bench-scale clean

# Idempotent: returns at once when .venv was made by the chosen Python from the same dependency files.
install:
	@bash tools/install.sh

# MediaPipe Tasks, the client the TFLite export's embedded metadata is for, in a venv of its own (.venv-mediapipe):
# its wheel needs opencv-contrib-python (a second owner of the cv2 folder beside opencv-python-headless) and a numpy
# the TensorFlow stack does not take. tests/test_mediapipe.py runs its ObjectDetector there (skipped without it).
MEDIAPIPE_VENV ?= .venv-mediapipe
install-mediapipe: install
	@$(MEDIAPIPE_VENV)/bin/python -c 'import mediapipe' 2>/dev/null || { \
		$(PY) -m venv --clear $(MEDIAPIPE_VENV) && \
		$(MEDIAPIPE_VENV)/bin/pip install -q -c constraints-mediapipe.txt mediapipe; }

# Two pytest-xdist workers (tests sharing a costly fixture stay on one: tests/conftest.py); every run prints the 15
# slowest tests and the total line coverage of tfod_wrap (setup.cfg [coverage:run]).
# make test: the suite for a change, without the end-to-end runs of minutes each (marked `long`: every template
# trained and exported, kill-and-resume of train and export, two workers in lockstep, the 60 s time budget, the
# quantised exports and the export of an older checkpoint).
# make check: everything, as CI runs it; in CI the oldest supported Python is checked first, so pytest's summary stays
# the last line of the run. Each fails below its floor (TEST_COVERAGE_FLOOR, COVERAGE_FLOOR), a point under the
# coverage measured (docs/BENCHMARKS.md, "Test suite").
COVERAGE_FLOOR ?= 92
TEST_COVERAGE_FLOOR ?= 91
PYTEST_RUN = $(PY) -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder --durations=15 --cov --cov-report=
# In CI (CI set), make test is make check: .ci/run runs the README's two commands and CI runs every test.
test: install install-mediapipe
	$(if $(CI),$(MAKE) check,$(PYTEST_RUN) -m "not slow and not long" --cov-fail-under=$(TEST_COVERAGE_FLOOR))

check: install install-mediapipe
	$(if $(CI),$(MAKE) check-python310)
	$(PYTEST_RUN) -m "not slow" --cov-fail-under=$(COVERAGE_FLOOR)

# The install paths users take besides the default, each running the whole path from a scratch folder
# (tools/smoke.py): Python 3.10 through make install (about 5 minutes; CI runs it), and a non-editable wheel on
# Python 3.11 (about 5 more).
check-installs: check-python310 check-wheel

# What make check leaves out for time (tests marked slow): the TF.js and TFLite exports of the three 640 px FPN SSDs,
# and every template's freeze presets held in a real training step (41 tests, about 20 minutes on 2 cores)
check-templates: install
	$(PY) -m pytest -q -m slow tests/test_templates.py

check-python310:
	$(MAKE) install PYTHON=python3.10 VENV=build/venv-3.10
	build/venv-3.10/bin/python tools/smoke.py

check-wheel:
	WHEEL=1 PYTHON=python3.11 VENV=build/venv-wheel bash tools/install.sh
	build/venv-wheel/bin/python tools/smoke.py

lint: install
	$(VENV)/bin/ruff check tfod_wrap tests tools
	$(VENV)/bin/ruff format --check tfod_wrap tests tools

tfrecords: install
	$(CLI) tfrecords --input $(INPUT) --output $(DATA) --format $(FORMAT) --split $(SPLIT) \
		--shards $(SHARDS) --seed $(SEED) $(if $(IMAGES),--images $(IMAGES)) $(if $(LABEL_MAP),--label-map $(LABEL_MAP))

# FREEZE's default stays out of a TIME= run, which picks its own freezing
TRAIN_FREEZE = $(if $(and $(TIME),$(filter file,$(origin FREEZE))),,$(foreach spec,$(FREEZE),--freeze $(spec)))

train: install
	$(CLI) config $(MODEL) --data $(DATA) --output $(RUN)/pipeline.config --batch-size $(BATCH) --steps $(STEPS) \
		$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))
	$(CLI) train --pipeline $(RUN)/pipeline.config --model-dir $(RUN) $(TRAIN_FREEZE) \
		$(if $(RESUME),--resume) $(if $(ALLOW_RANDOM_FROZEN),--allow-random-frozen) \
		$(if $(TIME),--time-budget $(TIME)) $(if $(TRAIN_SEED),--seed $(TRAIN_SEED))

eval: install
	$(CLI) eval --pipeline $(RUN)/pipeline.config --model-dir $(RUN) $(if $(WATCH),--watch)

export-tfjs: install
	$(CLI) export --pipeline $(RUN)/pipeline.config --model-dir $(RUN) --output $(EXPORT) \
		--formats saved_model,tfjs --quantize $(QUANTIZE) --verify

serve: install
	$(CLI) serve --model $(TFJS) --port $(PORT) --host $(HOST)

site: install
	$(CLI) export --pipeline $(RUN)/pipeline.config --model-dir $(RUN) --output $(EXPORT) --formats saved_model,tfjs \
		$(if $(filter command line,$(origin QUANTIZE)),--quantize $(QUANTIZE)) --verify --site $(SITE)

demo: install
	test -f $(DEMO_DATA)/README.txt || $(CLI) sample --output $(DEMO_DATA) --count $(DEMO_COUNT)
	$(CLI) tfrecords --input $(DEMO_DATA)/annotations --images $(DEMO_DATA)/images --output $(DEMO_DATA)-records \
		--split train=0.8,val=0.2 --seed 0
	test -f $(PRETRAINED)/checkpoint/ckpt-0.index || $(CLI) pretrained import-tflite --output $(PRETRAINED)
	$(CLI) config $(PRETRAINED)/pipeline.config --data $(DEMO_DATA)-records --checkpoint $(PRETRAINED) \
		--batch-size $(DEMO_BATCH) --output $(DEMO)/pipeline.config
	$(CLI) train --pipeline $(DEMO)/pipeline.config --model-dir $(DEMO) $(DEMO_RECIPE)
	$(CLI) eval --pipeline $(DEMO)/pipeline.config --model-dir $(DEMO)
	$(CLI) export --pipeline $(DEMO)/pipeline.config --model-dir $(DEMO) --output $(DEMO)/export --verify
	@echo "the detector on your webcam: make serve TFJS=$(DEMO)/export/tfjs  (then open http://127.0.0.1:$(PORT)/)"

bench: install
	$(PY) tools/bench_tfrecords.py
	$(PY) tools/bench_train.py
	$(PY) tools/bench_export.py
	$(PY) tools/bench_detect.py

# What the pretrained start and freezing buy on the demo: four trainings of 13-16 minutes each, so kept out
# of `make bench`
bench-demo: install
	$(PY) tools/bench_demo.py --every 250

# How step time, memory and conversion time grow with batch, input size and dataset size (about half an hour)
bench-scale: install
	$(PY) tools/bench_scale.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
