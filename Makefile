# fastrpc developer commands. `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3

.PHONY: deps test demo bench bench-quick

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
