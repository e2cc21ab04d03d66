# PYTHON: the interpreter for `make run`/`demo`/`bench`, and the one .venv is built from.
PYTHON ?= python3
VENV ?= .venv
SIGNATURE_VERSION ?= v1
APP_PORT ?= 8080
OSS_PORT ?= 9000
# TESTS: dotted test names for a partial run (make test TESTS=tests.test_demo); empty: all.
TESTS ?=

VENV_PYTHON = $(VENV)/bin/python
# The test tools (pyproject's `test` extra) live in $(VENV). Its stamp names PYTHON's version,
# so the venv is refreshed when pyproject.toml changes or PYTHON is another interpreter, and
# left alone otherwise: re-runs of `make test` install nothing.
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)
VENV_STAMP = $(VENV)/.installed-$(PYTHON_VERSION)

.PHONY: run demo test lint bench venv install-check fresh-clone clean screenshot

run:
	$(PYTHON) appserver.py 127.0.0.1 $(APP_PORT)

demo:
	$(PYTHON) -m tests.demo --signature-version $(SIGNATURE_VERSION) --port $(APP_PORT) --emulator-port $(OSS_PORT)

test: lint
	$(VENV_PYTHON) -m tests.run $(TESTS)

lint: venv
	$(VENV)/bin/vermin --no-tips --violations --target=3.10- appserver.py tests
	! grep -nE '^\s*(import cgi|from cgi )|utcfromtimestamp|utcnow\(' appserver.py tests/*.py

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@rm -f $(VENV)/.installed-*
	@if [ "$$($(VENV_PYTHON) -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)" \
	      != "$(PYTHON_VERSION)" ]; then \
	    echo "$(PYTHON) -m venv --clear $(VENV)"; $(PYTHON) -m venv --clear $(VENV); fi
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check \
	    $$($(PYTHON) -m tests.run --requirements test)
	@touch $@

bench:
	$(PYTHON) tests/bench.py

# The README's picture: the browser test that writes tests/artifacts/screenshot.png, then a copy
# into static/.readme/, a dot-folder that the app server never serves.
screenshot: venv
	$(VENV_PYTHON) -m unittest tests.test_browser.BrowserUploadTest.test_two_files_through_the_input_show_callback_json
	cp tests/artifacts/screenshot.png static/.readme/screenshot.png

# `pip install .` of this tree into a new venv serves /index.html and /upload.js.
install-check:
	PYTHON=$(PYTHON) bash tests/fresh_clone.sh --install-only

# A clone of HEAD in a temporary folder: CI=true make test there, then its install check.
fresh-clone:
	PYTHON=$(PYTHON) bash tests/fresh_clone.sh

clean:
	rm -rf $(VENV) build dist *.egg-info
