# fastrpc developer commands. `make test` and `make demo` work on a fresh
# clone; Python packages go into the active virtual environment.
PYTHON ?= python3

.PHONY: deps test demo bench bench-quick docs wheels test-wheels sdist-test

deps:
	./scripts/install-deps

# Tests run from tests/ so they import the installed package, not the source tree.
test: deps
	cd tests && $(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo:
	./scripts/demo

bench: deps
	cd benchmarks && $(PYTHON) -m pytest -q -p no:cacheprovider .

# Every benchmark once, untimed, so none of them rots (the soak run too, short).
bench-quick:
	cd benchmarks && $(PYTHON) -m pytest -q -p no:cacheprovider --benchmark-disable .
	$(PYTHON) benchmarks/soak.py --calls 30000 --restart-every 0.3

# The API reference and tutorial (docs/_build/html), warnings as errors,
# against the installed package.
docs:
	$(PYTHON) -m pip install -q ".[docs]"
	cd docs && $(PYTHON) -m sphinx -E -W --keep-going -n -q -b html . _build/html
	@echo "docs/_build/html/index.html"

# manylinux wheels for Python 3.9 to 3.13, and the sdist, in dist/.
wheels:
	PYTHON=$(PYTHON) ./scripts/build-wheels

# Each wheel in a fresh venv of its Python, binaries only; the fast tests
# on each, the whole suite on FULL_ON (e.g. make test-wheels FULL_ON=3.12).
test-wheels:
	FASTRPC_FULL_ON=$(FULL_ON) ./scripts/test-wheels

# The tests run from the unpacked sdist, against the package built from it.
sdist-test:
	./scripts/test-sdist
