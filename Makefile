# Two commands on a fresh machine:  make demo  (the whole pipeline)  and  make test  (every test).
# Both create .venv if it is missing and install gptkit into it. A torch already in .venv is
# kept (CI installs the CPU wheel first); otherwise pip takes the usual torch from PyPI.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gptkit-installed

.PHONY: install demo test test-quiet trained-tiny-model test-suite test-notebooks test-slow lint format notebooks sync-notebooks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(PY) scripts/demo.py

# The memory-peak test runs in a pytest process of its own (tests/test_memory.py says why); the
# tiny trained model that the real-weights notebook run loads is built beside it, on the other core.
# Then the notebooks run one after another (05 reads what 04 wrote), offline and then on those
# weights, beside the two pytest workers of the suite: most tests wait on a child process (a CLI
# run, torchrun), so the three together keep both cores busy. One thread per process: two of two
# threads on two cores measured 13% slower. -O prints each part's output when it ends.
test: install
	$(PY) -m ruff check .
	@$(MAKE) --no-print-directory -j2 -O test-quiet trained-tiny-model
	@$(MAKE) --no-print-directory -j2 -O test-suite test-notebooks

test-quiet: install
	$(PY) -m pytest -m quiet_process tests

trained-tiny-model: install
	OMP_NUM_THREADS=1 $(PY) scripts/build_trained_tiny_gpt2.py

test-suite: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist worksteal -m "not quiet_process and not slow and not real_weights" tests

# nbval collects notebooks/ recursively: the lessons, then the solutions in notebooks/solutions/.
# What the notebooks write (prepared bins, runs, the stand-in) goes to a temporary folder, not the checkout.
test-notebooks: install
	out=$$(mktemp -d) && export GPTKIT_NOTEBOOK_OUT=$$out OMP_NUM_THREADS=1 GPTKIT_SMOKE=1 && \
		$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks; s=$$?; rm -rf "$$out"; exit $$s
	OMP_NUM_THREADS=1 $(PY) -m pytest -m real_weights tests/test_hub.py

# The longer twins of tests make test keeps: minutes of a core that make test's two cores do not
# have to spare.
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
	$(VENV)/bin/jupytext --sync notebooks/*.py notebooks/solutions/*.py

clean:
	rm -rf out-* .pytest_cache
