# proxyprint: `make demo` runs the whole pipeline; `make test` runs the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DEB_PACKAGES := cups-daemon cups-client cups-ipp-utils cups-filters libcups2-dev qpdf ghostscript avahi-daemon dbus openssl chromium chromium-driver libpam0g libpam-modules passwd
# One worker per core; each has its own private cupsd, PostgreSQL database and spool.
PYTEST_ARGS ?= -n auto

.PHONY: install deb venv test lint bench demo run clean

install: deb $(VENV)/.installed

# Debian packages CUPS needs; only installs what is missing (idempotent).
deb:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check cups_backend proxy billing migrations tests benchmarks
	$(VENV)/bin/mypy

bench: install
	$(PY) -m benchmarks

demo: install
	$(VENV)/bin/proxyprint demo

run: install
	$(VENV)/bin/proxyprint serve

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
