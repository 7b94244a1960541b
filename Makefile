# The two entry points of the README. Both install what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: iso test deps unit clean

deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-deps
	./scripts/install-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The whole pipeline as far as it exists: validate the tree and render every spec.
# Container builds, the repository and the ISO come with the next issues.
iso: deps
	$(BIN)/doit validate render
	@echo "make iso: the pipeline currently stops after 'validate' and 'render'" \
	      "(rendered specs in build/specs/); package builds and the ISO are not implemented yet."

# The whole test suite: fast unit tests and the slow integration tests.
test: deps
	$(BIN)/pytest -ra

# Only the fast unit tests.
unit: deps
	$(BIN)/pytest -ra -m "not integration"

clean:
	rm -rf build
