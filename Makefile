# ClientInsight: the two commands are `make up` and `make test`.
SHELL := /bin/bash
# A pipeline fails when any part of it fails (the install step filters pip's output).
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000

# Local settings (copy .env.example to .env); the code itself never reads files for settings.
-include .env
export
# Small machines: one OpenMP thread per worker; no telemetry calls from MLflow or BentoML.
export OMP_NUM_THREADS ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export BENTOML_DO_NOT_TRACK ?= True

.PHONY: help install up serve train migrate test lint unit integration bench bench-compare bench-protocols bench-graphql bento clean

help:
	@echo "make up        install, train+register the demo models if no champion exists, serve on :$(PORT)"
	@echo "make test      install and run the whole suite (lint, types, unit, integration, PostgreSQL)"
	@echo "make train     retrain and register a new version of every family (first ones become @champion)"
	@echo "make serve     serve what the registry's @champion aliases point to, without training"
	@echo "make migrate   apply database migrations to DATABASE_URL (default: SQLite under .data/)"
	@echo "make bench     ClientInsight vs naive FastAPI vs stock BentoML, side by side (wrk, PostgreSQL)"
	@echo "make bench-compare AGAINST=REF   this checkout vs an earlier commit, alternating rounds"
	@echo "make bench-protocols   JSON API vs Open Inference Protocol REST and gRPC, side by side"
	@echo "make bench-graphql     GraphQL history pages and aggregates at 1M and 10M rows (PostgreSQL)"
	@echo "make bento     build a Bento (bentofile.yaml); containerizing needs a Docker engine"
	@echo "make clean     remove the local MLflow store, predictions database and venv"

$(BIN)/python:
	@echo "==> creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes. pip's own lines are the progress (one per
# package collected, then the install); the already-satisfied ones, and the warnings about
# package indexes this machine's pip configuration names but does not have, are left out.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "==> installing ClientInsight and its dependencies into $(VENV) (the first time takes minutes)"
	$(BIN)/pip install --progress-bar off -e ".[demo,dev]" \
		| { grep --line-buffered -Ev '^(Requirement already satisfied|  |WARNING: Location .* is ignored)' || true; }
	@touch $@

install: $(VENV)/.installed

up: install
	$(BIN)/python -m training ensure
	$(MAKE) --no-print-directory serve

# BENTOML_HOME holds the Prometheus multiprocess files, which `bentoml serve` wipes at start:
# a home of its own per server, so a second server on this machine cannot zero this one's
# /metrics. Listens on 127.0.0.1 unless CLIENTINSIGHT_HOST says otherwise.
serve: install migrate
	@home=$$(mktemp -d "$${TMPDIR:-/tmp}/clientinsight-bentoml.XXXXXX"); \
	trap 'rm -rf "$$home"' EXIT INT TERM; \
	BENTOML_HOME="$$home" $(BIN)/bentoml serve service:ClientInsight --port $(PORT)

train: install
	$(BIN)/python -m training all

migrate: install
	$(BIN)/python -m persistence upgrade

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

test: install lint
	$(BIN)/pytest

# BENCH_ARGS="--seconds 10 --soak-seconds 300" (the defaults) bounds every scenario in time.
bench: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "make bench needs wrk (Debian package 'wrk')"; exit 1; }
	$(BIN)/python -m training ensure
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# This checkout against an earlier commit, alternating rounds: `make bench-compare AGAINST=HEAD~3`.
bench-compare: install
	@[ -n "$(AGAINST)" ] || { echo "make bench-compare needs AGAINST=<git ref>"; exit 1; }
	@command -v wrk >/dev/null || { echo "make bench-compare needs wrk (Debian package 'wrk')"; exit 1; }
	$(BIN)/python -m training ensure
	$(BIN)/python -m bench.compare --against "$(AGAINST)" $(BENCH_ARGS)

# Single-record churn over the JSON API, OIP REST (binary) and OIP gRPC, side by side.
bench-protocols: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "make bench-protocols needs wrk (Debian package 'wrk')"; exit 1; }
	$(BIN)/python -m training ensure
	$(BIN)/python -m bench.protocols $(BENCH_ARGS)

bench-graphql: install
	$(BIN)/python -m bench.graphql $(BENCH_ARGS)

bento: install
	$(BIN)/bentoml build --version "$$(git rev-parse --short HEAD)"

clean:
	rm -rf .mlflow .data $(VENV) *.egg-info
