VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install test lint demo try clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip

# Re-install only when the package metadata or the list of packages changes (an editable
# install maps each package folder it found when installed).
$(STAMP): setup.cfg pyproject.toml $(wildcard projects/tempme*/__init__.py) | $(PY)
	$(PIP) install -e ".[tests,deploy]"
	touch $(STAMP)

install: $(STAMP)

test: lint
	$(PY) -m pytest -q tests

lint: install
	$(PY) -m flake8 projects tools tests configs
	$(PY) -m isort --check-only --diff projects tools tests

# Train and evaluate TempMe and the order-blind baseline on the synthetic benchmark.
demo: install
	$(PY) tools/demo.py

# Every tool once (test, visualise, index, query, export, serve) on a quickly trained demo
# model: no MSR-VTT, no CLIP weights (README "Try every tool").
try: install
	PYTHON=$(abspath $(PY)) tools/try_everything.sh

clean:
	rm -rf work_dirs .pytest_cache
