# The two commands of the README: `make run` and `make test`. `make setup` builds .venv/ once;
# `make containers` builds the serving and training images with Podman (installing it if needed).
VENV := .venv
CHECKOV := .venv-checkov/bin/checkov
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check -q
CHROMIUM := /usr/bin/chromium
AXE := tests/web/node_modules/axe-core/axe.min.js

.PHONY: setup run test containers train clean

setup: $(VENV)/.installed

# Rebuilt only when the dependency list changes. torch comes first, pinned, so that pip takes the local
# CPU build instead of resolving a multi-gigabyte CUDA one.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[cloud,train,dev]'
	touch $@

# Browser tests use Debian's Chromium (Playwright never downloads one) and axe-core from npm.
$(CHROMIUM):
	apt-get update -qq && apt-get install -y -qq chromium

$(AXE): tests/web/package-lock.json
	cd tests/web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: setup
	$(PY) -m local.stack

# checkov (tests/test_scanners.py) gets a virtual environment of its own: its pins clash with the dev tools'.
$(CHECKOV): infra/policies/requirements.txt
	test -x .venv-checkov/bin/python || python3 -m venv .venv-checkov
	.venv-checkov/bin/pip --disable-pip-version-check -q install -r infra/policies/requirements.txt
	touch $@

test: setup $(CHROMIUM) $(AXE) $(CHECKOV)
	$(PY) -m pytest

# Podman, runc and mmdebstrap (apt, as root) when missing, a Debian base image once, then both images from
# docker/*.Dockerfile; layers are cached, so a rebuild with nothing changed takes seconds. tests/containers/
# (part of `make test`) rebuilds and runs them.
containers: setup
	$(PY) -m local.containers

train: setup
	$(PY) -m training.train --config training/configs/cpu.json

clean:
	rm -rf $(VENV) .venv-checkov .stack build tests/web/node_modules
