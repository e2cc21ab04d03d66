PYTHON ?= python3
SIGNATURE_VERSION ?= v1

.PHONY: run demo test lint bench

run:
	$(PYTHON) appserver.py 127.0.0.1 8080

demo:
	$(PYTHON) -m tests.demo --signature-version $(SIGNATURE_VERSION)

test:
	$(PYTHON) -m unittest discover -s tests -t .

lint:
	vermin --no-tips --violations --target=3.10- appserver.py tests
	! grep -nE '^\s*(import cgi|from cgi )|utcfromtimestamp|utcnow\(' appserver.py tests/*.py

bench:
	$(PYTHON) tests/bench.py
