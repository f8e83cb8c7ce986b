# Two entry points: `make demo` and `make test`. Both set up .venv from requirements*.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast clean

$(STAMP): requirements.txt requirements-dev.txt requirements-onnx.txt requirements-vdl.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# two pytest workers (pytest-xdist): the suite is mostly single-threaded subprocess runs; loadgroup keeps
# the tests of one expensive module fixture (the TIPC chain) on one worker, so it is built once
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

# everything but the end-to-end command-line and TIPC tests (tests/e2e)
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup tests --ignore=tests/e2e

demo: $(STAMP)
	bash tools/demo.sh

clean:
	rm -rf $(VENV) data/demo output
