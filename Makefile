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

# Two test processes, each taking whole files (a file's fixtures are built once); one torch
# thread each, so the two do not contend for the cores. Add PYTEST_ARGS="-n 0" for one.
test: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS) tests

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
