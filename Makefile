# Tally's tasks. The first two are the README's two commands: each sets itself up on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed-stamp
# `sam build` needs the Lambda runtime's Python (3.13) on PATH; pyenv machines provide it so.
SAM_PYENV_VERSION ?= 3.11.7:3.12.1:3.13.0
export SAM_CLI_TELEMETRY := 0

.PHONY: dev test install lint format typecheck sam-validate sam-build bench clean

dev: $(STAMP) ## Run Tally locally: API + schedules on an embedded PostgreSQL
	$(BIN)/tally dev

test: $(STAMP) ## Run the whole test suite against a real PostgreSQL
	$(BIN)/pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(TOOLS_STAMP):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --upgrade pip
	$(TOOLS)/bin/python -m pip install -q aws-sam-cli
	touch $(TOOLS_STAMP)

sam-validate: $(TOOLS_STAMP)
	$(TOOLS)/bin/sam validate --lint

sam-build: $(TOOLS_STAMP)
	PYENV_VERSION=$(SAM_PYENV_VERSION) $(TOOLS)/bin/sam build

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(TOOLS) .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis
