# The two commands of the README. Both create .venv on first use and install the project
# with the tested pins (constraints.txt); the stamp file makes a second run skip set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup train test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $(STAMP)

train: $(STAMP)
	$(PY) scripts/train.py env=reacher $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(ARGS)

bench: $(STAMP)
	$(PY) bench/spatial_softmax.py
	$(PY) bench/render.py
	$(PY) bench/train_throughput.py
	$(PY) bench/collect_scaling.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
