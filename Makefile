# qdash: `make demo` runs it, `make test` checks everything CI checks. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
APT_PKGS := libvirt-dev pkg-config libvirt-clients influxdb chromium prometheus-alertmanager
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.qdash-setup
FLAGS := slow influx libvirt alertmanager
# pip warns once per package about this machine's empty local index directories: noise, not news
PIPQUIET := { grep -v "is ignored: it is neither a file nor a directory" || true; }
# a fingerprint of a set of files: compared before and after a step that must change nothing
FPRINT = find $(1) -type f \( -name '*.ipynb' -o -name '*.py' -o -name '*.md' \) -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 md5sum

.PHONY: setup apt demo test docs lab clean
.DEFAULT_GOAL := demo

apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi

# PyTorch's CPU build goes in first (a local file), so nothing below can pull a CUDA build.
$(STAMP): pyproject.toml
	[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | $(PIPQUIET)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,ml,dash,api,jobs,libvirt]" 2>&1 | $(PIPQUIET)
	touch $(STAMP)

setup: apt $(STAMP)

# the demo is `qdash up`: the hub on the embedded defaults (simulated fleet + this host) and the live dashboard
demo: setup
	$(BIN)/qdash up

test: setup
	@echo "== notebooks clean (nbdev-clean changes nothing)"
	@before=$$($(call FPRINT,nbs)); $(BIN)/nbdev-clean; after=$$($(call FPRINT,nbs)); \
	  [ "$$before" = "$$after" ] || { echo "nbdev-clean changed notebooks: run it and commit"; exit 1; }
	@echo "== library in sync (nbdev-export and the README change nothing)"
	@before=$$($(call FPRINT,qdash)); $(BIN)/nbdev-export; after=$$($(call FPRINT,qdash)); \
	  [ "$$before" = "$$after" ] || { echo "nbdev-export changed qdash/: export and commit"; exit 1; }
	$(PY) tools/readme.py --check
	@$(BIN)/qdash config --template | diff -u settings.ini - || { echo "settings.ini is stale: qdash config --template > settings.ini"; exit 1; }
	$(PY) tools/openapi.py --check
	$(PY) tools/check_imports.py
	@echo "== ruff"
	$(BIN)/ruff check qdash tests api tools
	@echo "== notebook tests (flags: $(FLAGS))"
	$(BIN)/nbdev-test --flags "$(FLAGS)"
	@echo "== docs"
	$(PY) tools/docs.py
	@echo "== pytest"
	$(BIN)/pytest tests

docs: setup
	$(PY) tools/docs.py

lab: setup
	$(BIN)/jupyter lab nbs

clean:
	rm -rf _proc docs/*.html .pytest_cache .ruff_cache
