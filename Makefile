# The two commands of the README. Both create .venv on first use and install the project
# with the tested pins (constraints.txt): `make train` what training needs, `make test` the
# test extras too. A stamp file per install makes a second run skip set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The suite runs on every core (pytest-xdist); tests/conftest.py splits torch's threads among them.
PYTEST := $(PY) -m pytest -n auto --dist worksteal

.PHONY: setup train test test-fast bench clean

setup: $(TEST_STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) -e '.[test]'
	@touch $(TEST_STAMP)

train: $(STAMP)
	$(PY) scripts/train.py env=reacher $(ARGS)

test: $(TEST_STAMP)
	$(PYTEST) $(ARGS)

test-fast: $(TEST_STAMP)
	$(PYTEST) -m "not slow" $(ARGS)

bench: $(TEST_STAMP)
	$(PY) bench/spatial_softmax.py
	$(PY) bench/render.py
	$(PY) bench/train_throughput.py
	$(PY) bench/collect_scaling.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
