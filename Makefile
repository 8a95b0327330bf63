# nodekeep.backup: set-up, demo and tests. Works from a fresh clone as root with only
# python3, make and git: every target first runs `setup` (quick once done).
#
#   make setup        Debian packages + .venv (scripts/bootstrap.sh core)
#   make setup-all    setup + Molecule/ZFS/... extras (scripts/bootstrap.sh all)
#   make demo         scripts/demo.sh
#   make test         lint, sanity, units, integration, molecule (in this order)
#   make test-matrix  sanity, units and the playbook tests against ansible-core 2.16 to 2.19
#                     (scripts/test-matrix.sh; venvs in .cache/matrix; MATRIX_VERSIONS, MATRIX_STEPS)
#   make lint | sanity | units | integration | molecule | docs | bench | lock | clean
#   make drill-runbooks  the five runbook systems (inventories/animica ... ripple-env), each node with its
#                     whole asset set, through agent.yml, backup.yml x2 and drill.yml against its runbook's
#                     RPO/RTO; prints one table. SIZE=1G (1 GiB SQLite + 1 GiB RocksDB + 1 GiB files),
#                     SYSTEMS="animica guts"; reports kept in .cache/drill-runbooks (make test: 000 + one random)
#   make bench        benchmarks/run.py (SQLite vs runbook 000), files_incremental.py, sqlite_incremental.py (vs restic)
#                     (files asset full/incremental vs tar|zstd|age); BENCH_ARGS, FILES_BENCH_ARGS
#                     and benchmarks/stream_rpo.py (continuous replication vs Litestream); STREAM_BENCH_ARGS
#   make bench-fleet  benchmarks/fleet.py: controller CPU per node of backup.yml on N local hosts
#   make bench-files-scale  benchmarks/files_scale.py: 1,000,000 small files (FILES_SCALE_ARGS)
#                     (default 30); FLEET_ARGS
#   make bench-rss    benchmarks/sqlite_incremental.py --rss-only: peak RSS of SQLite pieces epochs and restores at 2.5 GiB (SQLITE_RSS_ARGS)
#   make stream-kills the replication kill -9 campaign: 100 kills (STREAM_KILLS) under a fast writer
#
# Environment exported to every recipe (and so to scripts/demo.sh, scripts/molecule.sh):
#   PATH                      .venv/bin first (ansible-playbook, molecule, pytest...)
#   ANSIBLE_COLLECTIONS_PATH  build/collections (holds nodekeep.backup as a symlink
#                             to this checkout; put other collections there too)
# pytest runs additionally get PYTHONPATH=build/collections.
# PYTEST_ARGS adds pytest options, e.g. make units PYTEST_ARGS='-k seal -x'.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.NOTPARALLEL:
.DELETE_ON_ERROR:

ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin
PYTHON ?= python3
COLLECTIONS := $(ROOT)/build/collections
SANITY_PYTHON ?= 3.11
PYTEST_ARGS ?=
PYTEST_TIMEOUT ?= 900

export PATH := $(BIN):$(PATH)
export VIRTUAL_ENV := $(VENV)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PYTHON
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export DEBIAN_FRONTEND := noninteractive

PYTEST := PYTHONPATH=$(COLLECTIONS) $(BIN)/pytest -p no:cacheprovider --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS)

# pytest exits 5 when it collects no tests: tolerated (with a notice) so that a
# target still runs before its first test is written.
define run_pytest
	@if [ -d $(1) ]; then \
	  rc=0; $(PYTEST) $(1) || rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "NOTICE: no tests collected in $(1)"; rc=0; fi; \
	  exit $$rc; \
	else echo "NOTICE: $(1) does not exist, nothing to run"; fi
endef

.PHONY: help setup setup-all demo test test-matrix lint sanity units integration molecule bench bench-rss bench-fleet bench-files-scale crash-pieces docs lock clean stream-kills drill-runbooks

help:
	@sed -n 's/^#   make /make /p' $(MAKEFILE_LIST)

setup:
	@bash scripts/bootstrap.sh core

setup-all:
	@bash scripts/bootstrap.sh all

