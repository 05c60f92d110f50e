# Two commands on a fresh machine:  make demo  (the whole pipeline)  and  make test  (every test).
# Both create .venv if it is missing and install gptkit into it. A torch already in .venv is
# kept (CI installs the CPU wheel first); otherwise pip takes the usual torch from PyPI.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gptkit-installed

.PHONY: install demo test test-slow lint format notebooks sync-notebooks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(PY) scripts/demo.py

# Two pytest workers: most tests wait on a child process (a CLI run, torchrun, a kernel), so two
# keep both cores busy; one thread each (and in their children), as two processes of two threads
# on two cores measured 13% slower. The notebooks run one after another: 05 reads what 04 wrote,
# and on two workers 06 alone takes as long as the other seven.
test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -m quiet_process tests
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist worksteal -m "not quiet_process and not slow" tests
	GPTKIT_SMOKE=1 $(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

test-slow: install
	$(PY) -m pytest -m slow tests

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check gptkit scripts benchmarks tests data

format: install
	$(PY) -m ruff format gptkit scripts benchmarks tests data

notebooks: install
	$(VENV)/bin/jupyter lab notebooks/

sync-notebooks: install
	$(VENV)/bin/jupytext --sync notebooks/*.py

clean:
	rm -rf out-* .pytest_cache
