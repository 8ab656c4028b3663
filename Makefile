# CAP Verifier API backup, restore and DR drill automation.
#   make drill   run the main job end to end on the local sandbox
#   make test    lint, syntax-check and run every test
# Both install what they need into .venv first.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.requirements.sha256
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Keep pip quiet about local mirrors and never ask questions.
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Two workers (the CI machine has 2 cores); a test file stays on one worker so its
# module fixtures (a sandbox backup, a seeded instance) are made once.
PYTEST_ARGS ?= -n 2 --dist loadfile
KEEP ?= 0

.PHONY: help setup lint syntax pytest test bench drill sandbox-up sandbox-down clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## Create .venv from requirements.txt (quick when nothing changed)
	@want=$$(sha256sum requirements.txt | cut -d' ' -f1); \
	if [ -x $(BIN)/python ] && [ "$$(cat $(STAMP) 2>/dev/null)" = "$$want" ]; then \
	  echo "setup: .venv is up to date"; \
	else \
	  echo "setup: installing requirements.txt into $(VENV)"; \
	  [ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install -q --upgrade pip; \
	  $(BIN)/python -m pip install -q -r requirements.txt; \
	  echo "$$want" > $(STAMP); \
	fi

lint: setup ## ansible-lint, production profile
	$(BIN)/ansible-lint --profile production

syntax: setup ## ansible-playbook --syntax-check on every playbook
	@shopt -s nullglob; for pb in playbooks/*.yml; do \
	  $(BIN)/ansible-playbook --syntax-check -i inventories/sandbox "$$pb" >/dev/null || { echo "syntax: $$pb failed"; exit 1; }; \
	  echo "syntax: $$pb ok"; \
	done

pytest: setup ## Run the pytest suite (unit, module, integration, molecule)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: setup lint syntax pytest ## Everything CI runs

bench: setup ## Benchmarks; results go to bench/README.md
	$(BIN)/python bench/run.py --write-readme

drill: setup ## Sandbox up, seed, back up to S3, DR drill, report, sandbox down (KEEP=1 keeps it)
	$(BIN)/python -m sandbox drill --keep=$(KEEP)

sandbox-up: setup ## Start OpenBao, SeaweedFS and a seeded CAP instance under .sandbox/
	$(BIN)/python -m sandbox up

sandbox-down: setup ## Stop every sandbox process started by sandbox-up
	$(BIN)/python -m sandbox down

clean: ## Remove build and test leftovers (not .venv)
	rm -rf .pytest_cache reports bench/.data