demo: setup
	@test -f scripts/demo.sh || { echo "scripts/demo.sh does not exist yet" >&2; exit 1; }
	bash scripts/demo.sh

test: setup lint sanity units integration molecule
	@echo "make test: all passed"

# ruff (ruff.toml) on the Python code; ansible-lint (.ansible-lint, production profile, with
# yamllint) on the whole tree: roles, playbooks, inventories, molecule, awx/, changelogs, galaxy.yml.
# awx/configure.yml needs awx.awx: scripts/ansible-collections.sh extracts it from the `ansible`
# wheel on PyPI into .cache/collections (once), and `ansible-playbook --syntax-check` checks the
# playbook against it. Everything runs; the target fails if anything found something.
# Many ruff findings fix themselves: .venv/bin/ruff check --fix PATH
RUFF_PATHS = $(wildcard plugins tests benchmarks scripts/*.py)
LINT_COLLECTIONS := $(COLLECTIONS):$(ROOT)/.cache/collections
lint: setup
	@rc=0; \
	if [ -n "$(RUFF_PATHS)" ]; then echo "ruff check $(RUFF_PATHS)"; \
	  $(BIN)/ruff check --quiet --output-format concise $(RUFF_PATHS) || rc=1; fi; \
	bash scripts/ansible-collections.sh awx.awx || rc=1; \
	echo "ansible-lint --profile production ."; \
	ANSIBLE_COLLECTIONS_PATH=$(LINT_COLLECTIONS) $(BIN)/ansible-lint --nocolor --profile production . || rc=1; \
	echo "ansible-playbook --syntax-check awx/configure.yml"; \
	ANSIBLE_COLLECTIONS_PATH=$(LINT_COLLECTIONS) ANSIBLE_LOCALHOST_WARNING=0 \
	  $(BIN)/ansible-playbook -i localhost, --syntax-check awx/configure.yml >/dev/null || rc=1; \
	exit $$rc

# ansible-test runs in a real copy of the working tree (scripts/collection-path.sh
# --sanity) with its own pinned test requirements in venvs it makes (--venv; from
# PyPI on the first run, then cached in ~/.ansible/test/venv). All its sanity tests
# run; none is skipped. pip's progress chatter (first run only) is filtered out.
# SANITY_ARGS adds options, e.g. make sanity SANITY_ARGS='--test pylint'.
SANITY_ARGS ?=
PIP_CHATTER := ^ *(WARNING: Location .* is ignored|Looking in |Collecting |Downloading |Processing |Installing collected|Successfully installed|Using cached pip| +━)
sanity: setup
	@exec 8>.cache/sanity.lock; flock 8; \
	  dir=$$(bash scripts/collection-path.sh --sanity); cd "$$dir" && \
	  $(BIN)/ansible-test sanity --venv --python $(SANITY_PYTHON) --color no $(SANITY_ARGS) 2>&1 \
	  | sed -u -E '/$(PIP_CHATTER)/d'

# Not part of `make test` (four ansible-core versions, several minutes each).
test-matrix: setup
	bash scripts/test-matrix.sh

units: setup
	$(call run_pytest,tests/unit)

integration: setup
	$(call run_pytest,tests/integration)

# Molecule needs the extras of profile "all" (scripts/molecule.sh sets up podman itself).
molecule: setup
	@if [ -f scripts/molecule.sh ]; then \
	  bash scripts/bootstrap.sh all && bash scripts/molecule.sh; \
	else echo "NOTICE: scripts/molecule.sh does not exist yet, molecule skipped"; fi

bench: setup-all
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS) --files-args "$(FILES_BENCH_ARGS)"
	$(BIN)/python benchmarks/sqlite_incremental.py $(SQLITE_BENCH_ARGS)
	PYTHONPATH=$(COLLECTIONS) $(BIN)/python benchmarks/stream_rpo.py $(STREAM_BENCH_ARGS)

# peak RSS of a full and an incremental SQLite epoch and of their restores on a 2.5 GiB DB (issue 14's memory target)
bench-rss: setup-all
	$(BIN)/python benchmarks/sqlite_incremental.py --rss-only $(SQLITE_RSS_ARGS)

# kill -9 at every step of an incremental backup, a repack and a GC (make test runs a random sample).
crash-pieces: setup
	NODEKEEP_CRASH_POINTS=all PYTHONPATH=$(COLLECTIONS) $(BIN)/pytest -p no:cacheprovider -q -s tests/integration/test_crash_pieces.py

FLEET_ARGS ?=
# The files asset at scale (1,000,000 small files: full, incremental, restore; time and memory per file).
# Long (tens of minutes on 2 cores): its own target, never part of make test or make bench.
FILES_SCALE_ARGS ?=
bench-files-scale: setup
	PYTHONPATH=$(COLLECTIONS) $(BIN)/python benchmarks/files_scale.py $(FILES_SCALE_ARGS)

bench-fleet: setup
	$(BIN)/python benchmarks/fleet.py $(FLEET_ARGS)

# The long kill -9 campaign of the replication service (make test runs a small random sample of it).
STREAM_KILLS ?= 100
stream-kills: setup
	NODEKEEP_STREAM_KILLS=$(STREAM_KILLS) $(PYTEST) -s tests/integration/streams/test_stream_faults.py \
	  -k "kill_9 or killed_together"

# tests/integration/runbooks/test_runbook_drills.py at size (make test runs it at the small size).
SIZE ?=
SYSTEMS ?=
drill-runbooks: setup
	@bash scripts/collection-path.sh
	NODEKEEP_DRILL_SIZE='$(SIZE)' NODEKEEP_DRILL_SYSTEMS='$(SYSTEMS)' NODEKEEP_DRILL_DIR=$(ROOT)/.cache/drill-runbooks \
	  PYTHONPATH=$(COLLECTIONS) $(BIN)/pytest -p no:cacheprovider --timeout=3600 -q $(PYTEST_ARGS) \
	  tests/integration/runbooks/test_runbook_drills.py

# Render the documentation of every module (and every role with an argument spec).
docs: setup
	@bash scripts/collection-path.sh
	@set -e; n=0; \
	for f in $(wildcard plugins/modules/*.py); do \
	  m=$$(basename "$$f" .py); case $$m in _*) continue;; esac; \
	  out=$$($(BIN)/ansible-doc -t module "nodekeep.backup.$$m" 2>&1) || { echo "$$out"; exit 1; }; \
	  if grep -q -e '\[WARNING\]' -e '\[ERROR\]' <<<"$$out"; then echo "$$out"; exit 1; fi; \
	  echo "ansible-doc: module nodekeep.backup.$$m ok"; n=$$((n+1)); \
	done; \
	for d in $(wildcard roles/*/meta/argument_specs.yml); do \
	  r=$$(basename "$$(dirname "$$(dirname "$$d")")"); \
	  out=$$($(BIN)/ansible-doc -t role "nodekeep.backup.$$r" 2>&1) || { echo "$$out"; exit 1; }; \
	  if grep -q -e '\[WARNING\]' -e '\[ERROR\]' <<<"$$out"; then echo "$$out"; exit 1; fi; \
	  echo "ansible-doc: role nodekeep.backup.$$r ok"; n=$$((n+1)); \
	done; \
	echo "docs: $$n rendered"

# Regenerate requirements/constraints.txt (the full lock) from test.txt + node.txt.
lock:
	rm -rf .cache/lock-venv && mkdir -p .cache
	$(PYTHON) -m venv .cache/lock-venv
	sed -e '/^-c /d' -e 's|^-r node.txt|-r ../requirements/node.txt|' requirements/test.txt > .cache/lock-in.txt
	.cache/lock-venv/bin/pip install --quiet -r .cache/lock-in.txt
	{ echo "# Lock of every package in the controller/test venv (generated by \`make lock\`"; \
	  echo "# from test.txt + node.txt; do not edit by hand). Used as a pip constraints file."; \
	  .cache/lock-venv/bin/pip freeze | sort -f; } > requirements/constraints.txt
	rm -rf .cache/lock-venv .cache/lock-in.txt
	@echo "requirements/constraints.txt updated"

clean:
	rm -rf .venv .cache build tests/output .pytest_cache .ruff_cache .ansible
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
